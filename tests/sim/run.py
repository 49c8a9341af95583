"""Run one seeded simulation, check it, and report; the command line that replays any run.

    python -m tests.sim.run --seed N [--steps M] [--faults crash,power,restart,slowdisk|none]
                            [--scenario NAME] [--quiet] [--seeds K]

One seed fixes everything: `make_config` draws the run's configuration from the run's PRNG
("swarm" testing: vbucket count, fsync policy, segment size, checkpoint cadence, disk speed
and damage, client count, key space, level mix, timeouts, which faults are active), then the
same PRNG drives the run. A scenario (`SCENARIOS`) overrides part of that configuration to
aim at one claim; its name is part of the replay command.

A run: start the node, let the clients issue `steps` operations while the fault injector
fires, wait for the clients, then stop every node the harshest way the run allows (power
cut, else SIGKILL, else a clean close), reopen it (the checker verifies the recovered
engine against the history), SIGKILL it again at once and reopen it once more (recovery of a
recovered log), and check every acknowledgement (checker.check_acknowledgements). Any
violation, engine assertion or refusal to start fails the run with the seed and the command
that replays it (`SimulationFailure`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from durakv.engine.bucket import BucketConfig

from .checker import Tally, check_acknowledgements
from .cluster import FaultOptions, NodeOptions, SimCluster
from .simclock import SimClock, SimThread
from .simdisk import DiskProfile
from .workload import Workload, WorkloadOptions

FAULT_KINDS = ("crash", "power", "restart", "slowdisk")
STEPS_DEFAULT = 300
TIME_MAX_S = 100_000.0  # simulated seconds: a run still going by then is stuck
TRACE_TAIL_LINES = 40  # trace lines quoted in a failure


@dataclass
class SimConfig:
    seed: int
    steps: int
    faults_arg: str
    scenario: str | None
    bucket: BucketConfig
    node: NodeOptions
    disk: DiskProfile
    workload: WorkloadOptions
    fault: FaultOptions
    expect_violation: bool = False  # a scenario whose disk breaks every promise (the checker's own test)

    @property
    def final_stop(self) -> str:
        """The harshest stop this run's faults allow, used to end it."""
        kinds = self.fault.kinds
        return "power" if "power" in kinds else "process" if "crash" in kinds else "clean"

    def replay_command(self) -> str:
        command = f"python -m tests.sim.run --seed {self.seed} --steps {self.steps}"
        if self.faults_arg != "swarm":
            command += f" --faults {self.faults_arg}"
        if self.scenario:
            command += f" --scenario {self.scenario}"
        return command

    def describe(self) -> str:
        w, n, d = self.workload, self.node, self.disk
        return (
            f"vbuckets={self.bucket.num_vbuckets} fsync={n.fsync_policy} segment_max={n.segment_size_max} "
            f"checkpoint_every={n.checkpoint_interval_s:.3f}s wal_wait={n.checkpoint_wal_wait_s}s "
            f"fsync_s={d.fsync_s} torn={d.torn_probability:.2f} clients={w.clients} keys={w.keys} "
            f"levels={tuple(round(x, 2) for x in w.level_weights)} timeout_ms={w.timeout_ms} "
            f"faults={','.join(self.fault.kinds) or 'none'} final={self.final_stop}"
        )


def _pick(prng, options):
    return options[prng.randrange(len(options))]


def make_config(clock: SimClock, seed: int, steps: int, faults: str, scenario: str | None) -> SimConfig:
    """Draw a run's configuration from its PRNG (every draw happens, whatever overrides it)."""
    prng = clock.prng
    policy = _pick(prng, ["always", "always", "always", f"interval={prng.randint(1, 50)}", "never"])
    bucket = BucketConfig("default", num_vbuckets=_pick(prng, [1, 2, 4, 16]), num_replicas=0)
    node = NodeOptions(
        fsync_policy=policy,
        segment_size_max=_pick(prng, [1024, 2048, 8192, 65536]),
        checkpoint_interval_s=prng.uniform(0.02, 1.0),
        checkpoint_wal_wait_s=_pick(prng, [0.05, 0.5, 30.0]),
    )
    disk = DiskProfile(
        fsync_s=_pick(prng, [(0.0001, 0.001), (0.0005, 0.004), (0.002, 0.015)]),
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
        timeout_ms=_pick(prng, [(20, 300), (100, 3_000), (1_000, 10_000)]),
        think_s=_pick(prng, [(0.0, 0.0005), (0.0, 0.005), (0.0, 0.05)]),
    )
    swarm_kinds = tuple(kind for kind in FAULT_KINDS if prng.random() < 0.5)
    fault = FaultOptions(
        kinds=swarm_kinds if faults == "swarm" else _parse_faults(faults),
        interval_s=_pick(prng, [(0.01, 0.1), (0.05, 0.5), (0.2, 1.5)]),
    )
    config = SimConfig(seed, steps, faults, scenario, bucket, node, disk, workload, fault)
    if scenario is not None:
        SCENARIOS[scenario](config)
        if faults != "swarm":
            config.fault.kinds = _parse_faults(faults)
    return config


