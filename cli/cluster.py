"""`durakv cluster`: a local multi-node cluster of background processes in one directory.

`up` creates the cluster directory on first use (manager configuration, secret), starts
the manager and the nodes, and waits until every vbucket is served; `status`, `stop`,
`start`, `kill`, `down` and `destroy` act on the processes it started; `failover` asks the
manager (Admin.Failover, with the cluster secret) to fail a node over. Commands only: the
directory layout, process handling and probes are `durakv.replication.launcher`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator

import click
from click.core import ParameterSource

from durakv.engine.errors import DataDirError, Status
from durakv.engine.limits import NUM_REPLICAS_MAX, NUM_VBUCKETS_MAX
from durakv.replication import auto_failover, launcher, node_faults
from durakv.replication.cluster_config import NODES_MAX, ClusterConfigError

FAILOVER_RPC_TIMEOUT_S = 30.0  # the manager asks the survivors for their seqnos first
POWER_LOSS_WAIT_S = 10.0  # a node told to lose power must be gone by then

_dir_option = click.option(
    "--dir",
    "cluster_dir",
    default=launcher.DIR_DEFAULT,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Cluster directory (configuration, data, logs, pid files).",
)
_name_argument = click.argument("name", metavar="NODE")
_stop_timeout_option = click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=launcher.STOP_TIMEOUT_S_DEFAULT,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL.",
)
_ready_timeout_option = click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=launcher.READY_TIMEOUT_S_DEFAULT,
    show_default=True,
    help="Seconds to wait until it serves (a node: every vbucket the manager makes it active for).",
)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Launcher and file errors become one line on stderr and exit status 1."""
    try:
        yield
    except (launcher.LauncherError, DataDirError, ClusterConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _locked(cdir: launcher.ClusterDir) -> Iterator[None]:
    """Errors as `_errors`, and the cluster directory's lock held (after checking it is one)."""
    with _errors():
        cdir.spec  # noqa: B018 -- NotAClusterError names the directory before any lock file is made
        with cdir.lock():
            yield


def _login_hint() -> str:
    return f"(user {launcher.ADMIN_USER} / password {launcher.ADMIN_PASSWORD})"


@click.group("cluster")
def cluster_group() -> None:
    """Run a local cluster: a manager and nodes as background processes."""


@cluster_group.command()
@_dir_option
@click.option("--nodes", type=click.IntRange(1, NODES_MAX), default=launcher.NODES_DEFAULT, show_default=True)
@click.option(
    "--replicas",
    type=click.IntRange(0, NUM_REPLICAS_MAX),
    default=launcher.REPLICAS_DEFAULT,
    show_default=True,
    help="Replicas per vbucket of the `default` bucket.",
)
@click.option(
    "--vbuckets",
    type=click.IntRange(1, NUM_VBUCKETS_MAX),
    default=launcher.VBUCKETS_DEFAULT,
    show_default=True,
    help="vbuckets of the `default` bucket.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535 - launcher.MANAGER_PORT_OFFSET),
    default=launcher.BASE_PORT_DEFAULT,
    show_default=True,
    help=f"node i listens on base + i - 1, the manager on base + {launcher.MANAGER_PORT_OFFSET}.",
)
@click.option(
    "--fsync",
    default="always",
    show_default=True,
    callback=lambda _ctx, _param, value: _fsync_policy(value),
    help="Every node's WAL fsync policy: always, never or interval=MS (never: only durable writes "
    "ask for an fsync, so a power loss shows what the other levels risk).",
)
@_ready_timeout_option
@click.pass_context
def up(ctx: click.Context, cluster_dir, nodes, replicas, vbuckets, base_port, fsync, timeout_s) -> None:
    """Create the cluster (first time), start its processes, wait until every vbucket is served."""
    cdir = launcher.ClusterDir(cluster_dir)
    with _errors():
        if not cdir.exists():
            spec = launcher.ClusterSpec.plan(
                nodes=nodes, replicas=replicas, vbuckets=vbuckets, base_port=base_port, fsync_policy=fsync
            )
            launcher.create(cdir.path, spec)
            click.echo(f"created {cdir.path}: nodes {nodes}, replicas {replicas}, vbuckets {vbuckets}", err=True)
        else:
            spec = cdir.spec
            _refuse_changed_options(ctx, cdir, spec)
        with cdir.lock():
            to_start = [name for name in spec.names if launcher.running_pid(cdir, name) is None]
            if not to_start:
                click.echo(f"cluster already running: {spec.connection_string}  {_login_hint()}")
                return
            busy = [f"{spec.address(n)} ({n})" for n in to_start if not launcher.port_is_free(spec.address(n))]
            if busy:
                raise launcher.PortInUseError(f"in use by another program: {', '.join(busy)}")
            for name in to_start:
                pid = launcher.start(cdir, name)
                click.echo(f"started {name} at {spec.address(name)} (pid {pid})", err=True)
            reasons = launcher.wait_ready(cdir, timeout_s=timeout_s)
    if reasons:
        _report_not_ready(cdir, reasons, timeout_s)
        sys.exit(1)
    click.echo(f"cluster ready: {spec.connection_string}  {_login_hint()}")


def _fsync_policy(value: str) -> str:
    from durakv.engine.wal import FsyncPolicy

    try:
        return str(FsyncPolicy.parse(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _refuse_changed_options(ctx: click.Context, cdir: launcher.ClusterDir, spec: launcher.ClusterSpec) -> None:
    stored = {
        "nodes": len(spec.nodes),
        "replicas": spec.num_replicas,
        "vbuckets": spec.num_vbuckets,
        "base_port": spec.base_port,
        "fsync": spec.fsync_policy,
    }
    for name, value in stored.items():
        given = ctx.params[name]
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT and given != value:
            option = "--" + name.replace("_", "-")
            raise click.UsageError(
                f"the cluster in {cdir.path} was created with {option} {value}, not {given}; "
                f"`durakv cluster destroy --dir {cdir.path}` removes it"
            )


def _report_not_ready(cdir: launcher.ClusterDir, reasons: dict[str, str], timeout_s: float) -> None:
    exited = [name for name, why in reasons.items() if why == launcher.EXITED]
    head = f"{', '.join(exited)} exited" if exited else f"cluster not ready after {timeout_s:g} s"
    click.echo(f"error: {head}", err=True)
    for name, why in reasons.items():
        click.echo(f"  {name}: {why}", err=True)
    for name in reasons:
        if name in cdir.spec.names:
            click.echo(f"--- last lines of {cdir.log_path(name)}:", err=True)
            for line in launcher.log_tail(cdir, name):
                click.echo(f"    {line}", err=True)
    click.echo(
        f"`durakv cluster status --dir {cdir.path}` shows the processes; "
        f"`durakv cluster down --dir {cdir.path}` stops them.",
        err=True,
    )


@cluster_group.command()
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def status(cluster_dir, as_json) -> None:
    """Each process: pid, alive, address, health, vbuckets (active / replica), config revision, testbed faults."""
    cdir = launcher.ClusterDir(cluster_dir)
    with _errors():
        spec = cdir.spec
        statuses = launcher.gather_status(cdir)
        config = cdir.manager_config()
    revision = config.revision if config is not None else None
    if as_json:
        doc = {
            "dir": str(cdir.path),
            "connection_string": spec.connection_string,
            "config_revision": revision,
            "processes": [s.to_dict() for s in statuses],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    _print_table(cdir, spec, statuses, revision)


def _print_table(cdir, spec, statuses, revision) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    def shown(value) -> str:
        return "-" if value is None else str(value)

    table = Table(
        box=box.SIMPLE,
        title=f"durakv cluster {cdir.path}",
        title_justify="left",
        caption=f"{spec.connection_string}   manager config revision {shown(revision)}",
        caption_justify="left",
    )
    for header in ("process", "pid", "alive", "address", "health", "vbuckets active / replica", "config rev", "faults"):
        table.add_column(header, no_wrap=header != "faults")
    for s in statuses:
        vbuckets = "-" if s.active_vbuckets is None else f"{s.active_vbuckets} / {s.replica_vbuckets}"
        table.add_row(
            s.name,
            shown(s.pid) if s.alive else "-",
            "yes" if s.alive else "no",
            s.address,
            s.health or ("unreachable" if s.alive else "-"),
            vbuckets,
            shown(s.config_revision),
            ", ".join(s.faults) or "-",
        )
    console = Console(width=max(Console().width, 140))
    console.print(table)
    for s in statuses:
        for problem in s.problems:
            console.print(f"{s.name}: {problem}", markup=False)


@cluster_group.command()
@_dir_option
@_name_argument
@_stop_timeout_option
def stop(cluster_dir, name, timeout_s) -> None:
    """Stop one process (node1, node2, ... or manager): SIGTERM, then SIGKILL after the timeout."""
    cdir = launcher.ClusterDir(cluster_dir)
    with _locked(cdir):
        ended = launcher.stop(cdir, [name], timeout_s)
    if not ended:
        click.echo(f"{name} is not running")
    _report_ended(ended, timeout_s)


@cluster_group.command()
@_dir_option
@_name_argument
@_ready_timeout_option
def start(cluster_dir, name, timeout_s) -> None:
    """Start one stopped process (node1, node2, ... or manager) and wait until it serves."""
    cdir = launcher.ClusterDir(cluster_dir)
    with _locked(cdir):
        address = cdir.spec.address(name)
        pid = launcher.running_pid(cdir, name)
        if pid is not None:
            click.echo(f"{name} is already running (pid {pid})")
            return
        pid = launcher.start(cdir, name)
        reasons = launcher.wait_ready(cdir, [name], timeout_s)
    if reasons:
        _report_not_ready(cdir, reasons, timeout_s)
        sys.exit(1)
    click.echo(f"{name} serving at {address} (pid {pid})")


@cluster_group.command()
@_dir_option
@_name_argument
def kill(cluster_dir, name) -> None:
    """SIGKILL one process (node1, node2, ... or manager): a crash, no shutdown."""
    cdir = launcher.ClusterDir(cluster_dir)
    with _locked(cdir):
        ended = launcher.kill(cdir, [name])
    click.echo(f"{name} killed (pid {ended[name].pid})" if ended else f"{name} is not running")


@cluster_group.command()
@_dir_option
@_name_argument
@_ready_timeout_option
def failover(cluster_dir, name, timeout_s) -> None:
    """Hard failover of a node: promote its replicas elsewhere, give up what only it held.

    The manager promotes, for each vbucket NODE was active for, the surviving replica with
    the highest (high prepared seqno, high seqno); NODE's slots become empty. Waits until the
    other running nodes serve every vbucket they are now active for.
    """
    from durakv.proto import admin_pb2

    cdir = launcher.ClusterDir(cluster_dir)
    with _errors():
        spec = _node_of(cdir, name)
        response = _ask_manager(cdir, "Failover", admin_pb2.FailoverRequest(node_id=name), FAILOVER_RPC_TIMEOUT_S)
    if response.status != Status.SUCCESS:
        raise click.ClickException(f"failover of {name} refused ({_status_name(response.status)}): {response.message}")
    lost = [p for p in response.promotions if not p.node_id]
    click.echo(
        f"{name} failed over at config revision {response.config_revision}: "
        f"{len(response.promotions) - len(lost)} vbuckets promoted, {len(lost)} lost",
        err=True,
    )
    for p in response.promotions:
        where = f"-> {p.node_id} (hps {p.high_prepared_seqno}, high seqno {p.high_seqno})" if p.node_id else "LOST"
        click.echo(f"  {p.bucket} vbucket {p.vbucket} {where}", err=True)
    if response.unreachable_nodes:
        click.echo(f"not asked (did not answer): {', '.join(response.unreachable_nodes)}", err=True)
    survivors = [n for n in spec.nodes if n != name and launcher.running_pid(cdir, n) is not None]
    with _errors():
        reasons = launcher.wait_ready(cdir, survivors, timeout_s)
    reasons.pop("cluster", None)  # lost vbuckets were reported above
    if reasons:
        _report_not_ready(cdir, reasons, timeout_s)
        sys.exit(1)
    click.echo(f"{name} failed over (config revision {response.config_revision})")


@cluster_group.command()
@_dir_option
@_name_argument
@_ready_timeout_option
def recover(cluster_dir, name, timeout_s) -> None:
    """Bring a failed-over node back: active again, and a replica wherever a copy is missing.

    Its old copies are replaced by streams from the actives (rolled back where they diverged);
    the actives stay where the failover put them (moving some back is rebalance, not done).
    Start the node (`durakv cluster start NODE`) before or after; when it runs, waits until
    every running node serves the new configuration.
    """
    from durakv.proto import admin_pb2

    cdir = launcher.ClusterDir(cluster_dir)
    with _errors():
        spec = _node_of(cdir, name)
        response = _ask_manager(cdir, "Recover", admin_pb2.RecoverRequest(node_id=name), launcher.RPC_TIMEOUT_S * 10)
    if response.status != Status.SUCCESS:
        raise click.ClickException(f"recovery of {name} refused ({_status_name(response.status)}): {response.message}")
    click.echo(f"{name} recovered at config revision {response.config_revision}", err=True)
    running = [n for n in spec.nodes if launcher.running_pid(cdir, n) is not None]
    if name not in running:
        click.echo(f"{name} is not running: `durakv cluster start --dir {cdir.path} {name}` starts it")
        return
    with _errors():
        reasons = launcher.wait_ready(cdir, running, timeout_s)
    if reasons:
        _report_not_ready(cdir, reasons, timeout_s)
        sys.exit(1)
    click.echo(f"{name} recovered (config revision {response.config_revision})")


@cluster_group.command("auto-failover")
@_dir_option
@click.option("--enable/--disable", "enabled", default=None, help="Turn automatic failover on or off.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(auto_failover.TIMEOUT_S_MIN, auto_failover.TIMEOUT_S_MAX),
    help="Seconds a node must be unreachable before the manager fails it over.",
)
@click.option(
    "--max-count",
    type=click.IntRange(1, auto_failover.MAX_COUNT_MAX),
    help="Automatic failovers allowed until the count is reset.",
)
@click.option("--reset", is_flag=True, help="Reset the count of automatic failovers made.")
def auto_failover_command(cluster_dir, enabled, timeout_s, max_count, reset) -> None:
    """Show or change automatic failover: the manager fails over a node unreachable for the timeout.

    One node at a time, on clusters of at least 3 active nodes, at most --max-count times
    until --reset, and only when every vbucket's chain keeps a durability majority (as
    Couchbase's auto-failover with "preserve durable writes"). New clusters: enabled, 120 s, 1.
    """
    from durakv.proto import admin_pb2

    cdir = launcher.ClusterDir(cluster_dir)
    timeout = launcher.RPC_TIMEOUT_S * 5
    with _errors():
        request = admin_pb2.AutoFailoverRequest(reset_count=reset)
        if enabled is not None or timeout_s is not None or max_count is not None:
            current = _ask_manager(cdir, "AutoFailover", admin_pb2.AutoFailoverRequest(), timeout).settings
            request.settings.CopyFrom(
                admin_pb2.AutoFailoverSettings(
                    enabled=current.enabled if enabled is None else enabled,
                    timeout_s=current.timeout_s if timeout_s is None else timeout_s,
                    max_count=current.max_count if max_count is None else max_count,
                )
            )
        response = _ask_manager(cdir, "AutoFailover", request, timeout)
    if response.status != Status.SUCCESS:
        raise click.ClickException(f"refused ({_status_name(response.status)}): {response.message}")
    s = response.settings
    state = "enabled" if s.enabled else "disabled"
    click.echo(
        f"automatic failover {state}: timeout {s.timeout_s:g} s, "
        f"{response.count} of {s.max_count} automatic failover(s) made"
    )
    for node in response.unreachable:
        click.echo(f"  {node.node_id} unreachable for {node.seconds:.1f} s")
    if response.decision:
        click.echo(f"  {response.decision}")


FAULTS = (
    "power-loss",
    "pause",
    "resume",
    "slow-disk",
    "disk-errors",
    "disk-full",
    "net-delay",
    "net-drop",
    "partition",
    "heal",
    "clear",
    "show",
)


@cluster_group.command()
@_dir_option
@_name_argument
@click.argument("what", metavar="FAULT", type=click.Choice(FAULTS))
@click.argument("arg", metavar="[ARG]", required=False)
def fault(cluster_dir, name, what, arg) -> None:
    """Inject a testbed fault into a running node.

    \b
    power-loss        drop every write-ahead-log byte the node has not fsynced, then it exits
                      at once (137), as a power cut; `durakv cluster start NODE` brings it back
    pause, resume     SIGSTOP / SIGCONT the node's process: alive, answering nothing
    slow-disk MS      every fsync of the node takes MS milliseconds longer (0: a normal disk)
    disk-errors N     the node's next N fsyncs fail with EIO (its log refuses writes, rewrites
                      from memory and recovers)
    disk-full         every write of the node's log fails with ENOSPC until `clear` (writes
                      refused, reads served; the node recovers by itself once cleared)
    net-delay MS      every replication message the node sends leaves MS milliseconds later
                      (its rounds as an active, its acks as a replica); up to 1000
    net-drop PCT      each replication message the node sends is lost with PCT % chance: its
                      call ends (a stream loses no single message) and the replica reconnects
    partition N1,N2   no replication between the node and these nodes, either way (clients
                      and the manager still reach it); heal: no partition
    clear             no more faults; show: the node's faults now
    """
    from durakv.proto import admin_pb2

    cdir = launcher.ClusterDir(cluster_dir)
    timeout = launcher.RPC_TIMEOUT_S * 5
    with _errors():
        _node_of(cdir, name)
        if what == "power-loss":
            pid = _power_loss(cdir, name)
            click.echo(f"{name} lost power (pid {pid}): what it had not fsynced is gone")
            return
        if what in ("pause", "resume"):
            with cdir.lock():
                done = launcher.pause(cdir, [name], resume=what == "resume")
            if not done:
                raise click.ClickException(f"{name} is not running")
            click.echo(f"{name} {'resumed' if what == 'resume' else 'paused'} (pid {done[name]})")
            return
        if what == "clear":
            response = _ask_node(cdir, name, "ClearFaults", admin_pb2.ClearFaultsRequest(), timeout)
        elif what == "show":
            response = _ask_node(cdir, name, "ListFaults", admin_pb2.ListFaultsRequest(), timeout)
        elif what in ("net-delay", "net-drop"):
            amount = _fault_amount(what, arg)
            network = _ask_node(cdir, name, "ListFaults", admin_pb2.ListFaultsRequest(), timeout).network
            if what == "net-delay":
                network.replication_delay_ms = amount
            else:
                network.replication_drop_percent = amount
            request = admin_pb2.InjectFaultRequest(network=network)
            response = _ask_node(cdir, name, "InjectFault", request, timeout)
        elif what in ("partition", "heal"):
            if what == "partition" and not arg:
                raise click.UsageError("partition needs the nodes to cut off: partition NODE1,NODE2")
            peers = [p for p in (arg or "").split(",") if p] if what == "partition" else []
            request = admin_pb2.InjectFaultRequest(partition=admin_pb2.Partition(peers=peers))
            response = _ask_node(cdir, name, "InjectFault", request, timeout)
        else:
            amount = 0 if what == "disk-full" else _fault_amount(what, arg)
            disk = _ask_node(cdir, name, "ListFaults", admin_pb2.ListFaultsRequest(), timeout).disk
            if what == "slow-disk":
                disk.fsync_delay_ms = amount
            elif what == "disk-errors":
                disk.fsync_errors = amount
            else:
                disk.full = True
            response = _ask_node(cdir, name, "InjectFault", admin_pb2.InjectFaultRequest(disk=disk), timeout)
    if response.status != Status.SUCCESS:
        raise click.ClickException(f"refused ({_status_name(response.status)}): {response.message}")
    disk = response.disk
    cut = ", ".join(response.partitioned_from) or "nobody"
    click.echo(f"{name}: fsync delay {disk.fsync_delay_ms} ms, {disk.fsync_errors} fsync errors to come, ", nl=False)
    click.echo("disk full, " if disk.full else "", nl=False)
    network = response.network
    click.echo(f"replication delay {network.replication_delay_ms} ms, ", nl=False)
    click.echo(f"{network.replication_drop_percent} % dropped, partitioned from {cut}")


def _fault_amount(what: str, arg: str | None) -> int:
    if what == "slow-disk":
        unit, high = "milliseconds", node_faults.FSYNC_DELAY_MS_MAX
    elif what == "net-delay":
        unit, high = "milliseconds", node_faults.REPLICATION_DELAY_MS_MAX
    elif what == "net-drop":
        unit, high = "percent", 100
    else:
        unit, high = "fsyncs", node_faults.FSYNC_ERRORS_MAX
    if arg is None or not arg.isdigit() or int(arg) > high:
        raise click.UsageError(f"{what} needs a number of {unit}, 0 to {high}")
    return int(arg)


def _power_loss(cdir: launcher.ClusterDir, name: str) -> int:
    """Tell `name` to lose power and wait until its process is gone; its pid."""
    import grpc

    from durakv.proto import admin_pb2, admin_pb2_grpc

    pid = launcher.running_pid(cdir, name)
    if pid is None:
        raise click.ClickException(f"{name} is not running")
    metadata = (("authorization", f"Bearer {cdir.secret()}"),)
    with grpc.insecure_channel(cdir.spec.address(name)) as channel:
        try:  # a power cut answers nobody: the call ends when the process does
            admin_pb2_grpc.NodeControlStub(channel).InjectFault(
                admin_pb2.InjectFaultRequest(power_loss=True), timeout=POWER_LOSS_WAIT_S, metadata=metadata
            )
        except grpc.RpcError:
            pass
    deadline = time.monotonic() + POWER_LOSS_WAIT_S
    while launcher.running_pid(cdir, name) is not None:
        if time.monotonic() > deadline:
            raise click.ClickException(f"{name} (pid {pid}) did not stop within {POWER_LOSS_WAIT_S:.0f} s")
        time.sleep(launcher.POLL_INTERVAL_S)
    return pid


def _node_of(cdir: launcher.ClusterDir, name: str) -> launcher.ClusterSpec:
    """The cluster's spec, once `name` is known to be one of its nodes (UnknownProcessError)."""
    spec = cdir.spec
    if name not in spec.nodes:
        raise launcher.UnknownProcessError(f"{name!r} is not a node of this cluster ({', '.join(spec.nodes)})")
    return spec


def _ask_manager(cdir: launcher.ClusterDir, rpc: str, request, timeout_s: float):
    """One Admin call to the cluster's manager with the cluster secret; ClickException if it does not answer."""
    from durakv.proto import admin_pb2_grpc

    address = cdir.spec.manager_address
    return _ask(cdir, address, "the cluster manager", admin_pb2_grpc.AdminStub, rpc, request, timeout_s)


def _ask_node(cdir: launcher.ClusterDir, name: str, rpc: str, request, timeout_s: float):
    """One NodeControl call to node `name` with the cluster secret; ClickException if it does not answer."""
    from durakv.proto import admin_pb2_grpc

    return _ask(cdir, cdir.spec.address(name), name, admin_pb2_grpc.NodeControlStub, rpc, request, timeout_s)


def _ask(cdir: launcher.ClusterDir, address: str, who: str, stub_class, rpc: str, request, timeout_s: float):
    import grpc

    metadata = (("authorization", f"Bearer {cdir.secret()}"),)
    with grpc.insecure_channel(address) as channel:
        try:
            return getattr(stub_class(channel), rpc)(request, timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            raise click.ClickException(f"{who} at {address} did not answer: {exc.code().name}") from exc


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status {status}"


@cluster_group.command()
@_dir_option
@_stop_timeout_option
def down(cluster_dir, timeout_s) -> None:
    """Stop every process (the manager first); the directory stays, `up` starts it again."""
    cdir = launcher.ClusterDir(cluster_dir)
    with _locked(cdir):
        ended = launcher.down(cdir, timeout_s)
    if not ended:
        click.echo("the cluster is not running")
    _report_ended(ended, timeout_s)


def _report_ended(ended: dict[str, launcher.Ending], timeout_s: float) -> None:
    for name, ending in ended.items():
        late = f": killed, still running {timeout_s:g} s after SIGTERM" if ending.killed_after_timeout else ""
        click.echo(f"{name} stopped (pid {ending.pid}){late}")


@cluster_group.command()
@_dir_option
@_stop_timeout_option
def destroy(cluster_dir, timeout_s) -> None:
    """Stop every process and delete the cluster directory with all its data."""
    cdir = launcher.ClusterDir(cluster_dir)
    if not cdir.path.exists():
        click.echo(f"nothing to destroy: {cdir.path} does not exist")
        return
    with _errors():
        launcher.destroy(cdir, timeout_s)
    click.echo(f"destroyed {cdir.path}")
