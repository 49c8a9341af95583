"""Multi-node runs: three nodes, the real engine and the real stream cores, one seed.

    python -m tests.sim.run --multinode --seed N [--steps M] [--quiet] [--seeds K [--keep-going]]
    python -m tests.sim.multinode --seed N ...            (the same)

What a run is. Three `SimNode`s (real `BucketEngine` over `SimLog`/`SimStore`/`SimDisk`), one
bucket of 1-8 vbuckets with 1 or 2 replicas. The map (`MultiCluster.chains`) is set through
`engine.set_topology`: `n1` starts as the active of every vbucket, each vbucket's replicas are
taken from `n2`/`n3` (rotating when there is one replica slot), a node outside a vbucket's
chain holds it DEAD. Every (replica node, vbucket) pair has its own `SimNetwork` stream to the
vbucket's current active, carrying one `StreamConsumer` (replica end) and one `StreamProducer`
(active end), wired as replication_shell.py describes. Faults (swarm-chosen per seed; see
multifaults.py): replica SIGKILL, replica power cut, replica clean restart, message drops,
partitions between the active and a replica, slow disks on any node, and (`failover`, at
most once per run) a crash of the active followed by a hard failover by the real planner and,
later, the failed node's rejoin as a replica.

The pieces:
- multiconfig.py: the nodes, the starting map, and the configuration each seed draws;
- multicluster.py: `MultiCluster`, the three nodes and the vbucket map;
- replication_shell.py: `Replication`, the links and their streams between the engines;
- multifaults.py: the fault schedule, and carrying out (and judging) the failover;
- multichecks.py: `NodeHistory` and the multi-node checks listed below;
- failover.py: the planner's choice, the rejoin, and the guarantee table as a function;
- this module: one run (`run_multinode`) and the command line.

The truth of a vbucket is one history (`Replication.truth_history`): the old active's records
until the failover; then the promoted node's, which adopts (`NodeHistory.adopt`) the old
active's records up to the seqno it held and from then on is judged record by record as an
active is. Writes pointing at a record past that seqno are lost by the failover.

Which acknowledged writes must survive a failover (checked at the failover, `failover.py`
`failover_loss_allowed`; "memory loss" = SIGKILL or power cut of that replica between the
write's request and the failover; the old active's own copy never counts: it rolls back):

| level | active SIGKILL | active power cut | ... and a replica lost power at the same instant |
|---|---|---|---|
| NONE | may be lost | may be lost | may be lost |
| MAJORITY | survives unless a replica of the chain had a memory loss | same | may be lost (that is a memory loss) |
| MAJORITY_AND_PERSIST_TO_ACTIVE | as MAJORITY: the active's fsync dies with its copy | same | may be lost |
| PERSIST_TO_MAJORITY | survives | survives | survives (a replica fsynced it before the ack) |

Why: an acknowledged SyncWrite is held by a majority of its chain, the active and at least one
replica (received, or fsynced for PERSIST_TO_MAJORITY). Every replica's copy is a prefix of
the old active's history, and the planner promotes the highest position, so the promoted copy
holds every record some surviving replica holds. A replica keeps a received record across
anything but its own memory loss, and an fsynced one across everything. Never, whatever the
faults: a record the promoted copy lacks that was not written past it, an acknowledged
SyncWrite whose prepare survived that ends aborted or pending, an ambiguous one left pending,
a completion flipped on the surviving history.

Checked:
- every active's history, as in single-node runs (every record, every answer, every read);
  before a failover that is `n1`'s, after it the promoted nodes' for their vbuckets;
- at every restart: recovery cut the node's WAL exactly where the disk model says
  (History.recovered), and each replica vbucket still holds at least the persisted seqno it
  acknowledged (a persisted ack is a promise the replica keeps across a power cut);
- at a failover: the promoted copy is exactly the old active's history up to its high seqno
  (documents, pending prepares), and every acknowledged write past it was allowed to go
  (the table above);
- at the end, before anything heals: every replica (node that is the active of nothing) loses
  power at once and restarts; every acknowledged PERSIST_TO_MAJORITY write is still held by a
  majority of its chain (the active, plus replicas whose recovered copy reaches its prepare);
  one acknowledged before a failover is held by the new active (it was judged at the failover;
  the failed node's copy is gone and the node that rejoined made it no promise);
- convergence, twice (after the faults stop and after a final SIGKILL of every replica): once
  streams drain and promoted actives have recommitted what they took over, each replica's copy
  of each vbucket (and each promoted active's own) has the truth's high seqno, exactly its
  committed documents and pending prepares; so a rejoined node rolled back whatever the new
  active never had;
- every acknowledgement (check_acknowledgements against the truth: no acknowledged write lost
  but by a failover the table allows, no acknowledged SyncWrite aborted or left pending,
  ambiguous ones committed or absent, all or nothing);
- completions never flip: every COMMIT/ABORT a replica copy ever logged, unless a rollback or
  a failover discarded the branch it was on, matches the truth's completion of that prepare.

Runs without a failover check exactly what they checked before failover was modelled.

Must never: decide what is right by asking an engine (the histories are the oracle; the
engines only report the positions the cluster manager would be told).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .checker import Tally, Violation
from .multichecks import (
    check_completions,
    check_convergence,
    check_failover_acknowledgements,
    check_persist_to_majority,
)
from .multicluster import MultiCluster
from .multiconfig import ACTIVE, REPLICA_NODES, MultiConfig, make_config
from .multifaults import run_faults
from .network import SimNetwork
from .replication_shell import Replication
from .simclock import SimClock
from .workload import Workload

__all__ = ["MultiConfig", "MultiNodeFailure", "MultiResult", "main", "run_multinode"]

STEPS_DEFAULT = 150
CONVERGE_S = 120.0  # simulated seconds the streams get to drain once the faults stop
TIME_MAX_S = 100_000.0
TRACE_TAIL_LINES = 60


@dataclass
class MultiResult:
    config: MultiConfig
    trace: list[str]
    tally: Tally
    stats: dict[str, object] = field(default_factory=dict)

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()


class MultiNodeFailure(AssertionError):
    """A multi-node run broke a guarantee; the message names the seed and the replay command."""

    def __init__(self, config: MultiConfig, error: BaseException, trace: list[str]) -> None:
        tail = "\n".join(trace[-TRACE_TAIL_LINES:])
        super().__init__(
            f"multi-node simulation failed: seed={config.seed}\n  replay: {config.replay_command()}\n"
            f"  {type(error).__name__}: {error}\n  config: {config.describe()}\n  last trace lines:\n{tail}"
        )
        self.config = config
        self.error = error


def run_multinode(
    seed: int, steps: int = STEPS_DEFAULT, *, trace: bool = True, adjust: Callable[[MultiConfig], None] | None = None
) -> MultiResult:
    """Run and check one seed; raises MultiNodeFailure on any violation. `adjust` (tests only)
    changes the drawn configuration; its runs are not replayed by the command line."""
    clock = SimClock(seed, trace=trace)
    config = make_config(clock, seed, steps)
    if adjust is not None:
        adjust(config)
    try:
        return _run(clock, config)
    except Exception as error:
        raise MultiNodeFailure(config, error, clock.trace) from error


def _run(clock: SimClock, config: MultiConfig) -> MultiResult:
    clock.log("sim", f"seed={config.seed} multinode {config.describe()}")
    cluster = MultiCluster(clock, config)
    net = SimNetwork(clock, config.network)
    replication = Replication(clock, cluster, net, config)
    workload = Workload(clock, cluster, config.workload)
    tally = Tally()
    for node in cluster.nodes.values():
        node.workload = workload
        node.keys = list(workload.keys) if node.node_id == ACTIVE else []  # replicas: judged by convergence
    for node in cluster.nodes.values():
        replication.start_node(node)
    net.options.break_probability = config.drop_probability
    schedule = run_faults(clock, cluster, replication, net, config, workload, tally, until=lambda: workload.done)
    faults = clock.spawn("faults", schedule)
    clock.run(until=lambda: workload.done and not faults.alive, time_max=TIME_MAX_S)
    assert workload.done and not faults.alive, f"the run did not finish within {TIME_MAX_S} simulated seconds"

    # Every replica loses power at once, before anything heals: PERSIST_TO_MAJORITY must hold.
    net.options.break_probability = 0.0
    net.heal()
    for node in cluster.nodes.values():
        node.disk.profile.slow = False
    replicas = cluster.pure_replicas()
    clock.log("sim", f"clients done; every replica ({' '.join(replicas)}) loses power")
    for node_id in replicas:
        node = cluster.nodes[node_id]
        if node.up:
            replication.stop_node(node, "power")
    for node_id in replicas:
        replication.start_node(cluster.nodes[node_id])
    check_persist_to_majority(cluster, replication, workload.writes, tally)

    _converge(clock, replication, "after the faults")
    check_convergence(cluster, replication, workload.keys, "after the faults")
    clock.log("sim", "converged; every replica is killed and restarted")
    for node_id in replicas:
        replication.stop_node(cluster.nodes[node_id], "process")
        replication.start_node(cluster.nodes[node_id])
    _converge(clock, replication, "after a SIGKILL of every replica")
    check_convergence(cluster, replication, workload.keys, "after a SIGKILL of every replica")
    check_failover_acknowledgements(replication, workload.writes, tally)
    check_completions(cluster, replication)
    links = replication.links.values()
    stats = {
        "sim_time_s": round(clock.time, 3),
        "events": clock.events_run,
        "writes": len(workload.writes),
        "faults": ",".join(cluster.faults_fired) or "-",
        "records": sum(cluster.nodes[node_id].history.count for node_id in sorted(set(replication.truth))),
        "replica_crashes": sum(len(cluster.nodes[n].history.crashes) for n in REPLICA_NODES),
        "stream_requests": sum(link.requests for link in links),
        "stream_breaks": net.breaks,
        "backfills": sum(link.backfills for link in links),
        "rollbacks": sum(link.rollbacks for link in links),
        "messages": net.delivered,
        "failovers": len(cluster.failovers),
    }
    for line in tally.lines():
        clock.log("sim", line)
    return MultiResult(config, clock.trace, tally, stats)


def _converge(clock: SimClock, replication: Replication, when: str) -> None:
    clock.run(until=replication.converged, time_max=clock.time + CONVERGE_S)
    if not replication.converged():
        raise Violation(
            f"{when}: the replicas did not converge within {CONVERGE_S} simulated seconds:\n    "
            + replication.describe_links()
        )


# -- the command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run --multinode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="client operations in the run")
    parser.add_argument("--quiet", action="store_true", help="no trace, only the summary")
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on (a sweep)")
    parser.add_argument("--keep-going", action="store_true", help="a sweep runs every seed and lists the failures")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    failed: list[int] = []
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            result = run_multinode(seed, args.steps, trace=not args.quiet or args.seeds == 1)
        except MultiNodeFailure as failure:
            print(failure, file=sys.stderr)
            failed.append(seed)
            if args.keep_going:
                continue
            return 1
        if args.seeds == 1:
            if not args.quiet:
                print("\n".join(result.trace))
            print(f"seed={seed} ok; {result.config.describe()}")
            print(" ".join(f"{k}={v}" for k, v in result.stats.items()))
            print("\n".join(result.tally.lines()))
            print(f"trace sha256={result.digest()}")
    elapsed_s = time.perf_counter() - started
    if failed:
        print(f"{len(failed)} of {args.seeds} seeds failed: {' '.join(map(str, failed))}", file=sys.stderr)
        return 1
    if args.seeds > 1:
        print(f"{args.seeds} seeds ok in {elapsed_s:.1f} s ({args.seeds / elapsed_s:.1f} seeds/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
