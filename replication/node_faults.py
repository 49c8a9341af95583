"""Testbed faults of a node process (DESIGN §8): a slow or failing disk, a power cut, a slow network, a partition.

Owns `NodeFaults` (what the node's NodeControl.InjectFault set: its `disk` faults and the
peers it is `partitioned` from; the replication shells read the latter), and `DiskFaults`,
the fault hook installed on the write-ahead log of every bucket the node serves
(`WriteAheadLog.fault_hook`, called by the WAL's flusher thread before each write, segment
creation and fsync): it sleeps `fsync_delay_ms` (a slow disk), fails the next
`fsync_errors` fsyncs with EIO, and while the disk is `full` fails every write and segment
creation with ENOSPC (either way the log refuses writes, rewrites from memory and recovers:
engine/wal/FORMAT.md). And
`power_loss`: every bucket's log drops what was not fsynced (`WriteAheadLog.power_loss`),
then the process exits at once with status 137, answering nobody -- what a power cut leaves
of a node whose SIGKILL alone would keep the page cache.

A replication delay is paid by both replication shells before each message they send (the
producer's rounds, the replica's acks); what became ready meanwhile joins the next message,
so the delay is latency, not a throughput cap. A dropped message ends its call instead of
leaving (a gRPC stream cannot lose one message and go on); the replica reconnects.

A partition is enforced by both replication shells, so one side's fault is enough: the
producer (`replication_service`) ends and refuses calls from a partitioned replica, the
replicator (`replicator`) ends and does not open calls to a partitioned active. Clients and
the manager still reach the node, as a partition between data nodes leaves them.

Must never be reachable without the cluster secret (NodeControl checks it), or fake a
fault elsewhere than in the real log, the real process and the real calls.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
import time
from collections.abc import Iterable

from durakv.engine.embedded import EmbeddedBucket

log = logging.getLogger("durakv.node")

POWER_LOSS_EXIT_STATUS = 137  # as a SIGKILL: the process ends without a word
FSYNC_DELAY_MS_MAX = 60_000
FSYNC_ERRORS_MAX = 1_000_000
REPLICATION_DELAY_MS_MAX = 1000  # below the replication calls' liveness intervals


class DiskFaults:
    """The node's disk faults; `install` hooks them into each bucket's WAL (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fsync_delay_ms = 0
        self.fsync_errors = 0  # fsyncs still to fail
        self.full = False  # every write fails with ENOSPC

    def set(self, fsync_delay_ms: int, fsync_errors: int, full: bool = False) -> None:
        if not 0 <= fsync_delay_ms <= FSYNC_DELAY_MS_MAX:
            raise ValueError(f"fsync delay must be 0 to {FSYNC_DELAY_MS_MAX} ms, not {fsync_delay_ms}")
        if not 0 <= fsync_errors <= FSYNC_ERRORS_MAX:
            raise ValueError(f"fsync errors must be 0 to {FSYNC_ERRORS_MAX}, not {fsync_errors}")
        with self._lock:
            self.fsync_delay_ms, self.fsync_errors, self.full = fsync_delay_ms, fsync_errors, full
        log.warning(
            "disk faults now: fsync delay %d ms, %d fsync errors to come, %s",
            fsync_delay_ms,
            fsync_errors,
            "disk full" if full else "room on the disk",
        )

    def install(self, buckets: Iterable[EmbeddedBucket]) -> None:
        """Hook every bucket's log (a bucket created later gets none until the next injection)."""
        for bucket in buckets:
            bucket.wal.fault_hook = self._hook

    def _hook(self, point: str) -> None:
        if point != "fsync":
            if self.full:  # "write" or "create"
                raise OSError(errno.ENOSPC, "injected full disk (durakv cluster fault)")
            return
        with self._lock:
            delay_s = self.fsync_delay_ms / 1000
            fail = self.fsync_errors > 0
            if fail:
                self.fsync_errors -= 1
        if delay_s:
            time.sleep(delay_s)  # on the WAL's flusher thread: the disk is slow, not the node
        if fail:
            raise OSError(errno.EIO, "injected fsync error (durakv cluster fault)")


class NodeFaults:
    """Every fault injected into this node process."""

    def __init__(self) -> None:
        self.disk = DiskFaults()
        self.partitioned: frozenset[str] = frozenset()  # peer node ids; read on the event loop
        self.replication_delay_s = 0.0  # added before each replication message this node sends
        self.replication_drop_percent = 0  # chance that a message ends its call instead
        self._rng = random.Random()

    def set_network(self, delay_ms: int, drop_percent: int) -> None:
        """Replace the network faults (ValueError, and nothing changes, if out of range)."""
        if not 0 <= delay_ms <= REPLICATION_DELAY_MS_MAX:
            raise ValueError(f"replication delay must be 0 to {REPLICATION_DELAY_MS_MAX} ms, not {delay_ms}")
        if not 0 <= drop_percent <= 100:
            raise ValueError(f"replication drop must be 0 to 100 %, not {drop_percent}")
        self.replication_delay_s, self.replication_drop_percent = delay_ms / 1000, drop_percent
        log.warning("replication messages sent from here: delayed %d ms, %d %% dropped", delay_ms, drop_percent)

    def drop(self) -> bool:
        """Whether the replication message about to be sent is lost (its call ends instead)."""
        return self.replication_drop_percent > 0 and self._rng.random() * 100 < self.replication_drop_percent

    def partition(self, peers: Iterable[str], known: Iterable[str], node_id: str) -> None:
        """Replace the partitioned peers (ValueError for an id that is not another node)."""
        wanted, others = frozenset(peers), set(known) - {node_id}
        unknown = sorted(wanted - others)
        if unknown:
            raise ValueError(f"not other nodes of this cluster: {', '.join(p[:64] for p in unknown)}")
        self.partitioned = wanted
        if wanted:
            log.warning("partitioned from %s (replication)", ", ".join(sorted(wanted)))
        else:
            log.warning("partitions healed")


def describe(disk, network, partitioned_from: Iterable[str]) -> tuple[str, ...]:
    """The faults in place, in words (admin_pb2.DiskFault, NetworkFault; none: empty)."""
    out = []
    if disk.fsync_delay_ms:
        out.append(f"fsync +{disk.fsync_delay_ms} ms")
    if disk.fsync_errors:
        out.append(f"{disk.fsync_errors} fsync errors to come")
    if disk.full:
        out.append("disk full")
    if network.replication_delay_ms:
        out.append(f"replication +{network.replication_delay_ms} ms")
    if network.replication_drop_percent:
        out.append(f"{network.replication_drop_percent} % replication dropped")
    peers = sorted(partitioned_from)
    if peers:
        out.append(f"partitioned from {', '.join(peers)}")
    return tuple(out)


def power_loss(buckets: Iterable[EmbeddedBucket]) -> None:
    """Drop every unsynced WAL byte of every bucket, then end the process at once (never returns)."""
    log.warning("injected power loss: dropping what was not fsynced and stopping now")
    for bucket in buckets:
        try:
            bucket.wal.power_loss()
        except OSError:  # the disk is "gone" anyway: what was synced is what survives
            log.exception("power loss of bucket %s", bucket.config.name)
    logging.shutdown()
    os._exit(POWER_LOSS_EXIT_STATUS)
