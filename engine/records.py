"""Payloads of the WAL records the engine writes, and their codecs. Pure.

The WAL frames and checksums records (engine/wal/FORMAT.md); this module owns what is
inside a frame. Every payload starts with the vbucket, collection id and key it is
about, so replay and replication can route a record without decoding the rest:

    vbucket u16 | collection id u32 | key length u16 | key | kind-specific body

| kind | body |
|---|---|
| MUTATION, DELETION, EXPIRATION | encoded Document (engine/document.py): the state after the change |
| PREPARE | durability level u8 | encoded Document (the value the prepare would commit) |
| COMMIT, ABORT | prepare seqno u64 | commit/abort seqno u64 |
| MANIFEST | (vbucket 0, cid 0, empty key) the manifest as JSON |
| VBUCKET_STATE | (cid 0, empty key) the vbucket's state as JSON |
| SNAPSHOT_END | (cid 0, empty key) start u64, end u64, disk u8, HCS u64, resolved count u32, resolved |
| ROLLBACK | (cid 0, empty key) seqno reached u64, to zero u8 |

SNAPSHOT_END closes a snapshot a replica applied (its items are the records just before it, all
appended at once); each resolved entry (prepare seqno u64, store key length u16, store key) is a
prepare the snapshot resolved without a commit or abort of its own (a backfill deduplicated
it). ROLLBACK says the vbucket was rolled back to that seqno, exactly or (to zero) by
dropping its copy; engine/replica.py documents both.

Records are redo records: each carries the resulting state, so replaying one twice is
harmless and replay order is the only thing that matters.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from .document import Document, decode_document

_HEAD = struct.Struct(">HIH")
_COMPLETION = struct.Struct(">QQ")
_SNAPSHOT_END = struct.Struct(">QQBQI")
_RESOLVED = struct.Struct(">QH")
_ROLLBACK = struct.Struct(">QB")


class Kind(IntEnum):
    MUTATION = 1
    DELETION = 2
    EXPIRATION = 3
    PREPARE = 4
    COMMIT = 5
    ABORT = 6
    MANIFEST = 7
    VBUCKET_STATE = 8
    SNAPSHOT_END = 9
    ROLLBACK = 10


KINDS = {int(kind): kind for kind in Kind}  # number -> Kind, a lookup (calling an enum class is slow)

# The kinds that are changes of a vbucket's contents, each with a seqno of its own.
ITEM_KINDS = frozenset({Kind.MUTATION, Kind.DELETION, Kind.EXPIRATION, Kind.PREPARE, Kind.COMMIT, Kind.ABORT})


class Record(NamedTuple):
    kind: Kind
    vbucket: int
    collection_id: int
    key: bytes
    document: Document | None = None  # mutation, deletion, expiration, prepare
    level: int = 0  # prepare
    prepare_seqno: int = 0  # commit, abort
    seqno: int = 0  # the record's own seqno (commit/abort seqno; a document's seqno otherwise)
    body: bytes = b""  # manifest, vbucket state, snapshot end, rollback


class SnapshotEnd(NamedTuple):
    """The body of a SNAPSHOT_END record."""

    start: int
    end: int
    disk: bool
    high_completed_seqno: int
    resolved: tuple[tuple[int, bytes], ...] = ()  # (prepare seqno, store key)


def encode_document_record(vbucket: int, collection_id: int, key: bytes, doc_bytes: bytes) -> bytes:
    return _HEAD.pack(vbucket, collection_id, len(key)) + key + doc_bytes


def encode_prepare(vbucket: int, collection_id: int, key: bytes, level: int, doc_bytes: bytes) -> bytes:
    return _HEAD.pack(vbucket, collection_id, len(key)) + key + bytes((level,)) + doc_bytes


def encode_completion(vbucket: int, collection_id: int, key: bytes, prepare_seqno: int, seqno: int) -> bytes:
    return _HEAD.pack(vbucket, collection_id, len(key)) + key + _COMPLETION.pack(prepare_seqno, seqno)


def encode_meta(vbucket: int, body: bytes) -> bytes:
    return _HEAD.pack(vbucket, 0, 0) + body


def encode_snapshot_end(vbucket: int, snapshot: SnapshotEnd) -> bytes:
    head = _SNAPSHOT_END.pack(
        snapshot.start, snapshot.end, snapshot.disk, snapshot.high_completed_seqno, len(snapshot.resolved)
    )
    return encode_meta(vbucket, head + b"".join(_RESOLVED.pack(s, len(k)) + k for s, k in snapshot.resolved))


def decode_snapshot_end(body: bytes) -> SnapshotEnd:
    start, end, disk, hcs, count = _SNAPSHOT_END.unpack_from(body)
    offset = _SNAPSHOT_END.size
    resolved = []
    for _ in range(count):
        seqno, key_len = _RESOLVED.unpack_from(body, offset)
        offset += _RESOLVED.size
        resolved.append((seqno, bytes(body[offset : offset + key_len])))
        offset += key_len
    if offset != len(body):
        raise ValueError("snapshot end record of the wrong length")
    return SnapshotEnd(start, end, bool(disk), hcs, tuple(resolved))


def encode_rollback(vbucket: int, seqno: int, to_zero: bool) -> bytes:
    return encode_meta(vbucket, _ROLLBACK.pack(seqno, to_zero))


def decode_rollback(body: bytes) -> tuple[int, bool]:
    """(the seqno the vbucket was rolled back to, whether its copy was dropped)."""
    seqno, to_zero = _ROLLBACK.unpack(body)
    return seqno, bool(to_zero)


def decode(kind: int, payload: bytes) -> Record:
    """Decode one payload; raises ValueError for a kind or layout this build does not know."""
    kind = Kind(kind)
    vbucket, collection_id, key_len = _HEAD.unpack_from(payload)
    start = _HEAD.size
    key = payload[start : start + key_len]
    body = payload[start + key_len :]
    if len(key) != key_len:
        raise ValueError("record payload shorter than its key")
    if kind in (Kind.MUTATION, Kind.DELETION, Kind.EXPIRATION):
        doc = decode_document(body)
        return Record(kind, vbucket, collection_id, key, doc, seqno=doc.seqno)
    if kind is Kind.PREPARE:
        doc = decode_document(body[1:])
        return Record(kind, vbucket, collection_id, key, doc, level=body[0], seqno=doc.seqno)
    if kind in (Kind.COMMIT, Kind.ABORT):
        prepare_seqno, seqno = _COMPLETION.unpack(body)
        return Record(kind, vbucket, collection_id, key, prepare_seqno=prepare_seqno, seqno=seqno)
    if kind is Kind.SNAPSHOT_END:
        return Record(kind, vbucket, collection_id, key, seqno=_SNAPSHOT_END.unpack_from(body)[1], body=body)
    if kind is Kind.ROLLBACK:
        return Record(kind, vbucket, collection_id, key, seqno=_ROLLBACK.unpack(body)[0], body=body)
    return Record(kind, vbucket, collection_id, key, body=body)
