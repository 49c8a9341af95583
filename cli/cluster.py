"""`durakv cluster`: a local multi-node cluster of background processes in one directory.

`up` creates the cluster directory on first use (manager configuration, secret), starts
the manager and the nodes, and waits until every vbucket is served; `status`, `stop`,
`start`, `kill`, `down` and `destroy` act on the processes it started. The failover commands
are in cli/cluster_failover.py, `fault` in cli/cluster_faults.py, `chaos` and `bench` in
their own modules; they share this module's options and calls to the manager and nodes.
Commands only: the directory layout, process handling and probes are
`durakv.replication.launcher`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

import click
from click.core import ParameterSource

from durakv.engine.errors import DataDirError, Status
from durakv.engine.limits import NUM_REPLICAS_MAX, NUM_VBUCKETS_MAX
from durakv.replication import launcher
from durakv.replication.cluster_config import NODES_MAX, ClusterConfigError

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
