"""`durakv node`: run one cluster node in the foreground until SIGTERM or SIGINT.

Checks the command line (addresses, node id, fsync policy, the secret file) and hands over
to `durakv.replication.node_server`; holds no logic of its own. Logs go to stderr, one line
per lifecycle event.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from pathlib import Path

import click

SECRET_FILE_NAME = "secret"
SECRET_LEN_MAX = 1024  # characters read from the secret file
_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the rule cluster_config.add_node applies


def _check_address(value: str, param_hint: str) -> str:
    from durakv.replication.cluster_config import ClusterConfigError, check_address

    try:
        return check_address(value)
    except ClusterConfigError as exc:
        raise click.BadParameter(exc.message, param_hint=param_hint) from None


def _read_secret(path: Path) -> str:
    try:
        with open(path, encoding="ascii") as f:
            secret = f.read(SECRET_LEN_MAX + 1).strip()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--secret-file") from None
    if not secret or len(secret) > SECRET_LEN_MAX or any(c.isspace() for c in secret):
        raise click.BadParameter(f"{path} does not hold a cluster secret", param_hint="--secret-file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logging.getLogger("durakv.node").warning("%s is readable by other users; it should be mode 0600", path)
    return secret


@click.command("node")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's data directory (created if missing).",
)
@click.option("--listen", default="127.0.0.1:7101", show_default=True, help="host:port to serve gRPC on.")
@click.option("--manager", required=True, help="host:port of the cluster manager.")
@click.option("--node-id", required=True, help="This node's id in the cluster configuration.")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the cluster secret [default: 'secret' beside the data directory].",
)
@click.option(
    "--fsync",
    "fsync_policy",
    default="always",
    show_default=True,
    help="WAL fsync policy: always, never or interval=MS.",
)
def node_command(
    data_dir: Path, listen: str, manager: str, node_id: str, secret_file: Path | None, fsync_policy: str
) -> None:
    """Run a cluster node: the KV, Admin and NodeControl services over one data directory."""
    from durakv.engine.wal import FsyncPolicy
    from durakv.replication.node_server import NodeOptions, run

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _check_address(listen, "--listen")
    _check_address(manager, "--manager")
    if not _NODE_ID_RE.fullmatch(node_id):
        raise click.BadParameter(f"invalid node id {node_id!r}", param_hint="--node-id")
    try:
        FsyncPolicy.parse(fsync_policy)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fsync") from None
    secret = _read_secret(secret_file or data_dir.absolute().parent / SECRET_FILE_NAME)
    options = NodeOptions(
        data_dir=data_dir, listen=listen, manager=manager, node_id=node_id, secret=secret, fsync_policy=fsync_policy
    )
    sys.exit(run(options))