def _parse_faults(text: str) -> tuple[str, ...]:
    if text == "none":
        return ()
    kinds = tuple(kind for kind in text.split(",") if kind)
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}, or none / swarm")
    return kinds


# -- scenarios: each aims the swarm at one claim --------------------------------------------
def _levels(config: SimConfig, **weights: float) -> None:
    names = ("NONE", "MAJORITY", "MAJORITY_AND_PERSIST_TO_ACTIVE", "PERSIST_TO_MAJORITY")
    config.workload.level_weights = tuple(weights.get(name, 0.0) for name in names)


def _persist_to_majority_survives_power_loss(config: SimConfig) -> None:
    _levels(config, NONE=1.0, PERSIST_TO_MAJORITY=3.0)
    config.fault.kinds = ("power",)
    config.workload.timeout_ms = (5_000, 10_000)


def _majority_and_persist_to_active_survives_power_loss(config: SimConfig) -> None:
    _levels(config, MAJORITY=1.0, MAJORITY_AND_PERSIST_TO_ACTIVE=3.0)
    config.fault.kinds = ("power",)
    config.workload.timeout_ms = (5_000, 10_000)


def _torn_tail(config: SimConfig) -> None:
    _levels(config, NONE=1.0, MAJORITY=1.0, MAJORITY_AND_PERSIST_TO_ACTIVE=1.0, PERSIST_TO_MAJORITY=1.0)
    config.fault.kinds = ("power",)
    config.fault.interval_s = (0.02, 0.2)
    config.disk.torn_probability = 0.6
    config.disk.zero_tail_probability = 0.5
    config.disk.garbage_tail_probability = 0.5
    config.node.segment_size_max = 1024
    config.workload.timeout_ms = (5_000, 10_000)


def _timeouts_abort_in_seqno_order(config: SimConfig) -> None:
    _levels(config, MAJORITY=2.0, MAJORITY_AND_PERSIST_TO_ACTIVE=1.0, PERSIST_TO_MAJORITY=2.0)
    config.bucket = BucketConfig("default", num_vbuckets=1)  # one vbucket: every prepare fences the next
    config.fault.kinds = ("slowdisk",)
    config.fault.interval_s = (0.01, 0.1)
    config.disk.slow_fsync_s = (0.1, 0.6)
    config.workload.timeout_ms = (20, 200)
    config.workload.default_timeout_probability = 0.0
    config.workload.clients = max(config.workload.clients, 4)
    config.workload.keys = max(config.workload.keys, 6)


def _process_crash_keeps_page_cache(config: SimConfig) -> None:
    _levels(config, NONE=3.0, MAJORITY=1.0, PERSIST_TO_MAJORITY=0.3)
    config.node.fsync_policy = "never"  # acknowledged NONE writes sit in the page cache
    config.fault.kinds = ("crash",)


def _power_loss_drops_unsynced_writes(config: SimConfig) -> None:
    _levels(config, NONE=3.0, MAJORITY=1.0, PERSIST_TO_MAJORITY=0.3)
    config.node.fsync_policy = "never"
    config.fault.kinds = ("power",)


def _checkpoints_under_power_loss(config: SimConfig) -> None:
    config.node.segment_size_max = 1024
    config.node.checkpoint_interval_s = 0.02
    config.fault.kinds = ("power", "crash")
    config.fault.interval_s = (0.02, 0.3)


def _clean_restarts_lose_nothing(config: SimConfig) -> None:
    config.fault.kinds = ("restart",)


def _lying_disk(config: SimConfig) -> None:
    _levels(config, PERSIST_TO_MAJORITY=1.0)
    config.disk.fsync_lies = True
    config.node.segment_size_max = 65536  # one segment: a lost tail is a cut, not a corrupt sealed segment
    config.fault.kinds = ("power",)
    config.workload.timeout_ms = (5_000, 10_000)
    config.expect_violation = True


SCENARIOS: dict[str, Callable[[SimConfig], None]] = {
    "persist_to_majority_survives_power_loss": _persist_to_majority_survives_power_loss,
    "majority_and_persist_to_active_survives_power_loss": _majority_and_persist_to_active_survives_power_loss,
    "torn_tail": _torn_tail,
    "timeouts_abort_in_seqno_order": _timeouts_abort_in_seqno_order,
    "process_crash_keeps_page_cache": _process_crash_keeps_page_cache,
    "power_loss_drops_unsynced_writes": _power_loss_drops_unsynced_writes,
    "checkpoints_under_power_loss": _checkpoints_under_power_loss,
    "clean_restarts_lose_nothing": _clean_restarts_lose_nothing,
    "lying_disk": _lying_disk,
}


