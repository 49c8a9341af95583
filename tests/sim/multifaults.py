"""The faults of a multi-node run: when each fires, what it does, and the hard failover.

Owns the fault schedule (`run_faults`, a SimThread). The faults are swarm-chosen per seed
(multiconfig.py): replica SIGKILL, replica power cut, replica clean restart, message drops
(a rate, not an event: each drop breaks its stream), partitions between the active and a
replica (healed before or after the keepalive), slow disks on any node, and (`failover`, at
most once per run) a crash of the active followed by a hard failover:
1. `n1` stops, SIGKILL (its page cache survives) or power cut (its unsynced bytes go);
   sometimes a replica loses power at the same instant (a rack losing power) and restarts
   before the failover;
2. after an auto-failover delay the cluster manager's choice is made as the real one makes
   it: each survivor reports its copies (`node_control.vbucket_stats`), turned into (HPS, high
   seqno) as `manager_failover.gather_positions` does, and `vbmap.failover` picks the new map
   (failover.py). The promoted replica's engine is set ACTIVE with the new chain (it takes
   over its pending prepares with no deadline); the other replica re-streams from it and rolls
   back if the real rollback decision says so;
3. later `n1` restarts and rejoins as a replica in each chain's empty slot; its copies roll
   back to what the new actives hold (through the real rollback decision and consumer core).
After a failover, replica faults hit only nodes that are the active of nothing (promoted
actives never stop in this version), and partitions cut one such node from the others.

Also owns carrying a failover out (`fail_over`, `rejoin`): the new map applied through
`set_topology`, the links re-synced, and at each promotion the vbucket's truth moved to the
promoted node (`NodeHistory.adopt` of the old active's records up to the seqno it held),
its copy checked (`check_copy`) and every acknowledged write past it judged against the
guarantee table (`failover.failover_loss_allowed`).

Must never: choose who is promoted (the real planner does, through failover.py) or draw
randomness from anything but the run's PRNG.
"""

from __future__ import annotations

from durakv.engine.durability import Chain
from durakv.engine.keys import vbucket_of
from durakv.engine.records import ITEM_KINDS
from durakv.engine.vbucket import VBState
from durakv.replication import vbmap

from . import failover as fo
from .checker import Entry, Tally, Violation
from .cluster import SimNode
from .multichecks import NodeHistory, check_copy
from .multicluster import MultiCluster
from .multiconfig import ACTIVE, NODES, REPLICA_NODES, MultiConfig, describe_chain, describe_map, pick
from .network import SimNetwork
from .replication_shell import Replication
from .simclock import SimClock
from .workload import Workload

RACK_POWER_PROBABILITY = 0.3  # of a replica losing power at the same instant as the active
FAILOVER_WEIGHT = 3  # the failover fault is this many times as likely as each other one, until it fires
FAILOVER_DELAY_S = (0.001, 0.3)  # from the active's crash to the failover (the auto-failover timeout)
REJOIN_DELAY_S = (0.001, 0.5)  # from the failover to the failed node's restart as a replica


def run_faults(clock: SimClock, cluster: MultiCluster, replication: Replication, net: SimNetwork,
               config: MultiConfig, workload: Workload, tally: Tally, until):  # fmt: skip
    """The fault injector (a SimThread): one of the run's faults every `fault_interval_s`, until `until()`."""
    kinds = tuple(kind for kind in config.faults if kind != "drop")  # drops are a rate, not an event
    if "failover" in kinds:
        kinds += ("failover",) * (FAILOVER_WEIGHT - 1)  # so that it usually fires before the clients finish
    prng = clock.prng
    while kinds:
        yield clock.uniform(*config.fault_interval_s)
        if until():
            return
        kind = pick(prng, kinds)
        cluster.faults_fired.append(kind)
        if kind == "failover":
            kinds = tuple(k for k in kinds if k != "failover")  # one per run
            yield from _fail_over_active(clock, cluster, replication, workload, tally)
            continue
        if kind == "slowdisk":
            node = pick(prng, list(cluster.nodes.values()))
            node.disk.profile.slow = True
            clock.log(node.node_id, "disk turns slow")
            yield clock.uniform(0.2, 2.0)
            node.disk.profile.slow = False
            clock.log(node.node_id, "disk back to normal")
            continue
        replica = _fault_target(cluster, prng)
        if replica is None:
            continue
        if kind == "partition":
            others = [ACTIVE] if not cluster.failovers else [n for n in NODES if n != replica.node_id]
            net.partition(others, [replica.node_id])
            yield clock.uniform(0.0, 2 * config.network.keepalive_s)
            net.heal()
            continue
        if not replica.up or replica.stopping:
            continue
        if kind == "restart":
            replication.stop_node(replica, "clean")
            yield from replica.shutdown()
        else:
            replication.stop_node(replica, "process" if kind == "crash" else "power")
        yield clock.uniform(0.001, 0.3)
        replication.start_node(replica)


