"""How durakv's benchmarks measure: paths taking turns, latencies, throughput and CPU per operation.

Shared by `durakv cluster bench` (cli/bench.py) and scripts/bench_cluster.py. A path is a
`Workload`: a factory of per-worker work (work(i) does operation i), the items one call
does, and the server processes whose CPU it loads. `interleaved_sync` / `interleaved_aio`
run every path from N threads / N coroutines for `seconds` in all, in `rounds` slices taken
in turn, so a reference and the paths compared with it see the same background load (these
machines are noisy: compare within one run). `summary` gives ops/s (docs/s for multi-ops),
the p50/p99 latency of one call, and the CPU per item of the client and of the servers
(Linux /proc; None elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from durakv.engine.keys import vbucket_of


class Workload(NamedTuple):
    """One measured path: its work, the items (ops or documents) one call does, the server pids it loads."""

    make_work: Callable[[int], Callable[[int], Any]]
    per_call: int
    servers: tuple[int, ...]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = 0.0

    def add(self, latencies: list[float], elapsed_s: float, client_cpu_s: float, server_cpu_s: float | None) -> None:
        self.latencies += latencies
        self.elapsed_s += elapsed_s
        self.client_cpu_s += client_cpu_s
        if self.server_cpu_s is not None and server_cpu_s is not None:
            self.server_cpu_s += server_cpu_s
        else:
            self.server_cpu_s = None


def cpu_seconds(pids: tuple[int, ...]) -> float | None:
    """User + system CPU of the processes so far (Linux /proc); None where that cannot be read."""
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def summary(tally: Tally, per_call: int = 1) -> dict[str, Any]:
    """Throughput, latency of one call (p50/p99) and CPU per item (client process, server processes)."""
    latencies = tally.latencies
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    calls = len(latencies)
    items = max(1, calls * per_call)
    out: dict[str, Any] = {"calls": calls}
    if per_call > 1:
        out["docs_s"] = round(calls * per_call / tally.elapsed_s)
        out["calls_s"] = round(calls / tally.elapsed_s)
    else:
        out["ops_s"] = round(calls / tally.elapsed_s)
    out["p50_ms"] = round(cuts[49] * 1000, 3)
    out["p99_ms"] = round(cuts[98] * 1000, 3)
    out["client_cpu_us"] = round(tally.client_cpu_s / items * 1e6, 1)
    out["server_cpu_us"] = None if tally.server_cpu_s is None else round(tally.server_cpu_s / items * 1e6, 1)
    return out


def run_threads(threads: int, seconds: float, make_work: Callable[[int], Callable[[int], Any]]) -> tuple:
    """`threads` threads each calling work(i) (i = 0, 1, ...) until `seconds` pass; (latencies, elapsed)."""
    barrier = threading.Barrier(threads + 1)
    lists: list[list[float]] = [[] for _ in range(threads)]
    ends = [0.0] * threads
    failures: list[BaseException] = []
    deadline = [0.0]

    def runner(t: int) -> None:
        work = make_work(t)
        lat = lists[t]
        clock = time.perf_counter
        barrier.wait()
        end = deadline[0]
        i = 0
        try:
            while (start := clock()) < end:
                work(i)
                lat.append(clock() - start)
                i += 1
        except BaseException as error:
            failures.append(error)
        ends[t] = clock()

    pool = [threading.Thread(target=runner, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for th in pool:
        th.join()
    if failures:
        raise failures[0]
    return [x for lat in lists for x in lat], max(ends) - start


async def run_tasks(concurrency: int, seconds: float, make_work: Callable[[int], Callable[[int], Any]]) -> tuple:
    """`concurrency` coroutines each awaiting work(i) until `seconds` pass; (latencies, elapsed)."""
    lists: list[list[float]] = [[] for _ in range(concurrency)]
    clock = time.perf_counter
    start = clock()
    end = start + seconds

    async def runner(t: int) -> None:
        work = make_work(t)
        lat = lists[t]
        i = 0
        while (begin := clock()) < end:
            await work(i)
            lat.append(clock() - begin)
            i += 1

    await asyncio.gather(*(runner(t) for t in range(concurrency)))
    return [x for lat in lists for x in lat], clock() - start


def interleaved_sync(threads: int, paths: dict[str, Workload], seconds: float, warmup_s: float, rounds: int) -> dict:
    """Each path from `threads` threads, `seconds` in all.

    The paths take turns in `rounds` slices, so a reference and the paths compared with it
    see the same background load; each path runs `warmup_s` unmeasured first.
    """
    for path in paths.values():
        run_threads(threads, warmup_s, path.make_work)
    tallies = {name: Tally() for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            client, server = time.process_time(), cpu_seconds(path.servers)
            latencies, elapsed = run_threads(threads, seconds / rounds, path.make_work)
            server_after = cpu_seconds(path.servers)
            server_cpu = None if server is None or server_after is None else server_after - server
            tallies[name].add(latencies, elapsed, time.process_time() - client, server_cpu)
    return {name: summary(tallies[name], paths[name].per_call) for name in paths}


async def interleaved_aio(concurrency: int, paths: dict[str, Workload], seconds: float, warmup_s: float, rounds: int):
    """As `interleaved_sync`, with `concurrency` coroutines on this event loop."""
    for path in paths.values():
        await run_tasks(concurrency, warmup_s, path.make_work)
    tallies = {name: Tally() for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            client, server = time.process_time(), cpu_seconds(path.servers)
            latencies, elapsed = await run_tasks(concurrency, seconds / rounds, path.make_work)
            server_after = cpu_seconds(path.servers)
            server_cpu = None if server is None or server_after is None else server_after - server
            tallies[name].add(latencies, elapsed, time.process_time() - client, server_cpu)
    return {name: summary(tallies[name], paths[name].per_call) for name in paths}


def make_doc(payload_bytes: int) -> tuple[dict, bytes]:
    """A JSON document whose encoding is `payload_bytes` long (at least the fixed fields)."""
    doc: dict[str, Any] = {"id": 4711, "name": "user-4711", "email": "user4711@example.com", "visits": 42, "pad": ""}
    encoded = json.dumps(doc).encode()
    doc["pad"] = "x" * max(0, payload_bytes - len(encoded))
    return doc, json.dumps(doc).encode()


def bench_keys(count: int, num_vbuckets: int) -> list[str]:
    """`count` keys (bench::000000, ...) that cover every vbucket."""
    keys = [f"bench::{i:06d}" for i in range(count)]
    covered = {vbucket_of(k.encode(), num_vbuckets) for k in keys}
    if len(covered) != num_vbuckets:
        raise ValueError(f"{count} keys cover {len(covered)} of {num_vbuckets} vbuckets: use more keys")
    return keys


def offset(worker: int, workers: int, count: int) -> int:
    return worker * count // workers