# -- one run ---------------------------------------------------------------------------------
@dataclass
class RunResult:
    config: SimConfig
    trace: list[str]
    tally: Tally
    cluster: SimCluster
    stats: dict[str, object] = field(default_factory=dict)

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()


class SimulationFailure(AssertionError):
    """A run broke a guarantee or an invariant; the message names the seed and the replay command."""

    def __init__(self, config: SimConfig, error: BaseException, trace: list[str]) -> None:
        tail = "\n".join(trace[-TRACE_TAIL_LINES:])
        super().__init__(
            f"simulation failed: seed={config.seed}\n  replay: {config.replay_command()}\n"
            f"  {type(error).__name__}: {error}\n  config: {config.describe()}\n  last trace lines:\n{tail}"
        )
        self.config = config
        self.error = error


def run_simulation(
    seed: int, steps: int = STEPS_DEFAULT, faults: str = "swarm", scenario: str | None = None, *, trace: bool = True
) -> RunResult:
    """Run and check one seed; raises SimulationFailure on any violation."""
    clock = SimClock(seed, trace=trace)
    config = make_config(clock, seed, steps, faults, scenario)
    try:
        return _run(clock, config)
    except Exception as error:
        raise SimulationFailure(config, error, clock.trace) from error


def _run(clock: SimClock, config: SimConfig) -> RunResult:
    clock.log("sim", f"seed={config.seed} {config.describe()}")
    cluster = SimCluster(clock, config.bucket, config.node, config.disk)
    workload = Workload(clock, cluster, config.workload)
    cluster.start(workload)
    cluster.start_faults(config.fault, until=lambda: workload.done)
    clock.run(until=lambda: workload.done and cluster.faults_done, time_max=TIME_MAX_S)
    assert workload.done and cluster.faults_done, f"the run did not finish within {TIME_MAX_S} simulated seconds"
    clock.log("sim", "clients done; final stop and reopen")
    for node in cluster.nodes.values():
        _stop(clock, node, config.final_stop)
        node.start()
        _stop(clock, node, "process")  # recovery of a recovered log
        node.start()
    tally = Tally()
    check_acknowledgements(workload.writes, tally)
    node = next(iter(cluster.nodes.values()))
    stats = {
        "sim_time_s": round(clock.time, 3),
        "events": clock.events_run,
        "writes": len(workload.writes),
        "reads": workload.reads,
        "unavailable": workload.unavailable,
        "faults": ",".join(cluster.faults_fired) or "-",
        "crashes": len(node.history.crashes),
        "records": node.history.count,
        "records_lost": len(node.history.lost),
        "fsyncs": node.disk.fsync_count,
        "checkpoints": node.checkpoints,
        "checkpoints_failed": node.checkpoints_failed,
        "torn_recoveries": sum("torn=none" not in line for line in node.recoveries),
    }
    if config.expect_violation:
        raise AssertionError("this scenario's disk breaks every promise, yet the checker found nothing")
    for line in tally.lines():
        clock.log("sim", line)
    return RunResult(config, clock.trace, tally, cluster, stats)


def _stop(clock: SimClock, node, kind: str) -> None:
    if kind == "clean":
        thread: SimThread = clock.spawn(f"{node.node_id}-close", node.shutdown())
        clock.run(until=lambda: not thread.alive, time_max=clock.time + TIME_MAX_S)
        assert not node.up, "the clean close did not finish"
    else:
        node.crash(kind)


# -- the command line ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--multinode" in argv:  # three nodes with replication: tests/sim/multinode.py
        from .multinode import main as multinode_main

        return multinode_main([arg for arg in argv if arg != "--multinode"])
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="client operations in the run")
    parser.add_argument("--faults", default="swarm", help=f"comma list of {','.join(FAULT_KINDS)}; none; swarm")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--quiet", action="store_true", help="no trace, only the summary")
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on (a sweep)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            result = run_simulation(
                seed, args.steps, args.faults, args.scenario, trace=not args.quiet or args.seeds == 1
            )
        except SimulationFailure as failure:
            print(failure, file=sys.stderr)
            return 1
        if args.seeds == 1:
            if not args.quiet:
                print("\n".join(result.trace))
            print(f"seed={seed} ok; {result.config.describe()}")
            print(" ".join(f"{k}={v}" for k, v in result.stats.items()))
            print("\n".join(result.tally.lines()))
            print(f"trace sha256={result.digest()}")
    elapsed_s = time.perf_counter() - started
    if args.seeds > 1:
        print(f"{args.seeds} seeds ok in {elapsed_s:.1f} s ({args.seeds / elapsed_s:.1f} seeds/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