def _fault_target(cluster: MultiCluster, prng) -> SimNode | None:
    """The node a replica fault hits: a replica (after a failover: one that is the active of
    nothing; promoted actives never stop in this version)."""
    if not cluster.failovers:
        return cluster.nodes[pick(prng, REPLICA_NODES)]
    candidates = cluster.pure_replicas()
    return cluster.nodes[pick(prng, candidates)] if candidates else None


def _fail_over_active(clock: SimClock, cluster: MultiCluster, replication: Replication, workload: Workload,
                      tally: Tally):  # fmt: skip
    """The active crashes (SIGKILL or power cut; sometimes a replica loses power at the same
    instant, a rack losing power), the cluster manager fails it over, and it later restarts
    and rejoins as a replica of its vbuckets."""
    prng = clock.prng
    failed = cluster.nodes[ACTIVE]
    if not failed.serving:
        return
    crash = pick(prng, ["process", "power"])
    rack = None
    if prng.random() < RACK_POWER_PROBABILITY:
        rack = cluster.nodes[pick(prng, REPLICA_NODES)]
        rack = rack if rack.serving else None
    clock.log("sim", f"the active {failed.node_id} stops ({crash}){f'; {rack.node_id} loses power' if rack else ''}")
    replication.stop_node(failed, crash)
    if rack is not None:
        replication.stop_node(rack, "power")
    yield clock.uniform(*FAILOVER_DELAY_S)
    if rack is not None:
        replication.start_node(rack)  # back before the manager asks the survivors for their seqnos
    fail_over(replication, failed.node_id, crash, workload.writes, tally)
    yield clock.uniform(*REJOIN_DELAY_S)
    rejoin(replication, failed.node_id)


# -- carrying out a failover ------------------------------------------------------------------
def fail_over(replication: Replication, failed: str, crash: str, writes, tally: Tally) -> None:
    """Hard failover of the stopped node `failed`: the planner promotes, the engines follow."""
    before = tuple(replication.cluster.chains)
    positions = {
        node_id: fo.replica_positions(node.engine, node_id, replication.consumer_hps(node_id))
        for node_id, node in replication.cluster.nodes.items()
        if node_id != failed and node.serving
    }
    if replication.config.promote_worst:
        positions = fo.inverted(positions)
    after = fo.promote(before, failed, positions)
    event = fo.FailoverEvent(failed, replication.clock.time, crash, before, after)
    replication.cluster.failovers.append(event)
    replication.clock.log("sim", f"failover of {failed}: positions {positions} -> {describe_map(after)}")
    replication.cluster.chains[:] = after
    replication.sync_links()
    for vb, (old, new) in enumerate(zip(before, after, strict=True)):
        if new is None:
            raise Violation(f"failover of {failed}: vbucket {vb} lost every copy")
        if old is not None and old.active != new.active:
            _promote(replication, vb, old, new, writes, tally, event)
        elif old != new:
            engine = replication.cluster.nodes[new.active].engine
            assert engine is not None
            engine.set_topology(vb, VBState.ACTIVE, new)
    history = replication.cluster.nodes[failed].history
    assert isinstance(history, NodeHistory)
    history.judged = set()  # it comes back as a replica of everything
    replication.cluster.nodes[failed].keys = []


