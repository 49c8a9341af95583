"""Multi-node simulation runs (tests/sim/multinode.py): the active, two replicas, the real
stream cores over a simulated network, replica crashes and power cuts, drops and partitions,
and a crash of the active followed by a hard failover.

`DURAKV_SIM_MULTINODE_SEEDS` sets how many seeds the sweep runs (default 300, within
SWEEP_BUDGET_S seconds); `DURAKV_SIM_SEED_START` where it starts. A failure names the seed
and `python -m tests.sim.run --multinode --seed N`, which replays it with its trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from durakv.engine.durability import Chain, Level
from durakv.engine.errors import EngineError

from .checker import Violation
from .multinode import MultiConfig, MultiNodeFailure, run_multinode

ROOT = Path(__file__).resolve().parents[2]
SWEEP_SEEDS = int(os.environ.get("DURAKV_SIM_MULTINODE_SEEDS", "300"))
SWEEP_SEED_START = int(os.environ.get("DURAKV_SIM_SEED_START", "0"))
SWEEP_BUDGET_S = 25.0  # tests/sim as a whole stays around a minute and a half
SWEEP_SEEDS_MIN = 40  # fewer than this in the budget: the harness got slow


def test_random_seeds_hold_every_replication_guarantee():
    started = time.perf_counter()
    ran, backfills, breaks, power_survivors, failovers = 0, 0, 0, 0, 0
    for seed in range(SWEEP_SEED_START, SWEEP_SEED_START + SWEEP_SEEDS):
        if time.perf_counter() - started > SWEEP_BUDGET_S:
            break
        result = run_multinode(seed, trace=False)  # MultiNodeFailure names the seed and the replay
        ran += 1
        backfills += result.stats["backfills"]
        breaks += result.stats["stream_breaks"]
        power_survivors += result.tally.total("survived_replica_power_cut", Level.PERSIST_TO_MAJORITY)
        failovers += result.stats["failovers"]
    assert ran >= min(SWEEP_SEEDS, SWEEP_SEEDS_MIN), f"only {ran} seeds in {SWEEP_BUDGET_S} s"
    # The sweep reaches the paths it claims to test.
    assert backfills and breaks and power_survivors and failovers, (backfills, breaks, power_survivors, failovers)


def test_a_seed_replays_to_the_same_trace():
    first, second = run_multinode(7), run_multinode(7)
    assert first.digest() == second.digest() and len(first.trace) > 100


def _persist_only_with_replica_crashes(config: MultiConfig) -> None:
    config.workload.level_weights = (0.0, 0.0, 0.0, 1.0)
    config.faults = ("power", "crash", "drop", "partition")
    config.drop_probability = 0.01


@pytest.mark.parametrize("seed", range(5))
def test_persist_to_majority_survives_replica_power_cuts(seed):
    result = run_multinode(seed, adjust=_persist_only_with_replica_crashes, trace=False)
    assert result.tally.total("survived_replica_power_cut", Level.PERSIST_TO_MAJORITY) > 0


def test_the_checker_catches_a_replica_whose_disk_lies_about_fsync():
    """A replica acking persistence its disk never gave: the power cut at the end must expose it."""

    def lying(config: MultiConfig) -> None:
        _persist_only_with_replica_crashes(config)
        config.disk.fsync_lies = True  # every node's disk; only the replicas ever lose power
        config.node.fsync_policy = "always"

    caught = 0
    for seed in range(5):
        try:
            run_multinode(seed, adjust=lying, trace=False)
        except MultiNodeFailure as failure:
            # Caught by the checker, or by the replica's own recovery refusing a log that lost what
            # its store checkpointed -- not by a crash of the harness.
            assert isinstance(failure.error, Violation | EngineError), failure
            assert f"seed={seed}" in str(failure) and "--multinode --seed" in str(failure)
            caught += 1
    assert caught, "replicas whose fsync lies broke no promise the checker could see"


def test_the_command_line_replays_a_multinode_seed():
    done = subprocess.run(
        [sys.executable, "-m", "tests.sim.run", "--multinode", "--seed", "3", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "seed=3 ok" in done.stdout and "trace sha256=" in done.stdout


def _failover_with_durable_writes(config: MultiConfig) -> None:
    config.workload.level_weights = (0.5, 1.0, 1.0, 1.0)
    config.workload.timeout_ms = (1_000, 10_000)
    config.faults = ("failover",)  # the first fault: replica faults come in the random sweep
    config.fault_interval_s = (0.01, 0.1)  # the failover fires while the clients still write


def test_acknowledged_durable_writes_survive_a_failover_of_the_active():
    survived = {level: 0 for level in Level}
    for seed in range(8):
        result = run_multinode(seed, adjust=_failover_with_durable_writes, trace=False)
        assert result.stats["failovers"] == 1
        for level in Level:
            survived[level] += result.tally.total("survived_failover", level)
    assert survived[Level.MAJORITY] and survived[Level.PERSIST_TO_MAJORITY], survived


def test_the_checker_catches_a_failover_that_promotes_the_wrong_replica():
    """Promoting the copy the planner ranks lowest loses acknowledged durable writes: caught."""

    def wrong(config: MultiConfig) -> None:
        _failover_with_durable_writes(config)
        config.bucket.num_replicas = 2
        config.chains = [
            Chain(c.active, ("n2", "n3") if vb % 2 == 0 else ("n3", "n2")) for vb, c in enumerate(config.chains)
        ]
        config.promote_worst = True

    caught = 0
    for seed in range(10):
        try:
            run_multinode(seed, adjust=wrong, trace=False)
        except MultiNodeFailure as failure:
            assert f"seed={seed}" in str(failure) and "lost by the failover" in str(failure), failure
            caught += 1
    assert caught, "a failover promoting the most lagging replica broke no promise the checker could see"
