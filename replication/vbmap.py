"""A bucket's vbucket map: which node holds each vbucket's active and replica copies. Pure.

Owns the planner that lays out a new bucket (`plan_map`), hard failover of one node
(`failover`, DESIGN §6, reference §2.7 and §4.6), the auto-failover majority guard, the
per-node views that shells act on, and the map's JSON and client (index) forms. It does no
I/O, reads no clock and draws no random numbers: the same inputs give the same map.

A map is a tuple with one entry per vbucket: an engine `Chain` (the active, then
`num_replicas` replica slots, `None` for an empty slot), or `None` for a vbucket that lost
every copy (its active failed and no replica was left to promote; Couchbase's -1 active).

Invariants of a planned map (asserted by `plan_map`, property-tested):
- every chain has exactly `num_replicas` slots; the first `min(num_replicas, nodes - 1)`
  are filled, the rest `None` (too few nodes to place them anywhere legal);
- a node appears at most once in a chain, so a replica is never on its active's node;
- actives per node differ by at most one; replicas per node differ by at most one; and the
  extra replicas go to the nodes with fewer actives, so total copies differ by at most one;
- among those choices, the replicas of each node's actives are spread over the other nodes,
  so a failover spreads the promoted actives instead of doubling one survivor's load.

Failover keeps each chain's slot count; surviving replicas keep their order and move up,
empty slots go last. It never invents a copy: a node only ever moves from replica to active.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from durakv.engine.durability import Chain
from durakv.engine.errors import EngineError
from durakv.engine.limits import NUM_REPLICAS_MAX, NUM_VBUCKETS_MAX

VBucketMap = tuple[Chain | None, ...]
Position = tuple[int, int]  # (high prepared seqno, high seqno) of one copy of a vbucket
# Per vbucket, the reachable copies' positions; or a function (vbucket, node) -> position,
# None when that node could not be asked.
Seqnos = Mapping[int, Mapping[str, Position]] | Sequence[Mapping[str, Position]] | Callable[[int, str], Position | None]

UNDEFINED_INDEX = -1  # an empty slot in the client (index) form, as Couchbase's vBucketMap


class VBucketMapError(EngineError):
    """A vbucket map, or the input to plan or change one, breaks a rule; nothing was changed."""


# -- planning ----------------------------------------------------------------------------
def plan_map(nodes: Sequence[str], num_vbuckets: int, num_replicas: int) -> VBucketMap:
    """Lay out `num_vbuckets` chains over `nodes` (in that order), balanced as the module says.

    Actives go round robin, so vbuckets `t*n .. t*n+n-1` form "round" t with one active per
    node. In a full round, slot s of the chain whose active is node a holds node
    a + 1 + ((t + floor(s*(n-1)/k)) mod (n-1)), k the filled slots: every node gets exactly
    one replica per slot per round; round after round each slot of a node's chains walks
    over all the other nodes (so the first replica -- the one promoted when positions tie
    -- is spread), and because the slots start evenly spaced round that ring, the replicas
    of a node's actives are spread over the others within one at every round's end. The
    last, partial round (m < n vbuckets) cannot be that regular; it is filled greedily
    against per-node quotas (see `_plan_partial_round`).
    """
    nodes = _check_nodes(nodes)
    _check_int("num_vbuckets", num_vbuckets, 1, NUM_VBUCKETS_MAX)
    _check_int("num_replicas", num_replicas, 0, NUM_REPLICAS_MAX)
    n = len(nodes)
    filled = min(num_replicas, n - 1)
    rounds, partial = divmod(num_vbuckets, n)
    pairs = [[0] * n for _ in range(n)]  # pairs[a][r]: replicas on r of vbuckets active on a
    spread = [s * (n - 1) // filled for s in range(filled)]  # slot s starts this far round the ring
    rows: list[list[int]] = []
    for t in range(rounds):
        for active in range(n):
            row = [active, *((active + 1 + (t + spread[s]) % (n - 1)) % n for s in range(filled))]
            rows.append(row)
            for replica in row[1:]:
                pairs[active][replica] += 1
    rows.extend(_plan_partial_round(n, partial, filled, pairs))

    empty = (None,) * (num_replicas - filled)
    chains = []
    for row in rows:
        assert len(set(row)) == len(row) == 1 + filled, f"bad chain {row}"
        chains.append(Chain(nodes[row[0]], (*(nodes[j] for j in row[1:]), *empty)))
    assert len(chains) == num_vbuckets
    return tuple(chains)


def _plan_partial_round(n: int, m: int, filled: int, pairs: list[list[int]]) -> list[list[int]]:
    """Chains for the last m < n vbuckets, whose actives are nodes 0..m-1.

    Every node already holds the same number of replicas (one per slot per full round), so
    balance needs each node's share of these m*filled replicas to be floor or ceil of the
    even split, with the ceil going first to the nodes that get no active here (m..n-1)
    so that total copies stay within one too. Each slot is filled with the eligible node of
    least slack (rows left where it could still take a replica, minus what it still owes)
    so that no quota is stranded in the rows where its node is the active; ties go to the
    node holding the fewest replicas of this active, then of this slot, then by rotation.
    """
    base, extra = divmod(m * filled, n)
    quota = [base + (1 if (j - m) % n < extra else 0) for j in range(n)]
    in_slot = [[0] * n for _ in range(filled)]
    rows = []
    for active in range(m):
        row = [active]
        for slot in range(filled):

            def preference(j: int, active: int = active, slot: int = slot) -> tuple[int, ...]:
                rows_left = m - active - (1 if active < j < m else 0)
                return (rows_left - quota[j], pairs[active][j], in_slot[slot][j], (j - active - 1 - slot) % n)

            candidates = [j for j in range(n) if j not in row and quota[j] > 0]
            assert candidates, f"no node left for slot {slot} of a partial-round chain: {quota}"
            replica = min(candidates, key=preference)
            quota[replica] -= 1
            pairs[active][replica] += 1
            in_slot[slot][replica] += 1
            row.append(replica)
        rows.append(row)
    assert not any(quota), f"replica quotas not met: {quota}"
    return rows


# -- failover ----------------------------------------------------------------------------
def failover(vbmap: VBucketMap, failed_node: str, seqnos: Seqnos | None = None) -> VBucketMap:
    """The map after hard failover of `failed_node`.

    Every slot of the failed node becomes empty. Where it was active, the surviving replica
    with the highest (HPS, high seqno) is promoted. A replica whose position is unknown
    (absent from `seqnos`, or the function returned None) ranks below every known one and
    is promoted only when no replica could be asked: it still holds the data, and leaving
    the vbucket without an active would throw that copy away. Ties go to the earlier slot.
    A vbucket with no replica left becomes `None` (lost). Chains without the node are kept.
    """
    position = _position_lookup(seqnos)
    result: list[Chain | None] = []
    for vb, chain in enumerate(vbmap):
        if chain is None or failed_node not in chain.defined_nodes():
            result.append(chain)
            continue
        survivors = [node for node in chain.replicas if node is not None and node != failed_node]
        active = chain.active
        if active == failed_node:
            if not survivors:
                result.append(None)
                continue
            ranked = [(_rank(position(vb, node), vb, node), -slot, node) for slot, node in enumerate(survivors)]
            active = max(ranked)[2]
            survivors.remove(active)
        width = len(chain.replicas)
        result.append(Chain(active, (*survivors, *(None,) * (width - len(survivors)))))
    assert len(result) == len(vbmap)
    return tuple(result)


def add_back(vbmap: VBucketMap, node: str) -> VBucketMap:
    """The map with `node` (recovered after a failover) in the first empty replica slot of every
    chain that does not hold it, so each vbucket gets back the copy it lost. Actives stay where
    they are (moving some back to `node` is rebalance); a lost vbucket (`None`) stays lost."""
    result: list[Chain | None] = []
    for chain in vbmap:
        if chain is None or node in chain.defined_nodes() or None not in chain.replicas:
            result.append(chain)
            continue
        replicas = list(chain.replicas)
        replicas[replicas.index(None)] = node
        result.append(Chain(chain.active, tuple(replicas)))
    return tuple(result)


def failover_preserves_majority(vbmap: VBucketMap, failed_nodes: Iterable[str]) -> bool:
    """Whether every chain keeps at least ceil(chain length / 2) defined nodes without `failed_nodes`.

    The guard that automatic failover applies (reference §2.7,
    `failover_preserve_durability_majority`): with 2 replicas only one node may go.
    Vbuckets already lost are ignored; they have nothing left to preserve.
    """
    failed = set(failed_nodes)
    for chain in vbmap:
        if chain is None:
            continue
        left = sum(1 for node in chain.defined_nodes() if node not in failed)
        if left < -(-(1 + len(chain.replicas)) // 2):
            return False
    return True


def _position_lookup(seqnos: Seqnos | None) -> Callable[[int, str], Position | None]:
    if seqnos is None:
        return lambda vb, node: None
    if callable(seqnos):
        return seqnos
    if isinstance(seqnos, Mapping):
        return lambda vb, node: seqnos.get(vb, {}).get(node)
    return lambda vb, node: seqnos[vb].get(node) if vb < len(seqnos) else None


def _rank(position: Position | None, vb: int, node: str) -> tuple[int, int, int]:
    if position is None:
        return (0, 0, 0)
    if (
        not isinstance(position, tuple | list)
        or len(position) != 2
        or not all(type(v) is int and v >= 0 for v in position)
        or position[0] > position[1]
    ):
        raise VBucketMapError(
            f"position of vbucket {vb} on {node} must be (hps, high_seqno) with 0 <= hps <= high_seqno, "
            f"not {position!r}"
        )
    return (1, position[0], position[1])


# -- views -------------------------------------------------------------------------------
def active_counts(vbmap: VBucketMap) -> dict[str, int]:
    """Active vbuckets per node (nodes with none are absent)."""
    counts: dict[str, int] = {}
    for chain in vbmap:
        if chain is not None:
            counts[chain.active] = counts.get(chain.active, 0) + 1
    return counts


def replica_counts(vbmap: VBucketMap) -> dict[str, int]:
    """Replica copies per node (nodes with none are absent)."""
    counts: dict[str, int] = {}
    for chain in vbmap:
        for node in chain.replicas if chain is not None else ():
            if node is not None:
                counts[node] = counts.get(node, 0) + 1
    return counts


def node_vbuckets(vbmap: VBucketMap, node: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(vbuckets `node` is active for, vbuckets it holds a replica of), each ascending."""
    active = tuple(vb for vb, chain in enumerate(vbmap) if chain is not None and chain.active == node)
    replica = tuple(vb for vb, chain in enumerate(vbmap) if chain is not None and node in chain.replicas)
    return active, replica