def _promote(replication: Replication, vb: int, old: Chain, new: Chain, writes, tally: Tally,
             event: fo.FailoverEvent) -> None:  # fmt: skip
    node = replication.cluster.nodes[new.active]
    engine = node.engine
    assert node.serving and engine is not None, f"{node.node_id} promoted while down"
    high = engine.vbuckets[vb].high_seqno
    before = replication.truth_history(vb)
    assert not before.seeded, "one failover per run"
    if high > before.vb_high[vb]:
        raise Violation(f"{node.node_id} holds vb{vb} up to {high}; the active only wrote {before.vb_high[vb]}")
    prefix = [e for e in before.entries if e.record.vbucket == vb and e.record.kind in ITEM_KINDS]
    kept = [e for e in prefix if e.record.seqno <= high]
    history = node.history
    assert isinstance(history, NodeHistory)
    copies = history.adopt(vb, kept)
    replication.truth[vb] = node.node_id
    for other in replication.cluster.nodes.values():
        assert isinstance(other.history, NodeHistory)
        other.history.forget_completions(vb, high)  # the old active's branch past `high` is gone
    check_copy(engine, history, vb, _keys(replication, vb), f"{node.node_id} promoted", "at the failover")
    _judge_losses(replication, vb, old, copies, {id(e) for e in prefix if e.record.seqno > high}, writes, tally, event)
    replication.clock.log("sim", f"vb{vb}: {node.node_id} promoted at seqno {high} of {before.vb_high[vb]}")
    engine.set_topology(vb, VBState.ACTIVE, new)
    replication.small_feeds(engine)


def _keys(replication: Replication, vb: int) -> list[bytes]:
    workload = replication.cluster.nodes[ACTIVE].workload
    assert workload is not None
    return [key for key in workload.keys if vbucket_of(key, replication.config.bucket.num_vbuckets) == vb]


def _judge_losses(replication: Replication, vb: int, chain: Chain, copies: dict[Entry, Entry], beyond: set[int],
                  writes, tally: Tally, event: fo.FailoverEvent) -> None:  # fmt: skip
    """Every write of `vb` now points at the new truth; an acknowledged one past the promoted
    copy must have been allowed to go (failover.failover_loss_allowed)."""
    for write in writes:
        entry = write.entry
        if entry is None:
            continue
        copy = copies.get(entry)
        if copy is not None:
            write.entry = copy
            if write.outcome == "ack":
                tally.add(write.level, "survived_failover")
            continue
        if id(entry) not in beyond:
            continue
        why = f"{entry.describe()} is past what {chain.active}'s successor held at the failover"
        replication.failover_lost[write.id] = why
        if write.outcome == "ack" and not fo.failover_loss_allowed(
            write, chain, replication.cluster.memory_losses, event.time
        ):
            raise Violation(
                f"acknowledged {write.level.name} {write.describe()} lost by the failover of {event.failed} "
                f"({event.crash} crash at t={event.time:.6f}): {why}; no replica of {describe_chain(chain)} "
                "lost its memory since the request"
            )


def rejoin(replication: Replication, node_id: str) -> None:
    """The failed node restarts and goes back into every chain with an empty slot, as a replica."""
    before = tuple(replication.cluster.chains)
    after = vbmap.add_back(before, node_id)  # what `durakv cluster recover` applies
    replication.cluster.chains[:] = after
    replication.clock.log("sim", f"{node_id} rejoins: {describe_map(after)}")
    replication.sync_links()
    for vb, (old, new) in enumerate(zip(before, after, strict=True)):
        if new is not None and old != new:
            engine = replication.cluster.nodes[new.active].engine
            assert engine is not None
            engine.set_topology(vb, VBState.ACTIVE, new)
    replication.start_node(replication.cluster.nodes[node_id])
