"""Typed errors of the engine and the KV status codes they carry.

The engine reports every refusal of a key-value request as a `KVError` carrying a
`Status`, numbered as Couchbase's KV binary protocol numbers them, so the same value
can travel on the wire and be mapped to an SDK exception at the boundary with
`isinstance`/enum lookups, never by message text.

Operating errors that are not about one request (a corrupt data directory, a data
directory held by another process, a failed disk) have their own classes under
`EngineError`.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """KV response statuses (values as in Couchbase's status.h)."""

    SUCCESS = 0x00
    KEY_ENOENT = 0x01
    KEY_EEXISTS = 0x02
    E2BIG = 0x03
    EINVAL = 0x04
    NOT_STORED = 0x05
    DELTA_BADVAL = 0x06
    NOT_MY_VBUCKET = 0x07
    LOCKED = 0x09
    NOT_LOCKED = 0x0E
    AUTH_ERROR = 0x20
    RANGE_ERROR = 0x22
    ROLLBACK = 0x23
    EACCESS = 0x24
    ENOMEM = 0x82
    NOT_SUPPORTED = 0x83
    EINTERNAL = 0x84
    EBUSY = 0x85
    TMPFAIL = 0x86
    UNKNOWN_COLLECTION = 0x88
    UNKNOWN_SCOPE = 0x8C
    DURABILITY_INVALID_LEVEL = 0xA0
    DURABILITY_IMPOSSIBLE = 0xA1
    SYNC_WRITE_IN_PROGRESS = 0xA2
    SYNC_WRITE_AMBIGUOUS = 0xA3
    SYNC_WRITE_RECOMMIT_IN_PROGRESS = 0xA4
    # Not in Couchbase's table: management-level outcomes that durakv's own
    # admin calls answer with (kept above the KV range).
    BUCKET_EXISTS = 0x1001
    BUCKET_NOT_FOUND = 0x1002
    SCOPE_EXISTS = 0x1003
    COLLECTION_EXISTS = 0x1004


class EngineError(Exception):
    """Root of every error the engine raises."""


class KVError(EngineError):
    """A key-value request was refused; `status` says why. The data is unchanged."""

    def __init__(self, status: Status, message: str = "", *, key: bytes | None = None) -> None:
        super().__init__(message or status.name)
        self.status = status
        self.message = message or status.name
        self.key = key

    def __repr__(self) -> str:
        return f"KVError({self.status.name}, {self.message!r})"


class DataDirError(EngineError):
    """The data directory cannot be used as it is (corrupt, unknown format, wrong kind)."""


class DataDirLockedError(DataDirError):
    """Another process holds the data directory."""


class FormatVersionError(DataDirError):
    """A file was written by a format version this build does not know."""


class WalCorruptError(DataDirError):
    """A WAL record that is followed by valid data failed its check: refuse to start."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"corrupt WAL record in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalFailedError(EngineError):
    """The WAL could not write or fsync (EIO, ENOSPC, ...); persistence is stopped until it recovers."""


class StoreError(EngineError):
    """The LMDB checkpoint store failed or holds data it cannot read."""
