"""Simulated clients: random KV operations at random durability levels, every answer recorded.

Owns the requests and what each was answered. `clients` SimThreads each loop: think, pick a
key from a small key space (so writes contend: SYNC_WRITE_IN_PROGRESS, CAS mismatches,
fences across keys of one vbucket), pick insert / upsert / replace / remove / get and a
durability level, call the node that the cluster routes the key to, and wait for a pending
SyncWrite until it resolves, the node dies, or the client's own timeout (the server's
durability timeout / 0.9, as the SDK derives it) passes.

Each answer is judged at once against the node's `History` at the same instant:
- a refusal must be one that the history makes legal (`legal_refusals`) and must have
  written no record; a success must be legal too, and its record must carry exactly the
  request's key, value and the CAS and seqno the client was given;
- a get must read the history's last committed version.
Acknowledgements are kept as `Write`s (key, value, level, cas, time, and the history entry
that makes them durable: the mutation, or the SyncWrite's prepare), for the end-of-run check.

Must never: look into the engine to decide what an answer should have been.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durakv.engine.bucket import MutationOutcome
from durakv.engine.durability import Level
from durakv.engine.errors import KVError, Status
from durakv.engine.limits import DURABILITY_TIMEOUT_DEFAULT_MS
from durakv.engine.pending import Pending
from durakv.engine.records import Kind

from .checker import COLLECTION, SCOPE, Entry, History, Violation, check_read
from .simclock import SimClock, park

if TYPE_CHECKING:
    from .cluster import SimCluster, SimNode

OPS = ("insert", "upsert", "replace", "remove", "get")
UNAVAILABLE_BACKOFF_S = (0.005, 0.05)
CLIENT_TIMEOUT_FACTOR = 1 / 0.9  # the SDK sends 90 % of its own timeout as the durability timeout


@dataclass
class WorkloadOptions:
    clients: int = 4
    keys: int = 8
    ops: int = 300
    op_weights: tuple[float, ...] = (1.0, 3.0, 2.0, 1.0, 2.0)  # in OPS order
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # in Level order
    timeout_ms: tuple[int, int] = (100, 5_000)
    default_timeout_probability: float = 0.1  # no timeout sent: the server's 30 s default
    think_s: tuple[float, float] = (0.0, 0.004)
    cas_probability: float = 0.3
    value_pad_max: int = 120


@dataclass(eq=False)
class Write:
    """One write request and its answer."""

    id: int
    client: int
    op: str
    key: bytes
    value: bytes
    level: Level
    issued: float
    node: str
    cas_given: int = 0
    timeout_ms: int | None = None  # the durability timeout sent (None: the server's default)
    outcome: str = "pending"  # "ack" | "error" | "ambiguous"
    status: Status | None = None
    why: str = ""
    cas: int = 0
    seqno: int = 0
    acked_at: float | None = None
    entry: Entry | None = None  # the mutation, or the SyncWrite's prepare
    pending: Pending | None = field(default=None, repr=False)

    def describe(self) -> str:
        return (
            f"write #{self.id} ({self.op} {self.key!r} by c{self.client} at t={self.issued:.6f}, "
            f"cas={self.cas}, acked at {self.acked_at})"
        )


def legal_refusals(op: str, history: History, skey: bytes, cas_given: int) -> set[Status]:
    """The refusals the history makes legal for a write right now (empty: it must succeed).

    Order-agnostic on purpose: when several apply, any one of them is accepted."""
    doc = history.visible(skey)
    refusals = set()
    if skey in history.pending:
        refusals.add(Status.SYNC_WRITE_IN_PROGRESS)
    if op == "insert" and doc is not None:
        refusals.add(Status.KEY_EEXISTS)
    if op in ("replace", "remove"):
        if doc is None:
            refusals.add(Status.KEY_ENOENT)
        elif cas_given and doc.cas != cas_given:
            refusals.add(Status.KEY_EEXISTS)
    return refusals


class Workload:
    """The clients of one run and everything they were answered."""

    def __init__(self, clock: SimClock, cluster: SimCluster, options: WorkloadOptions) -> None:
        self.clock = clock
        self.cluster = cluster
        self.options = options
        self.keys = [b"k%d" % i for i in range(options.keys)]
        self.writes: list[Write] = []
        self.reads = 0
        self.unavailable = 0
        self._ops_left = options.ops
        self._cas_seen: dict[tuple[int, bytes], int] = {}
        self._waiting: dict[int, tuple[Write, SimNode, int]] = {}  # client -> what it waits for
        self.threads = [clock.spawn(f"c{i}", self._client(i)) for i in range(options.clients)]

    @property
    def done(self) -> bool:
        return not any(thread.alive for thread in self.threads)

    def node_down(self, node: SimNode) -> None:
        """A node stopped: clients waiting on it wake and answer their write ambiguous."""
        for client, (_, waited, _) in list(self._waiting.items()):
            if waited is node:
                self.threads[client].wake()

    # -- one client ---------------------------------------------------------------------
    def _client(self, client: int):
        clock, options, prng = self.clock, self.options, self.clock.prng
        while self._ops_left > 0:
            yield clock.uniform(*options.think_s)
            if self._ops_left <= 0:
                break
            key = self.keys[prng.randrange(len(self.keys))]
            op = prng.choices(OPS, options.op_weights)[0]
            node = self.cluster.route(key)
            if node is None or not node.serving:
                self.unavailable += 1  # the SDK retries until its deadline; so does this client
                clock.log(f"c{client}", f"{op} {key.decode()} -> node unavailable, retrying")
                yield clock.uniform(*UNAVAILABLE_BACKOFF_S)
                continue
            self._ops_left -= 1
            if op == "get":
                self._get(client, node, key)
                continue
            write = self._submit(client, node, op, key)
            if write.outcome != "pending":
                continue
            yield from self._wait(client, node, write)

    def _get(self, client: int, node: SimNode, key: bytes) -> None:
        engine, history = node.engine, node.history
        assert engine is not None
        count = history.count
        try:
            outcome = engine.get(SCOPE, COLLECTION, key, self.clock.now)
        except KVError as error:
            outcome = error
        self.reads += 1
        if history.count != count:
            raise Violation(f"{node.node_id}: get {key!r} wrote records")
        loc = engine.locate(SCOPE, COLLECTION, key)
        check_read(history, loc.skey, key, outcome)
        if not isinstance(outcome, KVError):
            self._cas_seen[(client, key)] = outcome.cas
        self.clock.log(f"c{client}", f"get {key.decode()} -> {_short(outcome)}")

    def _submit(self, client: int, node: SimNode, op: str, key: bytes) -> Write:
        clock, options, prng = self.clock, self.options, self.clock.prng
        engine, history = node.engine, node.history
        assert engine is not None
        level = prng.choices(list(Level), options.level_weights)[0]
        timeout_ms = None
        if not clock.chance(options.default_timeout_probability):
            timeout_ms = prng.randint(*options.timeout_ms)
        cas_given = 0
        if op in ("replace", "remove") and clock.chance(options.cas_probability):
            cas_given = self._cas_seen.get((client, key), 0)
        write_id = len(self.writes)
        value = b"" if op == "remove" else b"%s|w%d|" % (key, write_id) + b"." * prng.randint(0, options.value_pad_max)
        write = Write(write_id, client, op, key, value, level, clock.time, node.node_id, cas_given, timeout_ms)
        self.writes.append(write)
        loc = engine.locate(SCOPE, COLLECTION, key)
        refusals = legal_refusals(op, history, loc.skey, cas_given)
        if level is not Level.NONE and not self.cluster.durability_possible(key):
            refusals.add(Status.DURABILITY_IMPOSSIBLE)  # a chain left short by a failover
        count = history.count
        now = clock.now
        durability = {"level": int(level), "timeout_ms": timeout_ms}
        try:
            if op == "insert":
                result = engine.insert(SCOPE, COLLECTION, key, value, 0, now, **durability)
            elif op == "upsert":
                result = engine.upsert(SCOPE, COLLECTION, key, value, 0, now, **durability)
            elif op == "replace":
                result = engine.replace(SCOPE, COLLECTION, key, value, 0, now, cas=cas_given, **durability)
            else:
                result = engine.remove(SCOPE, COLLECTION, key, now, cas=cas_given, **durability)
        except KVError as error:
            if history.count != count:
                raise Violation(
                    f"{node.node_id}: {write.describe()} was refused ({error!r}) but wrote records"
                ) from None
            if error.status not in refusals:
                raise Violation(
                    f"{node.node_id}: {write.describe()} refused {error.status.name}; legal refusals: "
                    f"{sorted(s.name for s in refusals)}"
                ) from None
            write.outcome, write.status = "error", error.status
            self._log(write, f"refused {error.status.name}")
            return write
        if refusals:
            raise Violation(f"{node.node_id}: {write.describe()} succeeded, but the history requires one of {refusals}")
        if history.count == count:
            raise Violation(f"{node.node_id}: {write.describe()} succeeded without writing a record")
        entry = history.entries[count]
        expected_kind = Kind.PREPARE if level else (Kind.DELETION if op == "remove" else Kind.MUTATION)
        doc = entry.record.document
        if entry.record.kind is not expected_kind or entry.skey != loc.skey or doc.value != value:
            raise Violation(f"{node.node_id}: {write.describe()} wrote {entry.describe()}")
        write.entry = entry
        if isinstance(result, MutationOutcome):
            self._ack(write, result)
            return write
        assert isinstance(result, Pending) and level is not Level.NONE
        write.pending = result
        if result.done:
            self._resolved(write)
        else:
            self._log(write, f"pending (prepare seqno {doc.seqno})")
            node.sync_write_started()
        return write

    def _wait(self, client: int, node: SimNode, write: Write):
        pending = write.pending
        assert pending is not None
        incarnation = node.incarnation
        self._waiting[client] = (write, node, incarnation)
        thread = self.threads[client]
        pending.add_callback(lambda _p: thread.wake() if self._waiting.get(client, (None,))[0] is write else None)
        deadline = write.issued + self._client_timeout_s(write)
        while not pending.done and node.incarnation == incarnation and self.clock.time < deadline:
            yield park(deadline - self.clock.time)
        del self._waiting[client]
        if pending.done and node.incarnation == incarnation:
            self._resolved(write)
        elif node.incarnation != incarnation or not node.serving:
            self._ambiguous(write, "the node stopped")
        else:
            self._ambiguous(write, "client timeout")

    def _client_timeout_s(self, write: Write) -> float:
        timeout_ms = write.timeout_ms if write.timeout_ms is not None else DURABILITY_TIMEOUT_DEFAULT_MS
        return timeout_ms / 1000 * CLIENT_TIMEOUT_FACTOR

    def _resolved(self, write: Write) -> None:
        pending = write.pending
        assert pending is not None and pending.done
        if pending.error is not None:
            if pending.error.status is not Status.SYNC_WRITE_AMBIGUOUS:
                raise Violation(f"{write.describe()} resolved with {pending.error!r}")
            self._ambiguous(write, pending.error.message)
            return
        self._ack(write, pending.result)

    def _ack(self, write: Write, outcome: MutationOutcome) -> None:
        node = self.cluster.nodes[write.node]
        entry = write.entry
        assert entry is not None
        doc = entry.record.document
        if outcome.cas != doc.cas:
            raise Violation(f"{write.describe()} answered cas {outcome.cas}, its record has {doc.cas}")
        if write.level is Level.NONE:
            if outcome.seqno != doc.seqno:
                raise Violation(f"{write.describe()} answered seqno {outcome.seqno}, its record has {doc.seqno}")
        else:
            commit = node.history.by_place.get((entry.record.vbucket, outcome.seqno))
            if commit is None or commit.record.kind is not Kind.COMMIT or commit.prepare is not entry:
                raise Violation(f"{write.describe()} answered seqno {outcome.seqno}, which is not its commit")
        if entry.lost_by is not None:
            raise Violation(f"{write.describe()} acknowledged after its record was lost")
        entry.acked = True
        write.outcome, write.cas, write.seqno, write.acked_at = "ack", outcome.cas, outcome.seqno, self.clock.time
        self._cas_seen[(write.client, write.key)] = outcome.cas
        self._log(write, f"ack cas={outcome.cas} seqno={outcome.seqno}")

    def _ambiguous(self, write: Write, why: str) -> None:
        write.outcome, write.status, write.why = "ambiguous", Status.SYNC_WRITE_AMBIGUOUS, why
        self._log(write, f"ambiguous ({why})")

    def _log(self, write: Write, what: str) -> None:
        self.clock.log(f"c{write.client}", f"#{write.id} {write.op} {write.key.decode()} {write.level.name} -> {what}")


def _short(outcome) -> str:
    if isinstance(outcome, KVError):
        return outcome.status.name
    return f"cas={outcome.cas} {outcome.value[:12]!r}"
