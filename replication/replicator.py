"""The consumer side of replication: a node copying the vbuckets it is a replica of from their actives.

Owns the shell around `stream_consumer.StreamConsumer` (proto/replication.proto, DESIGN §5):
from the configuration the node runs, per bucket and per active node this node replicates
from, ONE `Replication.Stream` call (`replicator_link.Link`) carrying all those vbuckets;
per replica vbucket one consumer, built from the engine's own state (`engine.replica_state`)
and kept across reconnects of its call. The consumer's actions are carried out in order against the
engine: AdoptFailoverLog -> `set_failover_log`, Apply -> `apply_snapshot`, Rollback ->
`rollback` then `consumer.rolled_back`, SeqnoAck sent. A broken call is reopened with backoff
(each vbucket re-requested from its last complete snapshot); a new configuration re-plans
the calls (`Replicator.replan`): a call whose vbuckets, active or bucket changed is closed
and a new one opened, the others keep running.

The consumer side is built from modules named for what each owns:
- `replicator_consumers`: the consumers of one bucket's replica vbuckets (`BucketReplicas`)
  and the engine's `on_replica_persisted` hook that feeds them persistence;
- `replicator_link`: one call (`Link`, planned as a `LinkSpec`): opening and reopening it,
  liveness (Noops, the silent-producer watchdog), flow control (BufferAcks), batching, and
  partitions as injected faults;
- `replicator_actions`: carrying out the consumer core's actions against the engine
  (`ConsumerActions`, `replica_item`).
This module owns the `Replicator`: planning the calls from the configuration the node runs,
starting and stopping them, and the channels they share.

Must never: decide what to apply, ack or roll back (the consumer core does), apply anything
to a vbucket that is not a replica here (checked under the bucket lock with the apply), or
hold the bucket lock across an await.

Threads: the Replicator, consumers and links live on the event loop thread; see
`replicator_consumers` and `replicator_actions` for what runs elsewhere.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import grpc

from durakv.engine.vbucket import VBState

from .items import STREAM_BUFFER_BYTES_DEFAULT
from .replicator_consumers import BucketReplicas
from .replicator_link import (
    Link,
    LinkSpec,
)


# -- the replicator ---------------------------------------------------------------------------------
class Replicator:
    """Every replication call this node makes, following the configuration it runs."""

    def __init__(
        self, runtime, *, channel_options: Sequence[tuple[str, object]] = (), buffer_bytes=STREAM_BUFFER_BYTES_DEFAULT
    ) -> None:
        self.rt = runtime
        self.buffer_bytes = buffer_bytes
        self._channel_options = list(channel_options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._links: dict[tuple[str, str], Link] = {}
        self._replicas: dict[str, BucketReplicas] = {}
        self._stopped = False
        self._replan_lock = asyncio.Lock()

    def partition_changed(self) -> None:
        """The partitioned peers changed (an injected fault): calls to them end now."""
        for link in self._links.values():
            link.partition_changed()

    def replica_hps(self, bucket_name: str, vbid: int) -> int | None:
        """The HPS this node acknowledges for its replica copy of `vbid` (None: no consumer for it yet)."""
        replicas = self._replicas.get(bucket_name)
        consumer = None if replicas is None else replicas.consumers.get(vbid)
        return None if consumer is None else consumer.high_prepared_seqno

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=self._channel_options)
            self._channels[address] = channel
        return channel

    def secret(self) -> str:
        push = self.rt.push
        return push.cluster_secret if push is not None and push.cluster_secret else self.rt.file_secret

    def _plan(self) -> dict[tuple[str, str], LinkSpec]:
        rt = self.rt
        if rt.config is None or self._stopped:
            return {}
        addresses = {n.node_id: n.address for n in rt.config.nodes}
        want: dict[tuple[str, str], LinkSpec] = {}
        for name, plan in rt.plans.items():
            bucket = rt.buckets.get(name)
            if bucket is None:
                continue
            groups: dict[str, list[int]] = defaultdict(list)
            for vbid, vb_plan in enumerate(plan.vbuckets):
                chain = vb_plan.chain
                if vb_plan.state is VBState.REPLICA and chain is not None and chain.active != rt.node_id:
                    groups[chain.active].append(vbid)
            for active, vbids in groups.items():
                address = addresses.get(active)
                if address:
                    want[(name, active)] = LinkSpec(bucket, plan.uuid, active, address, tuple(vbids))
        return want

    async def replan(self) -> None:
        """Match the calls to the configuration the node runs now (after each one applied)."""
        async with self._replan_lock:
            want = self._plan()
            stale = [key for key, link in self._links.items() if want.get(key) != link.spec]
            for key in stale:
                await self._links.pop(key).stop()
            # Buckets dropped or re-created lose their consumers; vbuckets no longer replicas here too.
            for name in [n for n, r in self._replicas.items() if self.rt.buckets.get(n) is not r.bucket]:
                del self._replicas[name]
            keep: dict[str, set[int]] = defaultdict(set)
            for (name, _), spec in want.items():
                keep[name].update(spec.vbuckets)
            for name, replicas in self._replicas.items():
                replicas.forget(keep.get(name, set()))
            loop = asyncio.get_running_loop()
            for key, spec in want.items():
                if key in self._links:
                    continue
                name = key[0]
                replicas = self._replicas.get(name)
                if replicas is None:
                    replicas = self._replicas[name] = BucketReplicas(spec.bucket, loop)
                self._links[key] = Link(self, spec, replicas)

    async def stop(self) -> None:
        self._stopped = True
        async with self._replan_lock:
            for link in list(self._links.values()):
                await link.stop()
            self._links.clear()
            for channel in self._channels.values():
                await channel.close()
            self._channels.clear()