def replication_sources(vbmap: VBucketMap, node: str) -> dict[str, tuple[int, ...]]:
    """For a replica node: active node -> the vbuckets it copies from it (one stream per pair)."""
    sources: dict[str, list[int]] = {}
    for vb, chain in enumerate(vbmap):
        if chain is not None and node in chain.replicas:
            sources.setdefault(chain.active, []).append(vb)
    return {active: tuple(vbs) for active, vbs in sources.items()}


# -- encodings ---------------------------------------------------------------------------
def encode_map(vbmap: VBucketMap) -> list[list[str | None]]:
    """JSON form: one list per vbucket, [active, replica slots...], null for empty."""
    return [[chain.active, *chain.replicas] if chain is not None else None for chain in vbmap]


def decode_map(raw: Any, num_vbuckets: int, num_replicas: int, nodes: Iterable[str]) -> VBucketMap:
    """Parse and check the JSON form against the bucket's shape and the known nodes."""
    known = set(nodes)
    if not isinstance(raw, list) or len(raw) != num_vbuckets:
        raise VBucketMapError(f"a vbucket map must list {num_vbuckets} vbuckets")
    chains: list[Chain | None] = []
    for vb, entry in enumerate(raw):
        if entry is None:
            chains.append(None)
            continue
        if not isinstance(entry, list) or len(entry) != 1 + num_replicas:
            raise VBucketMapError(f"vbucket {vb}: a chain must have 1 + {num_replicas} slots, not {entry!r}")
        if not all(node is None or (isinstance(node, str) and node in known) for node in entry):
            raise VBucketMapError(f"vbucket {vb}: chain {entry!r} names a node that is not in the cluster")
        try:
            chains.append(Chain(entry[0], tuple(entry[1:])))
        except ValueError as exc:
            raise VBucketMapError(f"vbucket {vb}: {exc}") from exc
    return tuple(chains)


def index_form(vbmap: VBucketMap, server_list: Sequence[str], num_replicas: int) -> list[list[int]]:
    """The client form: per vbucket [active index, replica indexes...] into `server_list`, -1 for empty."""
    index = {node: i for i, node in enumerate(server_list)}
    width = 1 + num_replicas
    return [
        [UNDEFINED_INDEX if node is None else index[node] for node in (chain.active, *chain.replicas)]
        if chain is not None
        else [UNDEFINED_INDEX] * width
        for chain in vbmap
    ]


def _check_nodes(nodes: Sequence[str]) -> tuple[str, ...]:
    nodes = tuple(nodes)
    if not nodes:
        raise VBucketMapError("a vbucket map needs at least one node")
    if not all(isinstance(node, str) and node for node in nodes):
        raise VBucketMapError(f"node ids must be non-empty strings: {nodes!r}")
    if len(set(nodes)) != len(nodes):
        raise VBucketMapError(f"node ids must be distinct: {nodes!r}")
    return nodes


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise VBucketMapError(f"{name} must be an integer in {low}..{high}, not {value!r}")
