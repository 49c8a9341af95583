"""Small file-system helpers that every shell uses: atomic replace, directory fsync, data-dir lock.

Owns: the crash-safe way to replace a whole file (`atomic_write`), making a directory entry
durable (`fsync_dir`), and the exclusive lock that keeps two processes -- or two opens in one
process -- from using the same data directory at once (`DataDirLock`).

Must never: decide anything about the files' contents, retry a failed fsync as if nothing
happened (an fsync error is returned to the caller; the page cache may have dropped the data),
or delete the lock file (a process that has the old file open would then lock a different
inode than a newcomer, and both would believe they own the directory).

Invariants: after `atomic_write` returns, a crash leaves either the old or the new contents at
`path`, never a mix and never a missing file; while a `DataDirLock` is held, no other
`DataDirLock` on the same directory can be acquired, in this process or any other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from types import TracebackType

from durakv.engine.errors import DataDirError, DataDirLockedError

LOCK_FILE_NAME = "LOCK"
_PID_TEXT_LEN_MAX = 32  # bytes read back from a lock file when naming its holder


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the directory entries of `path` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    # os.write may write less than asked (signals, some file systems); loop until done.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace the file at `path` with `data` so that a crash leaves the old or the new file.

    Temp file in the same directory (rename is only atomic within one file system), write,
    fsync the file, rename over `path`, fsync the directory so the rename itself survives a
    power loss. `mode` defaults to owner-only because these files can hold cluster secrets.
    Raises OSError (ENOSPC, EIO, ...) and leaves `path` untouched when any step before the
    rename fails.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    # O_EXCL with a random suffix: two writers never share a temp file, and a stale temp
    # file from an earlier crash is never appended to.
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    fsync_dir(directory)


def _read_holder_pid(lock_path: str) -> int | None:
    """The pid a lock holder wrote into the lock file, or None when unreadable or garbled."""
    try:
        with open(lock_path, "rb") as f:
            text = f.read(_PID_TEXT_LEN_MAX)
    except OSError:
        return None
    text = text.strip()
    if not text.isdigit():
        return None
    return int(text) or None


class DataDirLock:
    """An exclusive, non-blocking `flock` on `<directory>/LOCK`, held until `release()`.

    flock (not fcntl/POSIX record locks) is used on purpose: a flock belongs to the open file
    description, so a second open of the same directory *in the same process* is refused too,
    and closing an unrelated descriptor of the file does not drop the lock. The holder's pid
    is written into the file only to name it in the error another opener gets; the lock, not
    the pid, is the truth (a stale pid after a crash is harmless: the kernel dropped the lock).

    The descriptor is close-on-exec. After fork() the child shares the lock with the parent
    (same open file description); the directory stays locked until both have released it.
    """

    _fd: int | None = None  # set once the lock is held

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_FILE_NAME)
        try:
            # No O_TRUNC: truncating before holding the lock would erase the holder's pid.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DataDirError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(f"cannot lock {self.path}: {exc.strerror}") from exc
            pid = _read_holder_pid(self.path)
            holder = f" (held by pid {pid})" if pid is not None else ""
            err = DataDirLockedError(f"data directory {self.directory} is in use{holder}")
            err.path = self.directory  # type: ignore[attr-defined]
            err.pid = pid  # type: ignore[attr-defined]
            raise err from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            # The pid is only a courtesy for error messages; the lock is what matters.
            pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The LOCK file stays: see the module docstring."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A lock dropped without release() must not outlive its object (and leak the fd).
        with contextlib.suppress(Exception):
            self.release()

    def __repr__(self) -> str:
        return f"DataDirLock({self.directory!r}, held={self.held})"
