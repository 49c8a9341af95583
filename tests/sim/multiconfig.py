"""What a multi-node run is made of: its nodes, the vbucket map it starts from, and the
configuration its seed draws (swarm testing: every seed picks its own mix).

Owns the swarm of multi-node runs. `make_config` draws, from the run's PRNG and in a fixed
order, the vbucket count and replica count (the starting map: `n1` the active of every
vbucket, its replicas taken from `n2`/`n3`, rotating when there is one replica slot), the
nodes' fsync policy, segment size and checkpoint cadence, the disk's speed and damage, the
clients, keys, level mix and timeouts, the network's latency and keepalive, the producer's
window, how many records a change feed keeps (`feed_records_max`: small runs reach the
backfill path) and the run's active faults. `MultiConfig.describe` and
`describe_chain`/`describe_map` are how a run, a chain and a map appear in traces and failures.

Must never: draw from anything but the run's PRNG, or change the order of the draws (a seed
would replay a different run).
"""

from __future__ import annotations

from dataclasses import dataclass

from durakv.engine.bucket import BucketConfig
from durakv.engine.durability import Chain

from .cluster import NodeOptions
from .network import NetworkOptions
from .simclock import SimClock
from .simdisk import DiskProfile
from .workload import WorkloadOptions

ACTIVE = "n1"  # the active of every vbucket until a failover
REPLICA_NODES = ("n2", "n3")
NODES = (ACTIVE, *REPLICA_NODES)
FAULT_KINDS = ("crash", "power", "restart", "drop", "partition", "slowdisk")
FAILOVER_PROBABILITY = 0.5  # of a run having the "failover" fault (the active crashes, a replica is promoted)


@dataclass
class MultiConfig:
    seed: int
    steps: int
    bucket: BucketConfig
    chains: list[Chain]
    node: NodeOptions
    disk: DiskProfile
    workload: WorkloadOptions
    network: NetworkOptions
    faults: tuple[str, ...]
    fault_interval_s: tuple[float, float]
    drop_probability: float
    window_bytes: int
    feed_records_max: int | None
    promote_worst: bool = False  # tests only: the failover promotes the replica the planner ranks lowest

    def replay_command(self) -> str:
        return f"python -m tests.sim.run --multinode --seed {self.seed} --steps {self.steps}"

    def describe(self) -> str:
        w, n, d = self.workload, self.node, self.disk
        chains = " ".join(f"{c.active}>{','.join(r for r in c.replicas if r)}" for c in self.chains)
        return (
            f"vbuckets={self.bucket.num_vbuckets} replicas={self.bucket.num_replicas} chains=[{chains}] "
            f"fsync={n.fsync_policy} segment_max={n.segment_size_max} checkpoint_every={n.checkpoint_interval_s:.3f}s "
            f"fsync_s={d.fsync_s} torn={d.torn_probability:.2f} clients={w.clients} keys={w.keys} "
            f"levels={tuple(round(x, 2) for x in w.level_weights)} timeout_ms={w.timeout_ms} "
            f"latency_s={self.network.latency_s} keepalive_s={self.network.keepalive_s} "
            f"drop={self.drop_probability} window={self.window_bytes} feed_max={self.feed_records_max} "
            f"faults={','.join(self.faults) or 'none'}"
        )


def pick(prng, options):
    """One of `options`, with a single `randrange` draw from `prng`."""
    return options[prng.randrange(len(options))]


def make_config(clock: SimClock, seed: int, steps: int) -> MultiConfig:
    prng = clock.prng
    vbuckets = pick(prng, [1, 2, 4, 4, 8])
    replicas = pick(prng, [1, 2])
    bucket = BucketConfig("default", num_vbuckets=vbuckets, num_replicas=replicas)
    chains = []
    for vb in range(vbuckets):
        order = REPLICA_NODES if vb % 2 == 0 else REPLICA_NODES[::-1]
        chains.append(Chain(ACTIVE, order[:replicas]))
    policy = pick(prng, ["always", "always", f"interval={prng.randint(1, 50)}", "never"])
    node = NodeOptions(
        fsync_policy=policy,
        segment_size_max=pick(prng, [1024, 2048, 8192, 65536]),
        checkpoint_interval_s=prng.uniform(0.02, 1.0),
        checkpoint_wal_wait_s=pick(prng, [0.5, 30.0]),
    )
    disk = DiskProfile(
        fsync_s=pick(prng, [(0.0001, 0.001), (0.0005, 0.004), (0.002, 0.015)]),
        torn_probability=prng.uniform(0.0, 0.5),
        zero_tail_probability=prng.uniform(0.0, 0.3),
        garbage_tail_probability=prng.uniform(0.0, 0.2),
    )
    levels = [prng.random() for _ in range(4)]
    workload = WorkloadOptions(
        clients=prng.randint(1, 6),
        keys=prng.randint(1, 16),
        ops=steps,
        level_weights=tuple(levels) if any(levels) else (1.0, 1.0, 1.0, 1.0),
        timeout_ms=pick(prng, [(20, 300), (100, 3_000), (1_000, 10_000)]),
        think_s=pick(prng, [(0.0, 0.0005), (0.0, 0.005), (0.0, 0.05)]),
    )
    network = NetworkOptions(
        latency_s=pick(prng, [(0.00005, 0.0005), (0.0001, 0.002), (0.001, 0.02)]),
        keepalive_s=pick(prng, [0.05, 0.3, 1.0]),
        bytes_in_flight_max=1 << 30,  # the producer's window is the binding one
    )
    faults = tuple(kind for kind in FAULT_KINDS if prng.random() < 0.5)
    if prng.random() < FAILOVER_PROBABILITY:
        faults += ("failover",)
    return MultiConfig(
        seed,
        steps,
        bucket,
        chains,
        node,
        disk,
        workload,
        network,
        faults,
        fault_interval_s=pick(prng, [(0.01, 0.1), (0.05, 0.5), (0.2, 1.5)]),
        drop_probability=pick(prng, [0.001, 0.01, 0.05]) if "drop" in faults else 0.0,
        window_bytes=pick(prng, [300, 2048, 65536, 0]),
        feed_records_max=pick(prng, [None, None, 2, 8, 64]),
    )


def describe_chain(chain: Chain | None) -> str:
    return "-" if chain is None else f"{chain.active}>{','.join(r or '_' for r in chain.replicas)}"


def describe_map(chains) -> str:
    return " ".join(describe_chain(chain) for chain in chains)
