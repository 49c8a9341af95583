"""`durakv manager`: run the cluster manager (replication.manager_server) in the foreground.

Logs go to stderr. Exit status 0 after SIGTERM or SIGINT; 1, with one `error:` line, when it
cannot start (another manager holds the directory, the secret file does not match, the
address is taken, the directory is corrupt).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

LISTEN_DEFAULT = "127.0.0.1:7100"  # as replication.manager_server.LISTEN_DEFAULT (imported lazily)


@click.command("manager")
@click.option(
    "--dir",
    "cluster_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Cluster directory; the manager keeps its state in DIR/manager/.",
)
@click.option("--listen", default=LISTEN_DEFAULT, show_default=True, help="HOST:PORT to serve Admin on.")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The cluster secret (64 hex digits, mode 0600). Default: DIR/secret; written there if missing.",
)
@click.option(
    "--push-interval-s",
    type=click.FloatRange(min=0.01, max=60.0),
    default=1.0,
    show_default=True,
    help="How often nodes that lag behind the current configuration are pushed it again.",
)
def manager_command(cluster_dir: Path, listen: str, secret_file: Path | None, push_interval_s: float) -> None:
    """Run the cluster manager: serve Admin and push every configuration revision to the nodes."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from durakv.engine.errors import DataDirError, DataDirLockedError
    from durakv.replication import manager_server

    try:
        manager_server.run(cluster_dir, listen=listen, secret_file=secret_file, push_interval_s=push_interval_s)
    except DataDirLockedError as exc:
        pid = getattr(exc, "pid", None)
        holder = f" (pid {pid})" if pid is not None else ""
        click.echo(f"error: another manager is running on {cluster_dir}{holder}", err=True)
        sys.exit(1)
    except (DataDirError, manager_server.ManagerError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
