"""The store's LMDB environment: claiming its directory, opening it, its databases and layout.

Owns: the on-disk layout names of the checkpoint store (the four named databases and the
meta keys the store itself writes, with the format version), the registry of store
directories open in this process, the flags every environment is opened with, and the
`ResizeGate` that keeps a map resize away from open read snapshots. `CheckpointStore`
(engine/store.py) is the only user; what the databases hold is documented there.

Must never:
- open one directory twice in a process: LMDB's fcntl locks would be shared and the second
  close would drop the first's (`claim_dir` refuses with DataDirLockedError).
- open an environment with `sync`/`metasync` off (engine/store.py says why) or with
  `writemap` (a wild write could then reach the map).
- convert a store of another format: an unknown format version is FormatVersionError.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

import lmdb

from durakv.engine import limits
from durakv.engine.errors import DataDirError, DataDirLockedError, FormatVersionError

STORE_FORMAT_VERSION = 1

DB_META = b"meta"
DB_DOCS = b"docs"
DB_SEQS = b"seqs"
DB_PREPARES = b"prepares"
META_FORMAT_VERSION = b"format_version"  # u32 BE
META_CHECKPOINT_LSN = b"checkpoint_lsn"  # u64 BE
_ENV_FILE_NAMES = frozenset({"data.mdb", "lock.mdb"})

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# LMDB forbids opening one environment twice in a process (its fcntl locks would be shared
# and the second close would drop the first's). Directories open here, by (st_dev, st_ino).
_open_dirs: set[tuple[int, int]] = set()
_open_dirs_lock = threading.Lock()


class ResizeGate:
    """Keeps `set_mapsize` away from open snapshots, and snapshots away from a resize."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._snapshots_open = 0
        self._resizing = False

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._snapshots_open += 1
        try:
            yield
        finally:
            with self._cond:
                self._snapshots_open -= 1
                self._cond.notify_all()

    def wait_resized(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)

    @contextlib.contextmanager
    def resizing(self, wait_s: float) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            # Past the timeout the resize goes ahead; the stragglers' transactions are
            # invalidated by py-lmdb and their iterators raise StoreError.
            self._cond.wait_for(lambda: self._snapshots_open == 0, timeout=wait_s)
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


def check_map_size(name: str, size_bytes: int) -> None:
    if size_bytes <= 0 or size_bytes % mmap.PAGESIZE:
        raise ValueError(f"{name}={size_bytes} must be a positive multiple of the page size {mmap.PAGESIZE}")


def error_with(cls: type[DataDirError], message: str, **fields: object) -> DataDirError:
    err = cls(message)
    for name, value in fields.items():
        setattr(err, name, value)
    return err


def claim_dir(path: str) -> tuple[int, int]:
    """Create the directory (owner-only), refuse foreign contents, claim it in this process."""
    try:
        # Created here rather than by py-lmdb, which would give the directory the files'
        # mode (0o600, not traversable by a non-root owner).
        os.makedirs(path, mode=0o700, exist_ok=True)
        names = set(os.listdir(path))
        st = os.stat(path)
    except OSError as exc:
        raise DataDirError(f"store directory {path} is unusable: {exc.strerror}") from exc
    if "data.mdb" not in names and names - _ENV_FILE_NAMES:
        foreign = ", ".join(sorted(names - _ENV_FILE_NAMES)[:5])
        raise DataDirError(f"{path} is not an LMDB store directory (no data.mdb; holds {foreign})")
    dir_id = (st.st_dev, st.st_ino)
    with _open_dirs_lock:
        if dir_id in _open_dirs:
            raise error_with(DataDirLockedError, f"store {path} is already open in this process", path=path)
        _open_dirs.add(dir_id)
    return dir_id


def release_dir(dir_id: tuple[int, int]) -> None:
    """Give up this process's claim on a store directory (after its environment is closed)."""
    with _open_dirs_lock:
        _open_dirs.discard(dir_id)


def open_env(path: str, map_size: int) -> lmdb.Environment:
    try:
        env = lmdb.open(
            path,
            map_size=map_size,  # grown on MapFullError, up to map_size_max
            subdir=True,
            readonly=False,
            max_dbs=limits.LMDB_MAX_DBS,
            sync=True,  # fsync data at each apply: the checkpoint must survive power loss
            metasync=True,  # ... and the meta page that makes it visible
            writemap=False,  # a wild write cannot reach the map; commits write via pwrite
            map_async=False,  # only meaningful with writemap
            lock=True,  # readers on other threads coordinate with the writer
            # Reads are point lookups by key; readahead would pull neighbouring pages into
            # the page cache and evict useful ones once the store outgrows RAM.
            readahead=False,
            # Page buffers are not zeroed first: faster. The unused tail of a page may hold
            # stale heap bytes of this process; the files are owner-only (0o600).
            meminit=False,
            max_readers=limits.LMDB_MAX_READERS,
            # One cached read transaction makes each get ~10% faster; it keeps a reader slot.
            max_spare_txns=1,
            mode=0o600,
            create=True,
            # The LMDB 0.9 data format, whatever LMDB_DEFAULT_LIB_VERSION says: readable
            # by the common mdb_* tools; a file in another format is refused, not converted.
            lib_version=0,
        )
    except lmdb.Error as exc:
        raise DataDirError(f"{path} is not a usable LMDB environment: {exc}") from exc
    # Slots of readers that died without closing (another process, earlier) are freed.
    env.reader_check()
    return env


def open_dbs(env: lmdb.Environment, path: str) -> tuple[list[Any], int]:
    """Open (or, for a new environment, create) the named databases (meta, docs, seqs,
    prepares); return them and the checkpoint LSN."""
    new = env.info()["last_txnid"] == 0  # no transaction ever committed: a fresh store
    try:
        with env.begin(write=True) as txn:
            dbs = [env.open_db(name, txn=txn, create=new) for name in (DB_META, DB_DOCS, DB_SEQS, DB_PREPARES)]
            if new:
                txn.put(META_FORMAT_VERSION, _U32.pack(STORE_FORMAT_VERSION), db=dbs[0])
                txn.put(META_CHECKPOINT_LSN, _U64.pack(0), db=dbs[0])
            version_raw = txn.get(META_FORMAT_VERSION, db=dbs[0])
            lsn_raw = txn.get(META_CHECKPOINT_LSN, db=dbs[0])
    except lmdb.NotFoundError as exc:
        raise DataDirError(f"{path}: LMDB environment lacks the store's databases: {exc}") from exc
    except lmdb.Error as exc:
        raise DataDirError(f"{path}: cannot open the store's databases: {exc}") from exc
    if version_raw is None or len(version_raw) != _U32.size:
        raise DataDirError(f"{path}: meta {META_FORMAT_VERSION!r} is missing or garbled: {version_raw!r}")
    version = _U32.unpack(version_raw)[0]
    if version != STORE_FORMAT_VERSION:
        raise error_with(
            FormatVersionError,
            f"{path}: store format version {version}, this build reads {STORE_FORMAT_VERSION}",
            path=path,
            version=version,
        )
    if lsn_raw is None or len(lsn_raw) != _U64.size:
        raise DataDirError(f"{path}: meta {META_CHECKPOINT_LSN!r} is missing or garbled: {lsn_raw!r}")
    return dbs, _U64.unpack(lsn_raw)[0]
