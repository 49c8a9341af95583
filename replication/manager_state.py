"""Where the cluster manager keeps its configuration on disk: one file, replaced atomically.

A thin shell around `cluster_config`: it decides nothing about the configuration, only
reads, checks and writes it. Layout of the manager's directory:

    <dir>/LOCK          flock held by the one manager using the directory (engine.files.DataDirLock)
    <dir>/cluster.json  {"format_version": 1, "checksum_crc32": ..., "config": {...}}

`cluster.json` is only ever replaced with `engine.files.atomic_write` (temp file, fsync,
rename, fsync of the directory), so after a crash it holds one whole configuration: the
last one saved, or the one before if the crash came before the rename. The checksum covers
the canonical JSON of `config` and catches a file changed behind our back. The file is
owner-only (0600): it holds the cluster secret and the password hashes.

Errors: an unknown `format_version` -> FormatVersionError; a file that does not parse, fails
its checksum or breaks a configuration invariant -> DataDirError; both name the file (and
carry it as `.path`). Another manager on the same directory -> DataDirLockedError.

Invariants: the saved revision only grows (asserted); `config` is always what is on disk,
because a save that raises leaves both the file and `config` as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from durakv.engine.errors import DataDirError, FormatVersionError
from durakv.engine.files import DataDirLock, atomic_write, fsync_dir
from durakv.replication.cluster_config import ClusterConfig, ConfigDecodeError

FORMAT_VERSION = 1
CONFIG_FILE_NAME = "cluster.json"
CONFIG_FILE_SIZE_MAX = 64 * 1024 * 1024  # bytes; far above 30 buckets x 1024 vbuckets + 1000 users


def encode_state(config: ClusterConfig) -> bytes:
    """The bytes of cluster.json for `config`."""
    body = config.to_json()
    header = json.dumps(
        {"format_version": FORMAT_VERSION, "checksum_crc32": zlib.crc32(body)}, sort_keys=True, separators=(",", ":")
    )
    # The canonical config bytes are spliced in as they are, so the checksum is over exactly them.
    return header[:-1].encode() + b',"config":' + body + b"}\n"


def decode_state(raw: bytes, path: str | os.PathLike[str]) -> ClusterConfig:
    """Parse cluster.json's bytes; FormatVersionError or DataDirError naming `path`."""
    path = os.fspath(path)
    try:
        doc = json.loads(raw)
        version = doc["format_version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _error(DataDirError, path, f"is corrupt: {exc}") from exc
    if version != FORMAT_VERSION or type(version) is not int:
        raise _error(FormatVersionError, path, f"has format version {version!r}; this durakv reads {FORMAT_VERSION}")
    try:
        body = json.dumps(doc["config"], sort_keys=True, separators=(",", ":")).encode()
        checksum = doc["checksum_crc32"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _error(DataDirError, path, f"is corrupt: {exc!r}") from exc
    if zlib.crc32(body) != checksum:
        raise _error(DataDirError, path, "is corrupt: checksum mismatch")
    try:
        return ClusterConfig.from_json(body)
    except ConfigDecodeError as exc:
        raise _error(DataDirError, path, f"is corrupt: {exc}") from exc


def read_config(directory: str | os.PathLike[str]) -> ClusterConfig | None:
    """The saved configuration, without taking the lock (a reader sees a whole file); None if none yet."""
    path = Path(directory) / CONFIG_FILE_NAME
    try:
        with open(path, "rb") as f:
            raw = f.read(CONFIG_FILE_SIZE_MAX + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error(DataDirError, path, f"cannot be read: {exc.strerror}") from exc
    if len(raw) > CONFIG_FILE_SIZE_MAX:
        raise _error(DataDirError, path, f"is larger than {CONFIG_FILE_SIZE_MAX} bytes")
    return decode_state(raw, path)


class ManagerState:
    """The manager's directory, locked while open, and the configuration saved in it.

    Opening a directory without a configuration creates one (`new_config()`, by default a
    fresh cluster with a new uuid and secret) and saves it at once, so the secret is drawn
    exactly once per cluster. With `create=False` a missing configuration is a DataDirError.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        create: bool = True,
        new_config: Callable[[], ClusterConfig] = ClusterConfig.new,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CONFIG_FILE_NAME
        if self.directory.exists() and not self.directory.is_dir():
            raise _error(DataDirError, self.directory, "is not a directory")
        if not self.directory.exists():
            if not create:
                raise _error(DataDirError, self.directory, "does not exist")
            self.directory.mkdir(parents=True)
            fsync_dir(self.directory.parent)  # the new directory's own entry must survive too
        self.lock = DataDirLock(self.directory)
        try:
            self._remove_stale_temp_files()
            config = read_config(self.directory)
            if config is None:
                if not create:
                    raise _error(DataDirError, self.path, "does not exist")
                config = new_config()
                atomic_write(self.path, encode_state(config))
            self.config: ClusterConfig = config
        except BaseException:
            self.lock.release()
            raise

    def save(self, config: ClusterConfig) -> None:
        """Write `config` durably, then make it current. On error both stay as they were."""
        assert self.lock.held, "save after close"
        assert config.revision > self.config.revision, (config.revision, self.config.revision)
        atomic_write(self.path, encode_state(config))
        self.config = config

    def update(self, change: Callable[[ClusterConfig], ClusterConfig]) -> ClusterConfig:
        """Apply a change (e.g. `lambda c: c.add_node(...)`), save the result, return it.

        A refused change raises its typed error before anything is written.
        """
        config = change(self.config)
        self.save(config)
        return config

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> ManagerState:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _remove_stale_temp_files(self) -> None:
        # atomic_write's temp files (".cluster.json.tmp.<pid>.<random>") left by a crash;
        # safe to remove because we hold the lock, so no writer is running.
        prefix = f".{CONFIG_FILE_NAME}.tmp."
        for entry in self.directory.iterdir():
            if entry.name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


def _error(cls: type[DataDirError], path: str | os.PathLike[str], what: str) -> DataDirError:
    err = cls(f"{os.fspath(path)} {what}")
    err.path = os.fspath(path)  # type: ignore[attr-defined]
    return err
