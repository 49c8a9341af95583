"""`durakv cluster bench`: what each durability level costs on a running cluster.

With the asyncio SDK (operations on each node's pipelined stream), N coroutines upsert the
same document over keys that cover every vbucket, at each level and each concurrency; the
levels of one concurrency take turns (bench_measure.py), so they see the same background
load. Per level and concurrency: ops/s, the p50/p99 latency of one upsert, its throughput as
a ratio to NONE's in the same run (what the level costs), and the CPU per upsert of the
nodes (their pids from the cluster directory). scripts/bench_cluster.py's durability suite is
this same measurement on a cluster of its own.

The run writes (and leaves) its keys, bench::000000 and on, in the `default` bucket.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from typing import Any

import click

from durakv.exceptions import CouchbaseException
from durakv.replication import launcher

from .bench_measure import Workload, bench_keys, interleaved_aio, make_doc, offset
from .chaos_check import LEVELS
from .cluster import _dir_option, _errors

CONCURRENCY = (1, 16, 64)
OP_TIMEOUT_S = 10.0
PRELOAD_BATCH = 512


def durable_upsert(coll, keys: list[str], doc: dict, workers: int, level: str):
    """Upserts at a server durability level (NONE included, sent the same way)."""
    from durakv.durability import DurabilityLevel, ServerDurability
    from durakv.options import UpsertOptions

    opts = UpsertOptions(durability=ServerDurability(DurabilityLevel[level]), timeout=timedelta(seconds=OP_TIMEOUT_S))

    def make(t: int):
        base, n = offset(t, workers, len(keys)), len(keys)
        return lambda i: coll.upsert(keys[(base + i) % n], doc, opts)

    return make


async def durability_suite(
    connstr: str,
    nodes: tuple[int, ...],
    keys: list[str],
    doc: dict,
    options: Any,
    timing: tuple[float, float, int],
    levels: tuple[str, ...] = LEVELS,
    concurrency: tuple[int, ...] = CONCURRENCY,
) -> dict[str, dict]:
    """Every level at every concurrency, on one pipelined asyncio cluster object: {level_cN: summary}."""
    from durakv.aio.cluster import Cluster as AsyncCluster

    cluster = await AsyncCluster.connect(connstr, options)
    try:
        coll = cluster.bucket("default").default_collection()
        for i in range(0, len(keys), PRELOAD_BATCH):
            loaded = await coll.upsert_multi({k: doc for k in keys[i : i + PRELOAD_BATCH]})
            if not loaded.all_ok:
                raise RuntimeError(f"pre-loading failed: {next(iter(loaded.exceptions.values()))}")
        m: dict[str, dict] = {}
        for c in concurrency:
            paths = {
                f"{level.lower()}_c{c}": Workload(durable_upsert(coll, keys, doc, c, level), 1, nodes)
                for level in levels
            }
            m.update(await interleaved_aio(c, paths, *timing))
        return m
    finally:
        await cluster.close()


def durability_fields(
    m: dict[str, dict], levels: tuple[str, ...] = LEVELS, concurrency: tuple[int, ...] = CONCURRENCY
) -> dict[str, Any]:
    """Flat fields: {level}_cN_ops_s, _p50_ms, _p99_ms, and _vs_none_ratio when NONE was measured."""
    out: dict[str, Any] = {}
    for c in concurrency:
        none = m.get(f"none_c{c}", {}).get("ops_s")
        for level in levels:
            name = f"{level.lower()}_c{c}"
            out[f"{name}_ops_s"] = m[name]["ops_s"]
            out[f"{name}_p50_ms"] = m[name]["p50_ms"]
            out[f"{name}_p99_ms"] = m[name]["p99_ms"]
            out[f"{name}_vs_none_ratio"] = round(m[name]["ops_s"] / none, 3) if none else None
    return out


def _numbers(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part)
    except ValueError:
        values = ()
    if not values or any(not 1 <= v <= 1024 for v in values):
        raise click.BadParameter("a comma list of numbers from 1 to 1024", param_hint=what)
    return values


def _levels(text: str) -> tuple[str, ...]:
    levels = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    unknown = [level for level in levels if level not in LEVELS]
    if not levels or unknown:
        raise click.BadParameter(f"choose from {', '.join(LEVELS)}", param_hint="--levels")
    return levels


@click.command("bench")
@_dir_option
@click.option("--seconds", type=click.FloatRange(0.1, 3600), default=3.0, show_default=True,
              help="measured time of each level at each concurrency")  # fmt: skip
@click.option("--warmup", type=click.FloatRange(0, 60), default=0.5, show_default=True, help="unmeasured, per path")
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="slices the levels take in turn")  # fmt: skip
@click.option("--concurrency", default="1,16,64", show_default=True, help="operations in flight, comma list")
@click.option("--levels", default=",".join(LEVELS), show_default=True, help="durability levels, comma list")
@click.option("--payload-bytes", type=click.IntRange(60, 1 << 20), default=100, show_default=True,
              help="size of the JSON document")  # fmt: skip
@click.option("--keys", "key_count", type=click.IntRange(1, 1 << 20), default=4096, show_default=True,
              help="documents written, bench::000000 and on")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def bench_command(cluster_dir, seconds, warmup, rounds, concurrency, levels, payload_bytes, key_count, as_json) -> None:
    """Measure each durability level's throughput and latency on the running cluster.

    Upserts with the asyncio SDK at each level and concurrency, the levels taking turns;
    reports ops/s, p50/p99 latency, the ratio to NONE in the same run and the nodes' CPU
    per upsert. Writes its keys (bench::000000, ...) into the `default` bucket.
    """
    from durakv.auth import PasswordAuthenticator
    from durakv.options import ClusterOptions

    concurrency_ = _numbers(concurrency, "--concurrency")
    levels_ = _levels(levels)
    cdir = launcher.ClusterDir(cluster_dir)
    with _errors():
        spec = cdir.spec
        config = cdir.manager_config()
        if config is None or "default" not in config.buckets:
            raise click.ClickException("the cluster has no `default` bucket to write to")
        nodes = tuple(pid for name in spec.nodes if (pid := launcher.running_pid(cdir, name)) is not None)
        if not nodes:
            raise click.ClickException("no node of the cluster is running (`durakv cluster up`)")
        try:
            keys = bench_keys(key_count, config.buckets["default"].config.num_vbuckets)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--keys") from None
        doc, _ = make_doc(payload_bytes)
        options = ClusterOptions(PasswordAuthenticator(launcher.ADMIN_USER, launcher.ADMIN_PASSWORD))
        timing = (seconds, warmup, rounds)
        load_before = round(os.getloadavg()[0], 2)
        try:
            m = asyncio.run(
                durability_suite(spec.connection_string, nodes, keys, doc, options, timing, levels_, concurrency_)
            )
        except (CouchbaseException, RuntimeError) as exc:
            raise click.ClickException(
                f"a write failed, so there is nothing to measure: {exc} (`durakv cluster status`: is every node up?)"
            ) from exc
    report = {
        "nodes": len(spec.nodes),
        "replicas": config.buckets["default"].config.num_replicas,
        "seconds": seconds,
        "rounds": rounds,
        "load_average_before": load_before,
        "load_average_after": round(os.getloadavg()[0], 2),
        **durability_fields(m, levels_, concurrency_),
        "measurements": m,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_table(report, m, levels_, concurrency_)


def _print_table(report: dict, m: dict[str, dict], levels: tuple[str, ...], concurrency: tuple[int, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"durakv bench: {report['nodes']} nodes, {report['replicas']} replicas, {report['seconds']} s per path"
    table = Table(title=title)
    table.add_column("level", no_wrap=True)
    for header in ("in flight", "ops/s", "p50 ms", "p99 ms", "vs NONE", "node CPU µs/op"):
        table.add_column(header, justify="right")
    for c in concurrency:
        for level in levels:
            name = f"{level.lower()}_c{c}"
            ratio = report[f"{name}_vs_none_ratio"]
            cpu = m[name]["server_cpu_us"]
            table.add_row(
                level, str(c), f"{m[name]['ops_s']:,}", f"{m[name]['p50_ms']:.2f}", f"{m[name]['p99_ms']:.2f}",
                "-" if ratio is None else f"{ratio:.2f}", "-" if cpu is None else f"{cpu:,.0f}",
            )  # fmt: skip
    Console().print(table)
