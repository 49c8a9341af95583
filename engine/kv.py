"""Key-value operations of one bucket, with Couchbase's semantics (reference §1.5, §2.5, §5).

`BucketEngine` adds the request-level operations to `BucketCore`. Each operation
validates everything first and only then writes one record, so a refusal changes
nothing. Time is a parameter (`now`, unix seconds). A write with a durability level
returns a `Pending` that the core resolves when the SyncWrite commits or aborts;
every other operation returns at once.

Order of checks, as Couchbase: collection and key, durability level and possibility,
value size, document existence, a pending SyncWrite on the key, the lock, the CAS.
"""

from __future__ import annotations

import struct
from typing import NamedTuple
from zlib import crc32

from . import expiry as expiry_rules
from .bucket import BucketCore, MutationOutcome
from .document import HEADER_SIZE, Document, store_key, unpack_header
from .durability import Level
from .errors import KVError, Status
from .hlc import CAS_LOCKED
from .keys import check_key
from .limits import (
    DURABILITY_TIMEOUT_DEFAULT_MS,
    DURABILITY_TIMEOUT_MAX_MS,
    KEY_LEN_MAX_NAMED_COLLECTION,
    LOCK_TIME_DEFAULT_S,
    LOCK_TIME_MAX_S,
    PENDING_PREPARES_MAX,
    VALUE_SIZE_MAX,
)
from .pending import Pending
from .records import Kind
from .vbucket import Lock, VBState, VBucket

_SKEY_PREFIX = struct.Struct(">HI")  # document.store_key's layout
COUNTER_FLAGS = 0x02000000  # counters are JSON numbers
_UINT64 = 2**64


class ReadOutcome(NamedTuple):
    value: bytes
    flags: int
    cas: int
    expiry: int
    vbucket: int


class Located(NamedTuple):
    vb: VBucket
    cid: int
    skey: bytes


