#!/usr/bin/env python3
"""Benchmark the networked cluster through the SDK against a bare gRPC echo, in one run.

Starts its own 3-node cluster (`durakv cluster up --nodes 3 --replicas 1`, in a temp dir,
destroyed at the end) and, in a separate process like a node, a bare grpc.aio server with
one generic unary handler that answers each request with its own bytes. The echo of the
same payload at the same concurrency is the ceiling of a unary call in Python gRPC on this
machine; every durakv figure is reported as a ratio to it.

Prints one JSON object. `measurements` holds, per path and concurrency, ops/s (docs/s for
the multi-ops), the p50/p99 latency of one call in ms, and the CPU time per operation (per
document for the multi-ops) of the client process and of the server processes (the three
nodes, or the echo server; Linux /proc). Every `*_ratio` field is a durakv path's
throughput divided by the echo's at the same concurrency and client kind:

- sync_{get,upsert}_cN_ratio: the sync SDK (`durakv.cluster.Cluster`, one gRPC channel per
  node shared by every thread, one unary call per operation) from N threads, against the
  sync echo client (one channel shared by N threads). Target >= 0.6.
- aio_{get,upsert}_cN_ratio: the asyncio SDK (`durakv.aio`, operations on each node's
  KV.PipelineBatched stream, those submitted together in one message) with N concurrent
  coroutines, against the grpc.aio echo client with N concurrent coroutines. Pipelined:
  target well above 1 at 16 and 64 (>= 0.6 at 1: a single operation in flight is one round
  trip either way).
- aio_unary_{get,upsert}_cN_ratio: the asyncio SDK with `kv_pipeline=false` (one grpc.aio
  unary call per operation), against the same echo. Target >= 0.6.
- multi_{get,upsert}_tN_ratio: `get_multi` / `upsert_multi` of 64 keys per call (one
  KV.Batch per node) from N threads, documents/s against the sync echo at N threads.
  Batched: target well above 1.

get reads pre-loaded documents spread over every vbucket (so every node serves) and
decodes them (`content_as[dict]`); upsert writes the same documents at durability NONE.
Each measurement runs `--seconds` in all, taken in `--rounds` slices in turn with the
echo and the other paths of the same concurrency, so all of them see the same background
load; each path first runs `--warmup` seconds unmeasured.

`--suite durability` (or `all`: both, one cluster each) measures instead the server
durability levels: its own cluster with `--replicas 2` (3 nodes, every vbucket has an active
and two replicas), then for each level NONE, MAJORITY, MAJORITY_AND_PERSIST_TO_ACTIVE and
PERSIST_TO_MAJORITY, with 1, 16 and 64 concurrent coroutines of the asyncio SDK, upserts of
the same documents over keys spread across every vbucket. The four levels of one concurrency
take turns in `--rounds` slices, as above. Fields, in `durability` (and `measurements` keeps
each path's full summary, including CPU):

- {level}_cN_ops_s, {level}_cN_p50_ms, {level}_cN_p99_ms (level in lower case).
- {level}_cN_vs_none_ratio: the level's ops/s divided by NONE's at the same concurrency,
  in the same run (what the durability costs; NONE itself is 1).
- persist_to_majority_c64_vs_etcd_ratio: PERSIST_TO_MAJORITY ops/s at 64 divided by
  ETCD_PUT_OPS_S (5,500 puts/s: a 3-member etcd cluster on the same machine with etcd's Go
  client, the figure given in the issue -- a constant, not measured by this script).

Usage: python scripts/bench_cluster.py [--suite unary|durability|all] [--seconds 3] [--rounds 3]
       [--payload-bytes 100] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from durakv.cli import bench
from durakv.cli.bench_measure import (
    Workload,
    bench_keys,
    interleaved_aio,
    interleaved_sync,
    make_doc,
    offset,
)

CLI = [sys.executable, "-m", "durakv.cli.main", "cluster"]
NODES = 3
REPLICAS = 1
DURABILITY_REPLICAS = 2  # --suite durability: every vbucket on all three nodes
DURABILITY_LEVELS = bench.LEVELS
ETCD_PUT_OPS_S = 5500  # 3-member etcd, Go client, same machine: the figure, not measured here
VBUCKETS = 64  # `durakv cluster up`'s default
CONCURRENCY = (1, 16, 64)
MULTI_THREADS = (1, 16)
MULTI_BATCH = 64  # keys per get_multi / upsert_multi call
KEYS = 4096  # pre-loaded documents
ECHO_METHOD = "/durakv.bench.Echo/Echo"
CALL_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 120
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
)


# -- the echo server (a separate process) ------------------------------------------------------


async def serve_echo() -> None:
    """Serve the echo on a free port, print the port, run until SIGTERM or stdin closes."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server(options=CHANNEL_OPTIONS[:2])
    handler = grpc.unary_unary_rpc_method_handler(echo)  # no (de)serializers: bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("durakv.bench.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        loop.add_reader(sys.stdin.fileno(), stop.set)  # stdin ends: the parent went away
    except (OSError, ValueError):
        pass  # stdin is not a pipe: SIGTERM only
    await stop.wait()
    await server.stop(0)


