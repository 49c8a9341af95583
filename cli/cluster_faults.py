"""`durakv cluster fault NODE ...`: the testbed's faults injected into a running node (DESIGN §8).

Commands only: a power cut and a pause act on the process (launcher); the rest is
NodeControl.InjectFault / ClearFaults / ListFaults with the cluster secret, carried out by
replication/node_faults.py.
"""

from __future__ import annotations

import time

import click

from durakv.engine.errors import Status
from durakv.replication import launcher, node_faults

from .cluster import (
    _ask_node,
    _dir_option,
    _errors,
    _name_argument,
    _node_of,
    _status_name,
)

POWER_LOSS_WAIT_S = 10.0  # a node told to lose power must be gone by then

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


@click.command()
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
