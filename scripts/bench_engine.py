#!/usr/bin/env python3
"""Benchmark the embedded engine against raw py-lmdb on the same machine, in one run.

Prints one JSON object. Every `*_ratio` field is durakv's figure divided by a raw
LMDB reference measured in the same process moments before, so machine noise mostly
cancels out:

- get_ratio: embedded `Collection.get(k).content_as[dict]` (documents checkpointed into
  LMDB, so every read goes through the store) vs raw `txn.get(k)` + `json.loads` on the
  same documents. Target >= 0.5.
- persist_vs_synced_put_ratio: PERSIST_TO_MAJORITY upserts from 16 threads vs raw LMDB
  puts with one synced transaction per put. Target >= 10.
- persist_vs_batched_put_ratio: the same vs raw LMDB with 1000 puts per synced
  transaction. Target >= 1.

Usage: python scripts/bench_engine.py [--docs 100000] [--threads 16] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import lmdb

from durakv.cluster import Cluster
from durakv.durability import DurabilityLevel, ServerDurability
from durakv.options import UpsertOptions


def make_doc(i: int) -> dict:
    return {"id": i, "name": f"user-{i}", "email": f"user{i}@example.com", "visits": i % 97, "tags": ["a", "b"]}


def raw_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), map_size=1 << 32, sync=True, metasync=True, writemap=False, max_dbs=2)


def bench_raw_get(path: Path, keys: list[bytes], values: list[bytes]) -> float:
    env = raw_env(path)
    with env.begin(write=True) as txn:
        for k, v in zip(keys, values, strict=True):
            txn.put(k, v)
    order = keys[:]
    random.shuffle(order)
    loads = json.loads
    start = time.perf_counter()
    for k in order:
        with env.begin() as txn:
            loads(txn.get(k))
    elapsed = time.perf_counter() - start
    env.close()
    return len(order) / elapsed


def bench_raw_synced_put(path: Path, value: bytes, count: int) -> float:
    env = raw_env(path)
    start = time.perf_counter()
    for i in range(count):
        with env.begin(write=True) as txn:
            txn.put(b"synced-%d" % i, value)
    elapsed = time.perf_counter() - start
    env.close()
    return count / elapsed


def bench_raw_batched_put(path: Path, value: bytes, batches: int, per_batch: int = 1000) -> float:
    env = raw_env(path)
    start = time.perf_counter()
    for b in range(batches):
        with env.begin(write=True) as txn:
            for i in range(per_batch):
                txn.put(b"batched-%d-%d" % (b, i), value)
    elapsed = time.perf_counter() - start
    env.close()
    return batches * per_batch / elapsed


def run_threads(threads: int, work) -> float:
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads

    def runner(t: int) -> None:
        barrier.wait()
        counts[t] = work(t)

    pool = [threading.Thread(target=runner, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in pool:
        th.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--persist-ops", type=int, default=20_000, help="PERSIST_TO_MAJORITY upserts in total")
    parser.add_argument("--dir", default=None, help="where to put the data (default: a temp dir, removed after)")
    args = parser.parse_args()
    random.seed(1)
    base = Path(tempfile.mkdtemp(prefix="durakv-bench-", dir=args.dir))
    try:
        docs = [make_doc(i) for i in range(args.docs)]
        keys = [f"user::{i:08d}" for i in range(args.docs)]
        encoded = [json.dumps(d).encode() for d in docs]
        value = encoded[0]
        results: dict[str, object] = {"docs": args.docs, "threads": args.threads, "python": sys.version.split()[0]}

        results["raw_get_json_ops_s"] = round(bench_raw_get(base / "raw-get", [k.encode() for k in keys], encoded))

        cluster = Cluster.embedded(base / "durakv")
        coll = cluster.bucket("default").default_collection()
        start = time.perf_counter()
        for k, d in zip(keys, docs, strict=True):
            coll.upsert(k, d)
        results["durakv_upsert_none_ops_s"] = round(args.docs / (time.perf_counter() - start))

        bucket = cluster._backend.node.buckets["default"]
        while len(bucket.engine.memtable):  # move everything into LMDB: reads must hit the store
            bucket.checkpoint()
        order = keys[:]
        random.shuffle(order)
        start = time.perf_counter()
        for k in order:
            coll.get(k).content_as[dict]
        results["durakv_get_ops_s"] = round(len(order) / (time.perf_counter() - start))
        results["get_ratio"] = round(results["durakv_get_ops_s"] / results["raw_get_json_ops_s"], 3)

        persist = UpsertOptions(durability=ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY))
        per_thread = max(1, args.persist_ops // args.threads)
        fsyncs_before = bucket.wal.fsync_count

        def persist_work(t: int) -> int:
            for i in range(per_thread):
                coll.upsert(f"persist::{t}::{i}", docs[i % len(docs)], persist)
            return per_thread

        results["durakv_persist_to_majority_ops_s"] = round(run_threads(args.threads, persist_work))
        results["persist_writes_per_fsync"] = round(
            per_thread * args.threads / max(1, bucket.wal.fsync_count - fsyncs_before), 1
        )
        cluster.close()

        results["raw_synced_put_ops_s"] = round(bench_raw_synced_put(base / "raw-synced", value, 500))
        results["raw_batched_put_ops_s"] = round(bench_raw_batched_put(base / "raw-batched", value, 100))
        persist_ops = results["durakv_persist_to_majority_ops_s"]
        results["persist_vs_synced_put_ratio"] = round(persist_ops / results["raw_synced_put_ops_s"], 3)
        results["persist_vs_batched_put_ratio"] = round(persist_ops / results["raw_batched_put_ops_s"], 3)
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
