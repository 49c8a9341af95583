"""One document version as the engine holds it, and its byte encoding.

The same encoding is used for a document in the LMDB `docs` database, inside WAL
mutation and prepare records, and in replication snapshots, so a document is encoded
once per mutation. Layout (big-endian):

    cas u64 | seqno u64 | rev u64 | expiry u32 | flags u32 | deleted u8 | value bytes

`expiry` is absolute unix seconds (0 = never). A tombstone has `deleted = 1` and an
empty value. Locks are not part of a document: they live in memory only.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_HEADER = struct.Struct(">QQQIIB")
HEADER_SIZE = _HEADER.size  # 33


class Document(NamedTuple):
    cas: int
    seqno: int
    rev: int
    expiry: int
    flags: int
    deleted: bool
    value: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(self.cas, self.seqno, self.rev, self.expiry, self.flags, self.deleted) + self.value


def decode_document(raw: bytes | memoryview) -> Document:
    """Decode bytes written by `Document.encode`; raises ValueError when they are too short."""
    if len(raw) < HEADER_SIZE:
        raise ValueError(f"document record of {len(raw)} bytes is shorter than its {HEADER_SIZE}-byte header")
    cas, seqno, rev, expiry, flags, deleted = _HEADER.unpack_from(raw)
    return Document(cas, seqno, rev, expiry, flags, bool(deleted), bytes(raw[HEADER_SIZE:]))


def unpack_header(raw: bytes) -> tuple[int, int, int, int, int, int]:
    """(cas, seqno, rev, expiry, flags, deleted) of an encoded document, without copying its value."""
    return _HEADER.unpack_from(raw)


def seqno_of(raw: bytes | memoryview) -> int:
    """The seqno of an encoded document without decoding the rest."""
    return struct.unpack_from(">Q", raw, 8)[0]


def store_key(vbucket: int, collection_id: int, key: bytes) -> bytes:
    """The key a document has in the store and the memtable: vbucket u16 | collection id u32 | key."""
    return struct.pack(">HI", vbucket, collection_id) + key


def split_store_key(skey: bytes) -> tuple[int, int, bytes]:
    vbucket, collection_id = struct.unpack_from(">HI", skey)
    return vbucket, collection_id, skey[6:]
