"""engine.files: atomic replace, directory fsync, and the data-directory lock (in-process and cross-process)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from durakv.engine import files
from durakv.engine.errors import DataDirError, DataDirLockedError
from durakv.engine.files import DataDirLock, atomic_write, fsync_dir

# A second process that takes the lock, says so, and holds it until its stdin closes.
_HOLDER = textwrap.dedent(
    """
    import sys
    from durakv.engine.files import DataDirLock
    lock = DataDirLock(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
    lock.release()
    """
)

# A second process that tries to take the lock and reports what happened.
_PROBE = textwrap.dedent(
    """
    import sys
    from durakv.engine.errors import DataDirLockedError
    from durakv.engine.files import DataDirLock
    try:
        DataDirLock(sys.argv[1]).release()
    except DataDirLockedError as err:
        print("locked", err.pid, flush=True)
    else:
        print("acquired", flush=True)
    """
)


def _run_probe(directory: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, directory], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.split()


def test_atomic_write_new_file_has_contents_and_owner_only_mode(tmp_path):
    target = tmp_path / "config.json"
    atomic_write(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_write_existing_file_is_replaced_and_no_temp_left(tmp_path):
    target = tmp_path / "config.json"
    target.write_bytes(b"old contents, longer than the new ones")
    atomic_write(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_atomic_write_large_data_is_written_whole(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)
    atomic_write(tmp_path / "big", data)
    assert (tmp_path / "big").read_bytes() == data


def test_atomic_write_fsync_failure_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_bytes(b"old")

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_atomic_write_missing_directory_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "f", b"x")


def test_fsync_dir_existing_directory_succeeds_and_missing_raises(tmp_path):
    fsync_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


def test_datadirlock_second_open_in_process_raises_with_directory_and_pid(tmp_path):
    with DataDirLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(DataDirLockedError) as info:
            DataDirLock(tmp_path)
        assert isinstance(info.value, DataDirError)
        assert info.value.path == str(tmp_path)
        assert info.value.pid == os.getpid()
    assert not lock.held


def test_datadirlock_release_allows_reacquire_and_is_idempotent(tmp_path):
    lock = DataDirLock(tmp_path)
    lock.release()
    lock.release()
    again = DataDirLock(tmp_path)
    assert again.held
    again.release()
    assert (tmp_path / files.LOCK_FILE_NAME).exists()  # never deleted: see module docstring


def test_datadirlock_dropped_object_releases_lock(tmp_path):
    DataDirLock(tmp_path)  # not kept: reference counting finalises it at once
    DataDirLock(tmp_path).release()


def test_datadirlock_garbled_pid_file_reports_no_pid(tmp_path):
    with DataDirLock(tmp_path):
        (tmp_path / files.LOCK_FILE_NAME).write_bytes(b"not a pid")
        with pytest.raises(DataDirLockedError) as info:
            DataDirLock(tmp_path)
        assert info.value.pid is None


def test_datadirlock_missing_directory_raises_datadirerror(tmp_path):
    with pytest.raises(DataDirError):
        DataDirLock(tmp_path / "missing")


def test_datadirlock_held_here_is_refused_to_another_process(tmp_path):
    with DataDirLock(tmp_path):
        assert _run_probe(str(tmp_path)) == ["locked", str(os.getpid())]
    assert _run_probe(str(tmp_path)) == ["acquired"]


def test_datadirlock_held_by_another_process_raises_naming_its_pid(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirLockedError) as info:
            DataDirLock(tmp_path)
        assert info.value.pid == holder.pid
        assert info.value.path == str(tmp_path)
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    DataDirLock(tmp_path).release()  # the holder is gone: free again


def test_datadirlock_holder_killed_releases_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=60)
    holder.stdin.close()
    holder.stdout.close()
    DataDirLock(tmp_path).release()  # the kernel dropped the dead holder's flock