class Server(NamedTuple):
    pid: int
    address: str


def start_echo_server() -> tuple[subprocess.Popen, Server]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--echo-server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"the echo server did not start (it printed {line!r})")
    return proc, Server(proc.pid, f"127.0.0.1:{int(line)}")


# -- the cluster ------------------------------------------------------------------------------


def durakv_cluster(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(
            f"durakv cluster {' '.join(args)} exited {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result


def free_base_port() -> int:
    from durakv.replication.launcher import MANAGER_PORT_OFFSET, port_is_free

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        if all(port_is_free(f"127.0.0.1:{p}") for p in (*range(base, base + NODES), base + MANAGER_PORT_OFFSET)):
            return base
    raise RuntimeError("no free port range found")


class RunningCluster(NamedTuple):
    dir: Path
    connstr: str
    nodes: tuple[int, ...]  # the node pids (not the manager's)


def start_cluster(replicas: int) -> RunningCluster:
    """`durakv cluster up` with NODES nodes and `replicas` replicas on free ports in a temp dir."""
    cluster_dir = Path(tempfile.mkdtemp(prefix="durakv-bench-cluster-")) / "cluster"
    try:
        base = free_base_port()
        up = durakv_cluster(
            "up", "--dir", str(cluster_dir), "--nodes", str(NODES), "--replicas", str(replicas),
            "--base-port", str(base),
        )  # fmt: skip
        printed = re.search(r"durakv://\S+", up.stdout)
        connstr = printed.group(0) if printed else "durakv://" + ",".join(f"127.0.0.1:{base + i}" for i in range(NODES))
        status = json.loads(durakv_cluster("status", "--dir", str(cluster_dir), "--json").stdout)
        nodes = tuple(p["pid"] for p in status["processes"] if p["name"] != "manager")
    except BaseException:
        stop_cluster(cluster_dir, keep=False)
        raise
    return RunningCluster(cluster_dir, connstr, nodes)


def stop_cluster(cluster_dir: Path, keep: bool) -> None:
    if keep:
        print(f"cluster kept running in {cluster_dir} (`durakv cluster destroy --dir {cluster_dir}`)", file=sys.stderr)
        return
    subprocess.run([*CLI, "destroy", "--dir", str(cluster_dir)], capture_output=True, timeout=COMMAND_TIMEOUT_S)
    try:
        cluster_dir.parent.rmdir()
    except OSError:
        pass


# -- the workloads (measuring: durakv/cli/bench_measure.py) ------------------------------------


def sync_get(coll, keys: list[str], workers: int):
    def make(t: int):
        base, n = offset(t, workers, len(keys)), len(keys)
        return lambda i: coll.get(keys[(base + i) % n]).content_as[dict]

    return make


def sync_upsert(coll, keys: list[str], doc: dict, workers: int):
    def make(t: int):
        base, n = offset(t, workers, len(keys)), len(keys)
        return lambda i: coll.upsert(keys[(base + i) % n], doc)

    return make


def multi_get(coll, keys: list[str], workers: int):
    def make(t: int):
        base, n = offset(t, workers, len(keys)), len(keys)

        def work(i: int) -> None:
            first = (base + i * MULTI_BATCH) % n
            batch = [keys[(first + j) % n] for j in range(MULTI_BATCH)]
            result = coll.get_multi(batch)
            if not result.all_ok:
                raise RuntimeError(f"get_multi failed: {next(iter(result.exceptions.values()))}")
            for r in result.results.values():
                r.content_as[dict]

        return work

    return make


def multi_upsert(coll, keys: list[str], doc: dict, workers: int):
    def make(t: int):
        base, n = offset(t, workers, len(keys)), len(keys)

        def work(i: int) -> None:
            first = (base + i * MULTI_BATCH) % n
            result = coll.upsert_multi({keys[(first + j) % n]: doc for j in range(MULTI_BATCH)})
            if not result.all_ok:
                raise RuntimeError(f"upsert_multi failed: {next(iter(result.exceptions.values()))}")

        return work

    return make


def echo_sync(channel: grpc.Channel, payload: bytes):
    call = channel.unary_unary(ECHO_METHOD)
    return lambda t: lambda i: call(payload, timeout=CALL_TIMEOUT_S)


def echo_aio(channel: grpc.aio.Channel, payload: bytes):
    call = channel.unary_unary(ECHO_METHOD)
    return lambda t: lambda i: call(payload, timeout=CALL_TIMEOUT_S)


def aio_get(coll, keys: list[str], workers: int):
    def make(t: int):
        base, n = offset(t, workers, len(keys)), len(keys)

        async def work(i: int) -> None:
            (await coll.get(keys[(base + i) % n])).content_as[dict]

        return work

    return make


def aio_upsert(coll, keys: list[str], doc: dict, workers: int):
    def make(t: int):
        base, n = offset(t, workers, len(keys)), len(keys)
        return lambda i: coll.upsert(keys[(base + i) % n], doc)

    return make


async def aio_group(connstr: str, echo: Server, nodes: tuple[int, ...], c: int, keys, doc, payload, options, timing):
    """The grpc.aio echo and the asyncio SDK (pipelined and unary) at concurrency `c`, on one event loop."""
    from durakv.aio.cluster import Cluster as AsyncCluster

    sep = "&" if "?" in connstr else "?"
    channel = grpc.aio.insecure_channel(echo.address, options=CHANNEL_OPTIONS)
    pipelined = await AsyncCluster.connect(connstr, options)
    unary = await AsyncCluster.connect(f"{connstr}{sep}kv_pipeline=false", options)
    try:
        paths = {f"echo_aio_c{c}": Workload(echo_aio(channel, payload), 1, (echo.pid,))}
        for name, cluster in (("aio", pipelined), ("aio_unary", unary)):
            coll = cluster.bucket("default").default_collection()
            paths[f"{name}_get_c{c}"] = Workload(aio_get(coll, keys, c), 1, nodes)
            paths[f"{name}_upsert_c{c}"] = Workload(aio_upsert(coll, keys, doc, c), 1, nodes)
        return await interleaved_aio(c, paths, *timing)
    finally:
        await unary.close()
        await pipelined.close()
        await channel.close()


def durability_fields(m: dict[str, dict]) -> dict[str, Any]:
    out = bench.durability_fields(m, DURABILITY_LEVELS, CONCURRENCY)
    out["etcd_put_ops_s_reference"] = ETCD_PUT_OPS_S
    out["persist_to_majority_c64_vs_etcd_ratio"] = round(m["persist_to_majority_c64"]["ops_s"] / ETCD_PUT_OPS_S, 3)
    return out


def run_durability(args, options, keys, doc, timing) -> dict[str, Any]:
    """--suite durability: a cluster with DURABILITY_REPLICAS replicas, every level at every concurrency."""
    started = time.monotonic()
    running = start_cluster(DURABILITY_REPLICAS)
    try:
        if args.keep:
            print(f"durability cluster: {running.connstr} pids {running.nodes}", file=sys.stderr)
        load_before = round(os.getloadavg()[0], 2)
        m = asyncio.run(
            bench.durability_suite(
                running.connstr, running.nodes, keys, doc, options, timing, DURABILITY_LEVELS, CONCURRENCY
            )
        )
    finally:
        stop_cluster(running.dir, args.keep)
    return {
        "nodes": NODES,
        "replicas": DURABILITY_REPLICAS,
        "load_average_before": load_before,
        "load_average_after": round(os.getloadavg()[0], 2),
        **durability_fields(m),
        "measurements": m,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured run before each measurement, seconds")
    parser.add_argument(
        "--rounds", type=int, default=3, help="slices each measurement is taken in, in turn with the others"
    )
    parser.add_argument("--payload-bytes", type=int, default=100, help="size of the JSON document (and echo payload)")
    parser.add_argument(
        "--suite",
        choices=("unary", "durability", "all"),
        default="unary",
        help="unary: the SDK against the echo (the default); durability: every durability level at 2 replicas",
    )
    parser.add_argument("--keep", action="store_true", help="leave the cluster running (prints its dir on stderr)")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(serve_echo())
        return 0

    from durakv.auth import PasswordAuthenticator
    from durakv.options import ClusterOptions

    options = ClusterOptions(PasswordAuthenticator("admin", "password"))
    doc, payload = make_doc(args.payload_bytes)
    keys = bench_keys(KEYS, VBUCKETS)
    timing = (args.seconds, args.warmup, args.rounds)
    started = time.monotonic()
    if args.suite in ("unary", "all"):
        results = run_unary(args, options, keys, doc, payload, timing)
    else:
        results = {
            "python": sys.version.split()[0],
            "grpcio": grpc.__version__,
            "cpus": os.cpu_count(),
            "vbuckets": VBUCKETS,
            "payload_bytes": len(payload),
            "keys": len(keys),
            "seconds": args.seconds,
            "rounds": args.rounds,
        }
    if args.suite in ("durability", "all"):
        results["durability"] = run_durability(args, options, keys, doc, timing)
        results["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))
    return 0


def run_unary(args, options, keys: list[str], doc: dict, payload: bytes, timing) -> dict[str, Any]:
    """--suite unary: the SDK paths against the echo, on a cluster with REPLICAS replicas."""
    from durakv.cluster import Cluster

    seconds = args.seconds
    echo_proc: subprocess.Popen | None = None
    started = time.monotonic()
    running = start_cluster(REPLICAS)
    connstr, nodes = running.connstr, running.nodes
    try:
        echo_proc, echo = start_echo_server()

        results: dict[str, Any] = {
            "python": sys.version.split()[0],
            "grpcio": grpc.__version__,
            "cpus": os.cpu_count(),
            "nodes": NODES,
            "replicas": REPLICAS,
            "vbuckets": VBUCKETS,
            "payload_bytes": len(payload),
            "keys": len(keys),
            "multi_batch": MULTI_BATCH,
            "seconds": seconds,
            "rounds": args.rounds,
            "load_average_before": round(os.getloadavg()[0], 2),
        }
        m: dict[str, dict] = {}
        cluster = Cluster(connstr, options)
        echo_channel = grpc.insecure_channel(echo.address, options=CHANNEL_OPTIONS)
        try:
            coll = cluster.bucket("default").default_collection()
            for i in range(0, len(keys), 512):
                loaded = coll.upsert_multi({k: doc for k in keys[i : i + 512]})
                if not loaded.all_ok:
                    raise RuntimeError(f"pre-loading failed: {next(iter(loaded.exceptions.values()))}")
            for c in CONCURRENCY:
                paths = {
                    f"echo_sync_c{c}": Workload(echo_sync(echo_channel, payload), 1, (echo.pid,)),
                    f"sync_get_c{c}": Workload(sync_get(coll, keys, c), 1, nodes),
                    f"sync_upsert_c{c}": Workload(sync_upsert(coll, keys, doc, c), 1, nodes),
                }
                if c in MULTI_THREADS:
                    paths[f"multi_get_t{c}"] = Workload(multi_get(coll, keys, c), MULTI_BATCH, nodes)
                    paths[f"multi_upsert_t{c}"] = Workload(multi_upsert(coll, keys, doc, c), MULTI_BATCH, nodes)
                m.update(interleaved_sync(c, paths, *timing))
                m.update(asyncio.run(aio_group(connstr, echo, nodes, c, keys, doc, payload, options, timing)))
        finally:
            echo_channel.close()
            cluster.close()

        for c in CONCURRENCY:
            for path, ref in (("sync", "echo_sync"), ("aio", "echo_aio"), ("aio_unary", "echo_aio")):
                for op in ("get", "upsert"):
                    ratio = m[f"{path}_{op}_c{c}"]["ops_s"] / m[f"{ref}_c{c}"]["ops_s"]
                    results[f"{path}_{op}_c{c}_ratio"] = round(ratio, 3)
        for t in MULTI_THREADS:
            for op in ("get", "upsert"):
                ratio = m[f"multi_{op}_t{t}"]["docs_s"] / m[f"echo_sync_c{t}"]["ops_s"]
                results[f"multi_{op}_t{t}_ratio"] = round(ratio, 3)
        results["load_average_after"] = round(os.getloadavg()[0], 2)
        results["measurements"] = m
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        return results
    finally:
        if echo_proc is not None:
            echo_proc.terminate()
            try:
                echo_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                echo_proc.kill()
        stop_cluster(running.dir, args.keep)


if __name__ == "__main__":
    sys.exit(main())
