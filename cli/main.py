"""The `durakv` command line: the demo, and key-value commands against an embedded data directory.

The CLI holds no logic of its own: every command goes through the SDK (`durakv.cluster`)
exactly as a user's program would.
"""

from __future__ import annotations

import json
import sys

import click

from durakv import __version__

from . import demo as demo_module
from .bench import bench_command
from .chaos import chaos_command
from .cluster import cluster_group
from .cluster_failover import auto_failover_command, failover, recover
from .cluster_faults import fault
from .manager import manager_command
from .node import node_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="durakv")
def main() -> None:
    """durakv: a replicated document store with Couchbase key-value semantics."""


@main.command()
@click.option("--data", "data_dir", default="./durakv-data", show_default=True, help="Embedded data directory.")
def demo(data_dir: str) -> None:
    """Run the Couchbase KV tutorial's operations against an embedded node."""
    sys.exit(demo_module.run(data_dir))


_KV_OPTIONS = [
    click.option("--data", "data_dir", default="./durakv-data", show_default=True, help="Embedded data directory."),
    click.option("--bucket", default="default", show_default=True),
    click.option("--scope", default="_default", show_default=True),
    click.option("--collection", default="_default", show_default=True),
]


def _kv_options(func):
    for option in reversed(_KV_OPTIONS):
        func = option(func)
    return func


@main.group()
def kv() -> None:
    """Read and write documents in an embedded data directory."""


def _collection(data_dir: str, bucket: str, scope: str, collection: str):
    from durakv.cluster import Cluster

    cluster = Cluster.embedded(data_dir)
    return cluster, cluster.bucket(bucket).scope(scope).collection(collection)


def _run(data_dir, bucket, scope, collection, action) -> None:
    from durakv.exceptions import CouchbaseException

    cluster = None
    try:
        cluster, coll = _collection(data_dir, bucket, scope, collection)
        action(coll)
    except CouchbaseException as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    finally:
        if cluster is not None:
            cluster.close()


@kv.command("get")
@_kv_options
@click.argument("key")
def kv_get(data_dir, bucket, scope, collection, key) -> None:
    """Print a document as JSON (with its CAS on stderr)."""

    def action(coll):
        result = coll.get(key)
        click.echo(json.dumps(result.content_as[object]) if result.flags == 0x02000000 else result.value)
        click.echo(f"cas={result.cas}", err=True)

    _run(data_dir, bucket, scope, collection, action)


@kv.command("upsert")
@_kv_options
@click.option(
    "--durability",
    type=click.Choice(["none", "majority", "majority_and_persist_to_active", "persist_to_majority"]),
    default="none",
    show_default=True,
)
@click.option("--expiry", "expiry_s", type=int, default=0, help="Seconds until the document expires (0 = never).")
@click.argument("key")
@click.argument("value")
def kv_upsert(data_dir, bucket, scope, collection, durability, expiry_s, key, value) -> None:
    """Store VALUE (JSON) under KEY."""
    from datetime import timedelta

    from durakv.durability import DurabilityLevel, ServerDurability
    from durakv.options import UpsertOptions

    try:
        content = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="VALUE") from exc

    def action(coll):
        opts = UpsertOptions(durability=ServerDurability(DurabilityLevel.from_server_str(durability)))
        if expiry_s:
            opts["expiry"] = timedelta(seconds=expiry_s)
        result = coll.upsert(key, content, opts)
        click.echo(f"cas={result.cas}")

    _run(data_dir, bucket, scope, collection, action)


@kv.command("remove")
@_kv_options
@click.option("--cas", type=int, default=0, help="Only remove if the document still has this CAS.")
@click.argument("key")
def kv_remove(data_dir, bucket, scope, collection, cas, key) -> None:
    """Remove KEY."""
    from durakv.options import RemoveOptions

    def action(coll):
        result = coll.remove(key, RemoveOptions(cas=cas) if cas else RemoveOptions())
        click.echo(f"cas={result.cas}")

    _run(data_dir, bucket, scope, collection, action)


for _command in (failover, recover, auto_failover_command, fault, chaos_command, bench_command):
    cluster_group.add_command(_command)
main.add_command(cluster_group)
main.add_command(manager_command)
main.add_command(node_command)

if __name__ == "__main__":
    main()