class BucketEngine(BucketCore):
    # -- shared steps ------------------------------------------------------------------
    def locate(self, scope: str, collection: str, key: bytes) -> Located:
        """Collection id, key limits, vbucket and its state: the first checks of every operation."""
        cid = self.manifest.ids.get((scope, collection))
        if cid is None:
            cid = self.manifest.collection_id(scope, collection)  # raises the precise error
        if not key or len(key) > KEY_LEN_MAX_NAMED_COLLECTION:  # the common case costs one comparison
            check_key(key, cid)
        vbid = ((crc32(key) >> 16) & 0x7FFF) % self.config.num_vbuckets  # keys.vbucket_of, inlined
        vb = self.vbuckets[vbid]
        if vb.state is not VBState.ACTIVE:
            raise KVError(Status.NOT_MY_VBUCKET, f"vbucket {vbid} is not active here", key=key)
        return Located(vb, cid, _SKEY_PREFIX.pack(vbid, cid) + key)

    def _visible(self, loc: Located, key: bytes, now: float) -> Document | None:
        """The committed, live document; an expired one is expired now (lazily) and reads as absent."""
        return self._read(loc, key, now)[0]

    def _read(self, loc: Located, key: bytes, now: float) -> tuple[Document | None, Document | None]:
        """(the live document or None, the newest committed version incl. tombstones): one store read."""
        doc = self.committed(loc.skey)
        if doc is None or doc.deleted:
            return None, doc
        if doc.expiry and doc.expiry <= now:
            if loc.skey not in loc.vb.prepares:
                tomb = self._new_doc(loc.vb, doc, now, b"", 0, 0, deleted=True)
                loc.vb.locks.pop(loc.skey, None)
                try:
                    self.write_document(Kind.EXPIRATION, loc.vb, loc.skey, loc.cid, key, tomb)
                except KVError:
                    loc.vb.release_seqno(tomb.seqno)  # the log refused it; the document stays hidden anyway
                    return None, doc
                return None, tomb
            return None, doc
        return doc, doc

    def _lock(self, vb: VBucket, skey: bytes, now: float) -> Lock | None:
        lock = vb.locks.get(skey)
        if lock is not None and lock.until <= now:
            del vb.locks[skey]
            return None
        return lock

    def _check_write(self, loc: Located, key: bytes, now: float, cas: int, current: Document | None) -> None:
        """A pending SyncWrite, the lock and the CAS, in that order."""
        if loc.skey in loc.vb.prepares:
            raise KVError(Status.SYNC_WRITE_IN_PROGRESS, "a durable write on this key is in progress", key=key)
        lock = self._lock(loc.vb, loc.skey, now)
        if lock is not None:
            if cas != lock.cas:
                raise KVError(Status.LOCKED, "the document is locked", key=key)
            return  # the lock CAS stands in for the document CAS
        if cas and (current is None or current.cas != cas):
            raise KVError(Status.KEY_EEXISTS, "CAS mismatch", key=key)

    def _durability(self, vb: VBucket, level: int, timeout_ms: int | None, now: float) -> tuple[int, float | None]:
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 3:
            raise KVError(Status.DURABILITY_INVALID_LEVEL, f"unknown durability level {level!r}")
        level = max(int(level), self.config.durability_min_level)
        if level == Level.NONE:
            return 0, None
        timeout_ok = isinstance(timeout_ms, int) and not isinstance(timeout_ms, bool)
        if timeout_ms is not None and (not timeout_ok or not 1 <= timeout_ms <= DURABILITY_TIMEOUT_MAX_MS):
            raise KVError(Status.DURABILITY_INVALID_LEVEL, f"durability timeout {timeout_ms!r} ms out of range")
        if not self.monitors[vb.vbid].chain.durability_possible():
            raise KVError(Status.DURABILITY_IMPOSSIBLE, "the vbucket's chain cannot form a durable majority")
        if self.sync_writes_in_flight() >= PENDING_PREPARES_MAX:
            raise KVError(Status.TMPFAIL, "too many durable writes in flight")
        return level, now + (timeout_ms or DURABILITY_TIMEOUT_DEFAULT_MS) / 1000

    @staticmethod
    def _check_value(value: bytes, key: bytes) -> None:
        if len(value) > VALUE_SIZE_MAX:
            raise KVError(Status.E2BIG, f"value of {len(value)} bytes exceeds {VALUE_SIZE_MAX}", key=key)

    def _expiry(self, wire_expiry: int, cid: int, now: float) -> int:
        entry = self.manifest.collection(cid) if cid else None
        max_ttl = entry.max_ttl_s if entry is not None and entry.max_ttl_s else self.config.max_ttl_s
        return expiry_rules.to_absolute(wire_expiry, now, start_time=self.start_time, max_ttl_s=max_ttl)

    def _new_doc(
        self,
        vb: VBucket,
        old: Document | None,
        now: float,
        value: bytes,
        flags: int,
        expiry: int,
        deleted: bool = False,
    ) -> Document:
        rev = old.rev + 1 if old is not None else 1
        return Document(vb.hlc.next_cas(now), vb.next_seqno(), rev, expiry, flags, deleted, value)

    def _store(
        self, kind: Kind, loc: Located, key: bytes, doc: Document, level: int, deadline: float | None, counter: int = 0
    ) -> MutationOutcome | Pending:
        vb = loc.vb
        try:
            if level:
                pending = self.write_prepare(vb, loc.skey, loc.cid, key, doc, level, deadline, counter)
            else:
                self.write_document(kind, vb, loc.skey, loc.cid, key, doc)
        except KVError:
            vb.release_seqno(doc.seqno)  # taken for a record that was never written
            raise
        vb.locks.pop(loc.skey, None)
        if level:
            return pending
        return MutationOutcome(doc.cas, doc.seqno, vb.vbid, vb.uuid, counter)

    # -- reads -------------------------------------------------------------------------
    @staticmethod
    def _check_not_recommitting(loc: Located, key: bytes) -> None:
        """A prepare reloaded at restart or taken over at promotion may already be committed
        elsewhere: reads of its key wait (SYNC_WRITE_RECOMMIT_IN_PROGRESS, retried by the SDK)."""
        if loc.vb.prepares:
            prepare = loc.vb.prepares.get(loc.skey)
            if prepare is not None and prepare.maybe_visible:
                raise KVError(Status.SYNC_WRITE_RECOMMIT_IN_PROGRESS, "a reloaded durable write is being committed",
                              key=key)  # fmt: skip

    def get(self, scope: str, collection: str, key: bytes, now: float) -> ReadOutcome:
        loc = self.locate(scope, collection, key)
        vb = loc.vb
        self._check_not_recommitting(loc, key)
        doc = self.memtable.get(loc.skey)
        if doc is None:
            # The hot path of a read-mostly workload: answer straight from the stored bytes.
            raw = self.store.get(loc.skey)
            if raw is not None:
                cas, _seqno, _rev, expiry, flags, deleted = unpack_header(raw)
                if not deleted and not (expiry and expiry <= now) and not vb.locks:
                    return ReadOutcome(raw[HEADER_SIZE:], flags, cas, expiry, vb.vbid)
        doc = self._visible(loc, key, now)
        if doc is None:
            raise KVError(Status.KEY_ENOENT, "document not found", key=key)
        cas = CAS_LOCKED if vb.locks and self._lock(vb, loc.skey, now) is not None else doc.cas
        return ReadOutcome(doc.value, doc.flags, cas, doc.expiry, vb.vbid)

    def exists(self, scope: str, collection: str, key: bytes, now: float) -> tuple[bool, int]:
        loc = self.locate(scope, collection, key)
        self._check_not_recommitting(loc, key)
        doc = self._visible(loc, key, now)
        if doc is None:
            tomb = self.committed(loc.skey)
            return False, tomb.cas if tomb is not None else 0
        return True, CAS_LOCKED if self._lock(loc.vb, loc.skey, now) is not None else doc.cas

    # -- whole-document writes -----------------------------------------------------------
    def insert(self, scope, collection, key, value, flags, now, *, expiry=0, level=0, timeout_ms=None):
        loc = self.locate(scope, collection, key)
        level, deadline = self._durability(loc.vb, level, timeout_ms, now)
        self._check_value(value, key)
        if loc.skey in loc.vb.prepares:
            raise KVError(Status.SYNC_WRITE_IN_PROGRESS, "a durable write on this key is in progress", key=key)
        current, newest = self._read(loc, key, now)
        if current is not None:
            raise KVError(Status.KEY_EEXISTS, "document exists", key=key)
        doc = self._new_doc(loc.vb, newest, now, value, flags, self._expiry(expiry, loc.cid, now))
        return self._store(Kind.MUTATION, loc, key, doc, level, deadline)

    def upsert(self, scope, collection, key, value, flags, now, *, expiry=0, preserve_expiry=False, level=0,
               timeout_ms=None):  # fmt: skip
        loc = self.locate(scope, collection, key)
        level, deadline = self._durability(loc.vb, level, timeout_ms, now)
        self._check_value(value, key)
        current, newest = self._read(loc, key, now)
        self._check_write(loc, key, now, 0, current)
        absolute = current.expiry if preserve_expiry and current is not None else self._expiry(expiry, loc.cid, now)
        doc = self._new_doc(loc.vb, newest, now, value, flags, absolute)
        return self._store(Kind.MUTATION, loc, key, doc, level, deadline)

    def replace(self, scope, collection, key, value, flags, now, *, cas=0, expiry=0, preserve_expiry=False, level=0,
                timeout_ms=None):  # fmt: skip
        loc = self.locate(scope, collection, key)
        level, deadline = self._durability(loc.vb, level, timeout_ms, now)
        self._check_value(value, key)
        current = self._visible(loc, key, now)
        if current is None:
            raise KVError(Status.KEY_ENOENT, "document not found", key=key)
        self._check_write(loc, key, now, cas, current)
        absolute = current.expiry if preserve_expiry else self._expiry(expiry, loc.cid, now)
        doc = self._new_doc(loc.vb, current, now, value, flags, absolute)
        return self._store(Kind.MUTATION, loc, key, doc, level, deadline)

    def remove(self, scope, collection, key, now, *, cas=0, level=0, timeout_ms=None):
        loc = self.locate(scope, collection, key)
        level, deadline = self._durability(loc.vb, level, timeout_ms, now)
        current = self._visible(loc, key, now)
        if current is None:
            raise KVError(Status.KEY_ENOENT, "document not found", key=key)
        self._check_write(loc, key, now, cas, current)
        doc = self._new_doc(loc.vb, current, now, b"", 0, 0, deleted=True)
        return self._store(Kind.DELETION, loc, key, doc, level, deadline)

    # -- expiry and locks ----------------------------------------------------------------
    def touch(self, scope, collection, key, expiry, now) -> MutationOutcome:
        loc = self.locate(scope, collection, key)
        current = self._visible(loc, key, now)
        if current is None:
            raise KVError(Status.KEY_ENOENT, "document not found", key=key)
        self._check_write(loc, key, now, 0, current)
        absolute = self._expiry(expiry, loc.cid, now)
        if absolute == current.expiry:  # Couchbase: re-applying the same expiry changes nothing
            return MutationOutcome(current.cas, current.seqno, loc.vb.vbid, loc.vb.uuid)
        doc = self._new_doc(loc.vb, current, now, current.value, current.flags, absolute)
        return self._store(Kind.MUTATION, loc, key, doc, 0, None)

    def get_and_touch(self, scope, collection, key, expiry, now) -> ReadOutcome:
        outcome = self.touch(scope, collection, key, expiry, now)
        doc = self.committed(store_key(outcome.vbucket, self.manifest.collection_id(scope, collection), key))
        return ReadOutcome(doc.value, doc.flags, doc.cas, doc.expiry, outcome.vbucket)

    def get_and_lock(self, scope, collection, key, lock_time_s, now) -> ReadOutcome:
        loc = self.locate(scope, collection, key)
        if type(lock_time_s) is not int or lock_time_s < 0:
            raise KVError(Status.EINVAL, f"lock time {lock_time_s!r} must be a non-negative integer", key=key)
        current = self._visible(loc, key, now)
        if current is None:
            raise KVError(Status.KEY_ENOENT, "document not found", key=key)
        if loc.skey in loc.vb.prepares:
            raise KVError(Status.SYNC_WRITE_IN_PROGRESS, "a durable write on this key is in progress", key=key)
        if self._lock(loc.vb, loc.skey, now) is not None:
            raise KVError(Status.LOCKED, "the document is already locked", key=key)
        if lock_time_s == 0 or lock_time_s > LOCK_TIME_MAX_S:  # as Couchbase: silently the default
            lock_time_s = LOCK_TIME_DEFAULT_S
        lock = Lock(loc.vb.hlc.next_cas(now), now + lock_time_s)
        loc.vb.locks[loc.skey] = lock
        return ReadOutcome(current.value, current.flags, lock.cas, current.expiry, loc.vb.vbid)

    def unlock(self, scope, collection, key, cas, now) -> None:
        loc = self.locate(scope, collection, key)
        if self._visible(loc, key, now) is None:
            raise KVError(Status.KEY_ENOENT, "document not found", key=key)
        if loc.skey in loc.vb.prepares:
            raise KVError(Status.SYNC_WRITE_IN_PROGRESS, "a durable write on this key is in progress", key=key)
        if not cas:
            raise KVError(Status.EINVAL, "unlock needs the lock CAS", key=key)
        lock = self._lock(loc.vb, loc.skey, now)
        if lock is None:
            raise KVError(Status.NOT_LOCKED, "the document is not locked", key=key)
        if lock.cas != cas:
            raise KVError(Status.LOCKED, "the CAS is not the lock's", key=key)
        del loc.vb.locks[loc.skey]

    # -- binary operations -----------------------------------------------------------------
    def counter(self, scope, collection, key, delta, initial, now, *, expiry=0, level=0, timeout_ms=None):
        """Increment (delta >= 0) or decrement (delta < 0); `initial` None means do not create."""
        loc = self.locate(scope, collection, key)
        level, deadline = self._durability(loc.vb, level, timeout_ms, now)
        current, newest = self._read(loc, key, now)
        if current is None:
            if initial is None:
                raise KVError(Status.KEY_ENOENT, "document not found", key=key)
            self._check_write(loc, key, now, 0, None)
            value = initial % _UINT64
            doc = self._new_doc(loc.vb, newest, now, b"%d" % value, COUNTER_FLAGS,
                                self._expiry(expiry, loc.cid, now))  # fmt: skip
            return self._store(Kind.MUTATION, loc, key, doc, level, deadline, value)
        self._check_write(loc, key, now, 0, current)
        raw = current.value
        if not raw or len(raw) > 20 or not raw.isdigit() or int(raw) >= _UINT64:
            raise KVError(Status.DELTA_BADVAL, "the document is not a 64-bit unsigned decimal number", key=key)
        old = int(raw)
        value = (old + delta) % _UINT64 if delta >= 0 else max(old + delta, 0)  # incr wraps, decr floors at 0
        doc = self._new_doc(loc.vb, current, now, b"%d" % value, current.flags, current.expiry)
        return self._store(Kind.MUTATION, loc, key, doc, level, deadline, value)

    def concat(self, scope, collection, key, data, now, *, prepend=False, cas=0, level=0, timeout_ms=None):
        loc = self.locate(scope, collection, key)
        level, deadline = self._durability(loc.vb, level, timeout_ms, now)
        current = self._visible(loc, key, now)
        if current is None:
            raise KVError(Status.NOT_STORED, "document not found", key=key)
        self._check_write(loc, key, now, cas, current)
        value = data + current.value if prepend else current.value + data
        self._check_value(value, key)
        doc = self._new_doc(loc.vb, current, now, value, current.flags, current.expiry)
        return self._store(Kind.MUTATION, loc, key, doc, level, deadline)

    # -- the expiry pager ------------------------------------------------------------------
    def expire(self, skeys, now: float) -> int:
        """Expire the given documents if they are still expired (the pager found them); returns how many."""
        from .document import split_store_key

        count = 0
        for skey in skeys:
            vbid, cid, key = split_store_key(skey)
            vb = self.vbuckets[vbid]
            if vb.state is not VBState.ACTIVE or self.manifest.collection(cid) is None:
                continue
            doc = self.committed(skey)
            expired = doc is not None and not doc.deleted and doc.expiry and doc.expiry <= now
            if expired and skey not in vb.prepares and self._visible(Located(vb, cid, skey), key, now) is None:
                count += 1
        return count
