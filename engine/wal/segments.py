"""WAL segment files on disk: creating them durably, listing them, fsyncing their directory.

Helpers of the WAL shell (log.py), each one file-system step of FORMAT.md's writing
rules: a segment is created with O_EXCL, its header written and the file and directory
fsynced before any record goes in (`create_segment`); a directory entry lasts only once
its parent is fsynced (`make_directory`, `fsync_directory`); a file ending in `.wal`
whose name is not a segment name is refused (`list_segments`).

Must never: decide what bytes mean (codec.py does), hold state, or take the log's lock;
the callers decide when each step happens.
"""

from __future__ import annotations

import os

from durakv.engine.errors import DataDirError
from durakv.engine.files import fsync_dir as fsync_directory
from durakv.engine.wal import codec

__all__ = ["create_segment", "fsync_directory", "list_segments", "make_directory", "pwrite_all"]


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):  # a short write (e.g. at RLIMIT_FSIZE) is followed by the real error
        written = os.pwrite(fd, view[done:], offset + done)
        assert written > 0
        done += written


def create_segment(directory: str, start_lsn: int) -> int:
    """Create a segment with its header, durable (file and directory fsynced); returns its fd."""
    path = os.path.join(directory, codec.segment_file_name(start_lsn))
    try:
        os.unlink(path)  # left by an earlier attempt that failed part-way: never held records
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        pwrite_all(fd, codec.encode_segment_header(start_lsn), 0)
        os.fsync(fd)  # fsync, not fdatasync: the new file's size and inode must be durable too
        fsync_directory(directory)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    return fd


def list_segments(directory: str) -> list[int]:
    starts = []
    for name in os.listdir(directory):
        start = codec.parse_segment_file_name(name)
        if start is not None:
            starts.append(start)
        elif name.endswith(".wal"):
            raise DataDirError(f"unexpected file {name!r} in WAL directory {directory}")
    return sorted(starts)


def make_directory(directory: str) -> None:
    """Create `directory` and any missing parents, fsyncing each parent so the entry lasts."""
    missing = []
    path = directory
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise DataDirError(f"WAL directory {path} exists and is not a directory") from None
        fsync_directory(os.path.dirname(path))
