"""`durakv cluster failover | recover | auto-failover`: the manager's failover, asked with the cluster secret.

Commands only (cli/cluster.py holds the shared options and calls); what the manager does is
in replication/manager_failover.py and docs/cluster-protocol.md.
"""

from __future__ import annotations

import sys

import click

from durakv.engine.errors import Status
from durakv.replication import auto_failover, launcher

from .cluster import (
    _ask_manager,
    _dir_option,
    _errors,
    _name_argument,
    _node_of,
    _ready_timeout_option,
    _report_not_ready,
    _status_name,
)

FAILOVER_RPC_TIMEOUT_S = 30.0  # the manager asks the survivors for their seqnos first


@click.command()
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


@click.command()
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


@click.command("auto-failover")
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
