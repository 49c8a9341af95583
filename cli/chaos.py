"""`durakv cluster chaos`: a workload at every durability level under a schedule of faults, then a check.

The runner around `chaos_check` (DESIGN §8): on a running local cluster, worker threads
write keys of their own at each durability level (round robin, each key once) while a
seeded schedule injects one fault at a time into a random node -- `kill` (SIGKILL, then
start), `power-loss` (then start), `pause` (SIGSTOP / SIGCONT), `partition` (from every
other node, then heal), `net-drop` (20 % of its replication messages, then clear) or
`slow-disk` (50 ms per fsync, then clear) or `disk-full` (every write of its log fails with
ENOSPC, then clear) -- held for a second or two. When the time is up,
every fault is undone and every node restarted, the cluster is waited for, and every key is
read back. `chaos_check.judge` then says, per level: acknowledged, lost (and whether the
faults excuse it), ambiguous then applied, ambiguous then absent, refused. The command
fails (exit 1) if a level lost a write its guarantee covers.

Must never: fail a node over (the guarantees judged assume the active of a vbucket stays
the same node: a run refuses to start where automatic failover could act within its faults,
and fails if a node was failed over by its end), fault more than one node at a time, or
leave a fault in place at the end.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import timedelta

import click

from durakv.engine.keys import vbucket_of
from durakv.exceptions import CouchbaseException
from durakv.replication import launcher
from durakv.replication.cluster_config import NodeState

from . import chaos_check
from .chaos_check import LEVELS, Fault, Write
from .cluster import _dir_option, _locked

FAULT_KINDS = ("kill", "power-loss", "pause", "partition", "net-drop", "slow-disk", "disk-full")
WRITE_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
HOLD_S = (1.0, 2.0)  # how long a fault lasts
GAP_S = (0.5, 1.5)  # between two faults
AUTO_FAILOVER_TIMEOUT_MIN_S = 30.0  # a killed node is down for its hold and its restart, well under this


def check_no_failover(config, when: str) -> None:
    """The verdict assumes every vbucket keeps its active: refuse a failed-over node, or a
    timeout that would let the manager fail one over during the run."""
    failed = sorted(n.node_id for n in config.nodes.values() if n.state is NodeState.FAILED)
    if failed:
        raise click.ClickException(
            f"{', '.join(failed)} {'is' if len(failed) == 1 else 'are'} failed over {when}: the check assumes "
            "no failover (`durakv cluster recover NODE` first)"
        )
    settings = config.auto_failover
    if settings.enabled and settings.timeout_s < AUTO_FAILOVER_TIMEOUT_MIN_S:
        raise click.ClickException(
            f"automatic failover after {settings.timeout_s:g} s could fail a faulted node over: use "
            f"`durakv cluster auto-failover --timeout {AUTO_FAILOVER_TIMEOUT_MIN_S:g}` or more, or `--disable`"
        )


def run_chaos(
    cdir: launcher.ClusterDir, *, seconds: float, kinds: tuple[str, ...], seed: int, workers: int, echo
) -> dict:
    """Run the workload and the fault schedule, read everything back, judge. The report as a dict."""
    from durakv.auth import PasswordAuthenticator
    from durakv.cluster import Cluster
    from durakv.options import ClusterOptions

    spec = cdir.spec
    config = cdir.manager_config()
    if config is None or "default" not in config.buckets:
        raise click.ClickException("the cluster has no `default` bucket to write to")
    check_no_failover(config, "before the run")
    vbmap = config.buckets["default"].vbmap
    cluster = Cluster(
        spec.connection_string, ClusterOptions(PasswordAuthenticator(launcher.ADMIN_USER, launcher.ADMIN_PASSWORD))
    )
    try:
        cluster.wait_until_ready(timedelta(seconds=30))
        coll = cluster.bucket("default").default_collection()
        run_id = uuid.uuid4().hex[:8]
        started = time.monotonic()
        writes: list[Write] = []
        faults: list[Fault] = []
        stop = threading.Event()

        def active_of(key: str) -> str:
            chain = vbmap[vbucket_of(key.encode(), spec.num_vbuckets)]
            return chain.active if chain is not None else ""

        def worker(w: int) -> None:
            i = 0
            while not stop.is_set():
                level = LEVELS[(w + i) % len(LEVELS)]
                key = f"chaos-{run_id}-{w}-{i}"
                i += 1
                at = time.monotonic() - started
                outcome = _write(coll, key, level)
                writes.append(Write(key, level, outcome, at, active_of(key)))

        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(workers)]
        for thread in threads:
            thread.start()
        try:
            _schedule(cdir, faults, kinds, random.Random(seed), started, seconds, echo)
        finally:
            stop.set()
            for thread in threads:
                thread.join(WRITE_TIMEOUT_S * 3)
            _undo_everything(cdir)
        reasons = launcher.wait_ready(cdir, timeout_s=60)
        if reasons:
            raise click.ClickException(f"the cluster did not come back: {reasons}")
        after = cdir.manager_config()
        if after is not None:
            check_no_failover(after, "after the run")
        echo(f"read back {len(writes)} writes")
        present = {w.key: _present(coll, w.key) for w in writes}
    finally:
        cluster.close()
    tally, violations = chaos_check.judge(writes, present, faults)
    return {
        "seed": seed,
        "seconds": seconds,
        "faults": [f"{f.kind} {f.node} {f.started:.1f}-{f.ended:.1f}s" for f in faults],
        "levels": {level: dict(tally[level]) for level in LEVELS},
        "violations": [f"{w.level} {w.key} (active {w.active})" for w in violations],
    }


def _write(coll, key: str, level: str) -> str:
    import durakv.exceptions as exc
    from durakv.durability import DurabilityLevel, ServerDurability

    durability = {} if level == "NONE" else {"durability": ServerDurability(DurabilityLevel[level])}
    try:
        coll.upsert(key, {"level": level}, timeout=timedelta(seconds=WRITE_TIMEOUT_S), **durability)
    except (exc.DurabilitySyncWriteAmbiguousException, exc.AmbiguousTimeoutException):
        return "ambiguous"
    except exc.CouchbaseException:
        return "failed"
    return "acked"


def _present(coll, key: str) -> bool:
    import durakv.exceptions as exc

    try:
        coll.get(key, timeout=timedelta(seconds=READ_TIMEOUT_S))
    except exc.DocumentNotFoundException:
        return False
    return True


def _schedule(cdir, faults: list[Fault], kinds, rng: random.Random, started: float, seconds: float, echo) -> None:
    """One fault at a time, on a random node, until `seconds` have passed since `started`."""
    nodes = list(cdir.spec.nodes)
    while True:
        time.sleep(rng.uniform(*GAP_S))
        hold = rng.uniform(*HOLD_S)
        if time.monotonic() - started + hold > seconds:
            return
        kind, node = rng.choice(kinds), rng.choice(nodes)
        begin = time.monotonic() - started
        echo(f"{begin:6.1f}s  {kind} {node}")
        _inject(cdir, kind, node, nodes)
        time.sleep(hold)
        _undo(cdir, kind, node)
        faults.append(Fault(kind, node, begin, time.monotonic() - started))


def _inject(cdir, kind: str, node: str, nodes: list[str]) -> None:
    from durakv.proto import admin_pb2

    from .cluster import _ask_node
    from .cluster_faults import _power_loss

    timeout = launcher.RPC_TIMEOUT_S * 5
    if kind == "kill":
        launcher.kill(cdir, [node])
    elif kind == "power-loss":
        _power_loss(cdir, node)
    elif kind == "pause":
        launcher.pause(cdir, [node])
    elif kind == "partition":
        peers = admin_pb2.Partition(peers=[n for n in nodes if n != node])
        _ask_node(cdir, node, "InjectFault", admin_pb2.InjectFaultRequest(partition=peers), timeout)
    elif kind == "net-drop":
        network = admin_pb2.NetworkFault(replication_drop_percent=20)
        _ask_node(cdir, node, "InjectFault", admin_pb2.InjectFaultRequest(network=network), timeout)
    elif kind in ("slow-disk", "disk-full"):
        disk = admin_pb2.DiskFault(fsync_delay_ms=50) if kind == "slow-disk" else admin_pb2.DiskFault(full=True)
        _ask_node(cdir, node, "InjectFault", admin_pb2.InjectFaultRequest(disk=disk), timeout)


def _undo(cdir, kind: str, node: str) -> None:
    from durakv.proto import admin_pb2

    from .cluster import _ask_node

    if kind in ("kill", "power-loss"):
        launcher.start(cdir, node)
    elif kind == "pause":
        launcher.pause(cdir, [node], resume=True)
    else:
        _ask_node(cdir, node, "ClearFaults", admin_pb2.ClearFaultsRequest(), launcher.RPC_TIMEOUT_S * 5)


def _undo_everything(cdir) -> None:
    """Every node running and resumed, every injected fault cleared."""
    from durakv.proto import admin_pb2

    from .cluster import _ask_node

    nodes = list(cdir.spec.nodes)
    launcher.pause(cdir, nodes, resume=True)
    for node in nodes:
        if launcher.running_pid(cdir, node) is None:
            launcher.start(cdir, node)
    launcher.wait_ready(cdir, nodes, timeout_s=30)
    for node in nodes:
        _ask_node(cdir, node, "ClearFaults", admin_pb2.ClearFaultsRequest(), launcher.RPC_TIMEOUT_S * 5)


@click.command("chaos")
@_dir_option
@click.option("--seconds", type=click.FloatRange(3, 3600), default=30.0, show_default=True)
@click.option(
    "--faults",
    default=",".join(FAULT_KINDS),
    show_default=True,
    help="Comma list of the faults to draw from.",
)
@click.option("--seed", type=int, default=None, help="The fault schedule's seed (random by default).")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def chaos_command(cluster_dir, seconds, faults, seed, workers, as_json) -> None:
    """Write at every durability level under faults, then check which acknowledged writes survived.

    On a running cluster (`durakv cluster up`), one fault at a time on a random node, each
    undone after a second or two; then every key is read back. Exit status 1 if a level lost
    an acknowledged write its guarantee covers (PERSIST_TO_MAJORITY and
    MAJORITY_AND_PERSIST_TO_ACTIVE never; MAJORITY and NONE only after their active crashed).
    The check assumes no failover: it refuses a cluster with a failed-over node or automatic
    failover faster than 30 s (`durakv cluster auto-failover`).
    """
    kinds = tuple(k for k in faults.split(",") if k)
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if not kinds or unknown:
        raise click.BadParameter(f"choose from {', '.join(FAULT_KINDS)}", param_hint="--faults")
    seed = random.randrange(1 << 32) if seed is None else seed
    cdir = launcher.ClusterDir(cluster_dir)
    echo = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    echo(f"chaos for {seconds:g} s, seed {seed}, faults {', '.join(kinds)}")
    with _locked(cdir):
        try:
            report = run_chaos(cdir, seconds=seconds, kinds=kinds, seed=seed, workers=workers, echo=echo)
        except CouchbaseException as exc:
            raise click.ClickException(f"the cluster did not answer: {exc} (`durakv cluster status`)") from exc
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if report["violations"]:
        raise SystemExit(1)


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"durakv chaos, seed {report['seed']}: {len(report['faults'])} faults")
    columns = ("acked", "lost", "ambiguous_applied", "ambiguous_absent", "failed")
    table.add_column("level")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for level, counts in report["levels"].items():
        table.add_row(level, *(str(counts.get(c, 0)) for c in columns))
    console = Console()
    console.print(table)
    if report["violations"]:
        console.print(f"[bold red]{len(report['violations'])} acknowledged writes lost against their level:[/]")
        for line in report["violations"][:20]:
            console.print(f"  {line}")
    else:
        console.print("every loss is one its level allows")
