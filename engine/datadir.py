"""A node's data directory: its lock, its format version, and the registry of its buckets.

Layout (docs/data-directory.md):

    <dir>/LOCK                      held (flock) by the one process using the directory
    <dir>/node.json                 {"format_version": 1, "node_id": ..., "buckets": {name: settings}}
    <dir>/buckets/<name>/wal/       the bucket's write-ahead log segments
    <dir>/buckets/<name>/store/     the bucket's LMDB checkpoint store
    <dir>/buckets/<name>/CLEAN      present only between a clean close and the next open

node.json is replaced atomically. A bucket directory that node.json does not list is
the leftover of an interrupted create or drop and is removed at open.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from .bucket import BucketConfig
from .errors import DataDirError, FormatVersionError
from .files import DataDirLock, atomic_write, fsync_dir

FORMAT_VERSION = 1
NODE_FILE = "node.json"


class DataDir:
    """Owns the directory layout and node.json; holds the directory lock while open."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise DataDirError(f"{self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirLock(self.path)
        try:
            self._load()
        except BaseException:
            self.lock.release()
            raise

    def _load(self) -> None:
        node_file = self.path / NODE_FILE
        self.created = not node_file.exists()
        if self.created:
            leftovers = [p.name for p in self.path.iterdir() if p.name != "LOCK"]
            if leftovers:
                raise DataDirError(
                    f"{self.path} is not a durakv data directory (no {NODE_FILE}, but holds {sorted(leftovers)[:5]})"
                )
            self.node_id = uuid.uuid4().hex[:12]
            self.buckets: dict[str, BucketConfig] = {}
            self._save()
            return
        try:
            doc = json.loads(node_file.read_bytes())
            version = doc["format_version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataDirError(f"{node_file} is corrupt: {exc}") from exc
        if version != FORMAT_VERSION:
            raise FormatVersionError(f"{node_file} has format version {version!r}; this durakv reads {FORMAT_VERSION}")
        try:
            self.node_id = doc["node_id"]
            self.buckets = {name: BucketConfig(**settings) for name, settings in doc["buckets"].items()}
        except Exception as exc:
            raise DataDirError(f"{node_file} is corrupt: {exc}") from exc
        buckets_dir = self.path / "buckets"
        if buckets_dir.is_dir():
            for entry in buckets_dir.iterdir():
                if entry.name not in self.buckets:
                    shutil.rmtree(entry)  # an interrupted create or drop

    def _save(self) -> None:
        doc = {
            "format_version": FORMAT_VERSION,
            "node_id": self.node_id,
            "buckets": {name: cfg.to_dict() for name, cfg in self.buckets.items()},
        }
        atomic_write(self.path / NODE_FILE, json.dumps(doc, indent=2).encode())

    def bucket_dir(self, name: str) -> Path:
        return self.path / "buckets" / name

    def add_bucket(self, config: BucketConfig) -> Path:
        directory = self.bucket_dir(config.name)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        fsync_dir(directory.parent)
        self.buckets[config.name] = config
        self._save()
        return directory

    def remove_bucket(self, name: str) -> None:
        del self.buckets[name]
        self._save()  # first forget it, then delete: a crash in between leaves a leftover removed at open
        shutil.rmtree(self.bucket_dir(name), ignore_errors=True)

    def close(self) -> None:
        self.lock.release()
