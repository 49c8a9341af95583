"""An embedded node against a plain dict, driven by Hypothesis, with checkpoints and restarts.

The system under test is a real `EmbeddedNode` (real WAL with its flusher thread, real LMDB
store, real maintenance thread) in a temporary directory, called through
`EmbeddedBucket.call` exactly as the SDK's embedded backend calls it. The model is a dict per
(collection, key) of the committed document -- value, flags, expiry and the CAS the operation
that wrote it returned -- plus the lock CAS of each locked key. Every rule predicts the answer
(success or the exact status) from the model alone, then checks it; after every step every key
of every live collection must read back exactly as the model says, or be not-found.

Restarts: a clean reopen (close + open) and a crash reopen (every acknowledged write fsynced,
then a power cut: unsynced bytes dropped, no checkpoint, no CLEAN marker). Both must lose
nothing the model holds, and both drop every lock (locks live in memory only). Expiries are
absolute and far in the future, and locks are taken for the maximum 30 s: time is real here,
and one run lasts well under a second.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from durakv.engine.embedded import EmbeddedNode
from durakv.engine.errors import KVError, Status
from durakv.engine.hlc import CAS_LOCKED

try:
    from enginekit import WAIT_S, crash_node
except ImportError:  # tests/unit became a package
    from tests.unit.enginekit import WAIT_S, crash_node

SCOPE = "_default"
NAMED = ("c1", "c2")
COLLECTIONS = ("_default", *NAMED)
KEYS = (b"a", b"b", b"c")
PERSIST_TO_MAJORITY = 3
LEVELS = (0, 1, PERSIST_TO_MAJORITY)  # with NONE and MAJORITY (0 replicas: all possible)
FAR = 4_000_000_000  # absolute unix seconds in 2096: never reached while the test runs
EXPIRIES = (0, FAR, FAR + 1)
LOCK_TIME_S = 30
COUNTER_FLAGS = 0x02000000
UINT64 = 2**64
WRONG_CAS_BIT = 1 << 60  # flips a CAS to one 36 years away: never a real document's or lock's

# Mostly collections that exist (c1 is created at the start); sometimes one that may not.
collections = st.sampled_from(("_default", "_default", "c1", "c1", "c2"))
keys = st.sampled_from(KEYS)
values = st.one_of(st.binary(max_size=12), st.sampled_from([b"0", b"41", b"18446744073709551615", b"007"]))
flags = st.sampled_from([0, 1, COUNTER_FLAGS])
levels = st.sampled_from(LEVELS)
expiries = st.sampled_from(EXPIRIES)
cas_kinds = st.sampled_from(["none", "right", "wrong", "lock"])

Slot = tuple[str, bytes]
State = tuple[dict, frozenset]  # (docs, live collections)


@dataclass(frozen=True)
class Doc:
    value: bytes
    flags: int
    expiry: int
    cas: int


def counter_value(raw: bytes) -> int | None:
    """The number a counter sees in `raw`, or None (DELTA_BADVAL): 1-20 ASCII digits below 2**64."""
    if not raw or len(raw) > 20 or not raw.isdigit() or int(raw) >= UINT64:
        return None
    return int(raw)


class EmbeddedNodeAgainstADict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="durakv-model-"))
        self.path = self.root / "node"
        self.node: EmbeddedNode | None = self.open_node()
        self.docs: dict[Slot, Doc] = {}
        self.locks: dict[Slot, int] = {}  # slot -> lock CAS
        self.live = {"_default"}
        self.max_cas: dict[int, int] = {}  # vbucket -> highest mutation CAS handed out
        # The states since the last point where everything was durable, oldest first, and the
        # index of the oldest one a power cut may still go back to: the WAL is a prefix, so a
        # cut loses a suffix of acknowledged changes, never one at or before a persist-level ack.
        self.history: list[State] = [self.state()]
        self.floor = 0

    def open_node(self) -> EmbeddedNode:
        # fsync policy "never": the WAL is fsynced only where durability asks for it (persist-level
        # writes, checkpoints, close), so a power cut loses everything it may lose, and always the
        # same bytes for the same steps -- Hypothesis needs runs it can replay.
        return EmbeddedNode(self.path, fsync_policy="never")

    def teardown(self) -> None:
        try:
            if self.node is not None and sys.exc_info()[0] is None:
                # Every run that passed its steps ends with a power cut and then a clean restart,
                # each checked in full: a restart bug shows in every run, not only in the runs
                # that happened to draw a restart rule after the write it loses.
                self.crash_reopen()
                self.every_key_reads_as_the_model_says()
                self.clean_reopen()
                self.every_key_reads_as_the_model_says()
        finally:
            try:
                if self.node is not None:
                    self.node.close()
            finally:
                shutil.rmtree(self.root, ignore_errors=True)

    # -- calling the node -----------------------------------------------------------------------
    def call(self, expected: Status | None, method: str, *args, **kwargs):
        """Run one engine operation; assert it fails with `expected`, or succeeds if that is None."""
        bucket = self.node.bucket("default")
        try:
            result = bucket.call(method, *args, wait_s=WAIT_S, **kwargs)
        except KVError as exc:
            assert exc.status is expected, f"{method}{args[:3]}: expected {expected}, got {exc!r}"
            return None
        assert expected is None, f"{method}{args[:3]}: expected {expected}, got success {result!r}"
        return result

    def refusal(self, collection: str) -> Status | None:
        return None if collection in self.live else Status.UNKNOWN_COLLECTION

    def cas_for(self, kind: str, slot: Slot) -> int:
        doc = self.docs.get(slot)
        current = doc.cas if doc is not None else 0x1234_0000
        if kind == "none":
            return 0
        if kind == "lock":
            return self.locks.get(slot, current)
        return current if kind == "right" else current ^ WRONG_CAS_BIT

    def lock_and_cas(self, slot: Slot, cas: int) -> Status | None:
        """The lock, then the CAS, as the engine checks an existing document before writing it."""
        lock = self.locks.get(slot)
        if lock is not None:
            return None if cas == lock else Status.LOCKED
        if cas and cas != self.docs[slot].cas:
            return Status.KEY_EEXISTS
        return None

    def mutated(self, slot: Slot, out, doc: Doc | None, level: int = 0) -> None:
        """Record a successful mutation: a new CAS, above every earlier one of its vbucket; no lock."""
        assert out.cas not in (0, CAS_LOCKED)
        assert out.cas > self.max_cas.get(out.vbucket, 0), "CAS went backwards in a vbucket"
        self.max_cas[out.vbucket] = out.cas
        self.locks.pop(slot, None)
        if doc is None:
            self.docs.pop(slot, None)
        else:
            self.docs[slot] = doc
        self.changed(durable=level == PERSIST_TO_MAJORITY)

    # -- what a power cut may go back to ---------------------------------------------------------
    def state(self) -> State:
        return dict(self.docs), frozenset(self.live)

    def changed(self, *, durable: bool = False) -> None:
        self.history.append(self.state())
        if durable:  # acknowledged only once fsynced, with everything appended before it
            self.floor = len(self.history) - 1

    def all_durable(self) -> None:
        self.history, self.floor = [self.state()], 0

    @staticmethod
    def view_of(state: State) -> dict:
        docs, live = state
        return {
            (collection, key): ("unknown" if collection not in live else docs.get((collection, key), "absent"))
            for collection in COLLECTIONS
            for key in KEYS
        }

    def observe(self) -> dict:
        """What the node holds now, in the shape of `view_of` (taken right after a restart: no locks)."""
        bucket = self.node.bucket("default")
        seen = {}
        for collection in COLLECTIONS:
            for key in KEYS:
                try:
                    got = bucket.call("get", SCOPE, collection, key, time.time())
                except KVError as exc:
                    assert exc.status in (Status.KEY_ENOENT, Status.UNKNOWN_COLLECTION), exc
                    seen[(collection, key)] = "absent" if exc.status is Status.KEY_ENOENT else "unknown"
                    continue
                seen[(collection, key)] = Doc(got.value, got.flags, got.expiry, got.cas)
        return seen

    # -- whole-document writes ---------------------------------------------------------------
    @rule(collection=collections, key=keys, value=values, flag=flags, expiry=expiries, level=levels)
    def insert(self, collection, key, value, flag, expiry, level):
        slot = (collection, key)
        expected = self.refusal(collection) or (Status.KEY_EEXISTS if slot in self.docs else None)
        out = self.call(
            expected, "insert", SCOPE, collection, key, value, flag, time.time(), expiry=expiry, level=level
        )
        if out is not None:
            self.mutated(slot, out, Doc(value, flag, expiry, out.cas), level)

    @rule(collection=collections, key=keys, value=values, flag=flags, expiry=expiries, level=levels)
    def upsert(self, collection, key, value, flag, expiry, level):
        slot = (collection, key)
        expected = self.refusal(collection) or (self.lock_and_cas(slot, 0) if slot in self.docs else None)
        out = self.call(
            expected, "upsert", SCOPE, collection, key, value, flag, time.time(), expiry=expiry, level=level
        )
        if out is not None:
            self.mutated(slot, out, Doc(value, flag, expiry, out.cas), level)

    @rule(collection=collections, key=keys, value=values, flag=flags, cas=cas_kinds, level=levels)
    def replace(self, collection, key, value, flag, cas, level):
        slot = (collection, key)
        cas = self.cas_for(cas, slot)
        expected = self.refusal(collection) or (
            Status.KEY_ENOENT if slot not in self.docs else self.lock_and_cas(slot, cas)
        )
        out = self.call(expected, "replace", SCOPE, collection, key, value, flag, time.time(), cas=cas, level=level)
        if out is not None:
            self.mutated(slot, out, Doc(value, flag, 0, out.cas), level)

    @rule(collection=collections, key=keys, cas=cas_kinds, level=levels)
    def remove(self, collection, key, cas, level):
        slot = (collection, key)
        cas = self.cas_for(cas, slot)
        expected = self.refusal(collection) or (
            Status.KEY_ENOENT if slot not in self.docs else self.lock_and_cas(slot, cas)
        )
        out = self.call(expected, "remove", SCOPE, collection, key, time.time(), cas=cas, level=level)
        if out is not None:
            self.mutated(slot, out, None, level)

    # -- locks ---------------------------------------------------------------------------------
    @rule(collection=collections, key=keys)
    def get_and_lock(self, collection, key):
        slot = (collection, key)
        expected = self.refusal(collection) or (
            Status.KEY_ENOENT if slot not in self.docs else Status.LOCKED if slot in self.locks else None
        )
        out = self.call(expected, "get_and_lock", SCOPE, collection, key, LOCK_TIME_S, time.time())
        if out is not None:
            doc = self.docs[slot]
            assert (out.value, out.flags) == (doc.value, doc.flags)
            assert out.cas not in (0, doc.cas, CAS_LOCKED)
            self.locks[slot] = out.cas

    @rule(collection=collections, key=keys, cas=st.sampled_from(["none", "wrong", "lock"]))
    def unlock(self, collection, key, cas):
        slot = (collection, key)
        cas = self.cas_for(cas, slot)
        if self.refusal(collection) or slot not in self.docs:
            expected = self.refusal(collection) or Status.KEY_ENOENT
        elif not cas:
            expected = Status.EINVAL
        elif slot not in self.locks:
            expected = Status.NOT_LOCKED
        else:
            expected = None if cas == self.locks[slot] else Status.LOCKED
        self.call(expected, "unlock", SCOPE, collection, key, cas, time.time())
        if expected is None:
            del self.locks[slot]

    # -- expiry and binary operations ----------------------------------------------------------
    @rule(collection=collections, key=keys, expiry=expiries)
    def touch(self, collection, key, expiry):
        slot = (collection, key)
        doc = self.docs.get(slot)
        expected = self.refusal(collection) or (Status.KEY_ENOENT if doc is None else self.lock_and_cas(slot, 0))
        out = self.call(expected, "touch", SCOPE, collection, key, expiry, time.time())
        if out is None:
            return
        if expiry == doc.expiry:
            assert out.cas == doc.cas  # the same expiry again changes nothing
        else:
            self.mutated(slot, out, Doc(doc.value, doc.flags, expiry, out.cas))

    @rule(
        collection=collections,
        key=keys,
        delta=st.integers(-50, 50) | st.sampled_from([UINT64 - 1, -(UINT64 - 1)]),
        initial=st.none() | st.integers(0, 100),
        level=levels,
    )
    def counter(self, collection, key, delta, initial, level):
        slot = (collection, key)
        doc = self.docs.get(slot)
        number = None
        if doc is None:
            expected = self.refusal(collection) or (Status.KEY_ENOENT if initial is None else None)
            number = initial
        else:
            old = counter_value(doc.value)
            expected = self.refusal(collection) or self.lock_and_cas(slot, 0)
            if expected is None and old is None:
                expected = Status.DELTA_BADVAL
            elif old is not None:
                number = (old + delta) % UINT64 if delta >= 0 else max(old + delta, 0)
        out = self.call(expected, "counter", SCOPE, collection, key, delta, initial, time.time(), level=level)
        if out is not None:
            assert out.counter == number
            new_flags, new_expiry = (COUNTER_FLAGS, 0) if doc is None else (doc.flags, doc.expiry)
            self.mutated(slot, out, Doc(b"%d" % number, new_flags, new_expiry, out.cas), level)

    @rule(
        collection=collections, key=keys, data=st.binary(max_size=6), prepend=st.booleans(), cas=cas_kinds, level=levels
    )
    def append(self, collection, key, data, prepend, cas, level):
        slot = (collection, key)
        doc = self.docs.get(slot)
        cas = self.cas_for(cas, slot)
        expected = self.refusal(collection) or (Status.NOT_STORED if doc is None else self.lock_and_cas(slot, cas))
        out = self.call(
            expected, "concat", SCOPE, collection, key, data, time.time(), prepend=prepend, cas=cas, level=level
        )
        if out is not None:
            value = data + doc.value if prepend else doc.value + data
            self.mutated(slot, out, Doc(value, doc.flags, doc.expiry, out.cas), level)

    # -- collections ---------------------------------------------------------------------------
    @initialize(level=levels)
    def start_with_every_key_of_two_collections_written(self, level):
        """c1 exists and every key holds a number, so most operations find a document to act on."""
        self.create_collection("c1")
        for collection in ("_default", "c1"):
            for number, key in enumerate(KEYS):
                self.upsert(collection, key, b"%d" % number, 0, 0, level)

    def create_collection(self, name):
        expected = Status.COLLECTION_EXISTS if name in self.live else None
        self.call(expected, "change_manifest", lambda m: m.create_collection(SCOPE, name))
        if expected is None:
            self.live.add(name)
            self.changed()

    @precondition(lambda self: "c2" not in self.live)
    @rule()
    def create_c2(self):
        self.create_collection("c2")

    @precondition(lambda self: "c2" in self.live)
    @rule(name=st.just("c2"))
    def drop_collection(self, name):
        expected = None if name in self.live else Status.UNKNOWN_COLLECTION
        self.call(expected, "change_manifest", lambda m: m.drop_collection(SCOPE, name))
        self.live.discard(name)
        for slot in [slot for slot in self.docs if slot[0] == name]:
            del self.docs[slot]
            self.locks.pop(slot, None)
        self.changed()

    # -- checkpoints and restarts --------------------------------------------------------------
    @rule()
    def checkpoint(self):
        assert self.node.bucket("default").checkpoint() is True
        self.all_durable()  # a checkpoint is applied only once the WAL is fsynced past it

    @rule()
    def clean_reopen(self):
        node, self.node = self.node, None
        node.close()
        self.node = self.open_node()
        self.locks.clear()
        self.all_durable()

    @rule()
    def crash_reopen(self):
        """A power cut once every acknowledged write is fsynced: nothing may be lost."""
        node, self.node = self.node, None
        crash_node(node)
        self.node = self.open_node()
        self.locks.clear()
        self.all_durable()

    @rule()
    def power_cut_reopen(self):
        """A power cut at any moment: the node comes back as of some acknowledged state no older
        than the last persist-level write (or checkpoint, or restart), with that state's CAS."""
        node, self.node = self.node, None
        crash_node(node, sync=False)
        self.node = self.open_node()
        self.locks.clear()
        seen = self.observe()
        for index in range(len(self.history) - 1, self.floor - 1, -1):
            if self.view_of(self.history[index]) == seen:
                docs, live = self.history[index]
                self.docs, self.live = dict(docs), set(live)
                break
        else:
            newest = self.view_of(self.history[-1])
            diff = {slot: (seen[slot], newest[slot]) for slot in seen if seen[slot] != newest[slot]}
            raise AssertionError(
                f"after the power cut the node matches none of the last {len(self.history) - self.floor} "
                f"acknowledged states; (seen, newest) differ at {diff}"
            )
        self.max_cas.clear()  # CAS values of lost writes may be handed out again: nothing to hold to
        self.all_durable()

    # -- the invariant -------------------------------------------------------------------------
    @invariant()
    def every_key_reads_as_the_model_says(self):
        """get and exists of every key of every live collection agree with the model."""
        if self.node is None:
            return
        bucket = self.node.bucket("default")
        for collection in sorted(self.live):
            for key in KEYS:
                slot = (collection, key)
                doc = self.docs.get(slot)
                present, exists_cas = bucket.call("exists", SCOPE, collection, key, time.time())
                assert present is (doc is not None), f"{slot}: exists says {present}; the model holds {doc}"
                try:
                    got = bucket.call("get", SCOPE, collection, key, time.time())
                except KVError as exc:
                    assert exc.status is Status.KEY_ENOENT, f"{slot}: {exc!r}"
                    assert doc is None, f"{slot} is gone; the model holds {doc}"
                    continue
                assert doc is not None, f"{slot} reads {got}; the model holds nothing"
                cas = CAS_LOCKED if slot in self.locks else doc.cas
                assert (got.value, got.flags, got.expiry, got.cas) == (doc.value, doc.flags, doc.expiry, cas), slot
                assert exists_cas == cas, slot


EmbeddedNodeAgainstADict.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_embedded_node_against_a_dict = EmbeddedNodeAgainstADict.TestCase
