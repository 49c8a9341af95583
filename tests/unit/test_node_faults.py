"""Testbed faults of a node (replication/node_faults.py): the disk fault hook and partitions."""

from __future__ import annotations

import errno

import pytest

from durakv.proto import admin_pb2
from durakv.replication.node_faults import (
    FSYNC_DELAY_MS_MAX,
    REPLICATION_DELAY_MS_MAX,
    DiskFaults,
    NodeFaults,
    describe,
)


def test_fsync_errors_fail_exactly_that_many_fsyncs_and_nothing_else():
    faults = DiskFaults()
    faults.set(0, 2)
    faults._hook("write")  # only fsyncs fail
    for _ in range(2):
        with pytest.raises(OSError) as failed:
            faults._hook("fsync")
        assert failed.value.errno == errno.EIO
    faults._hook("fsync")
    assert faults.fsync_errors == 0


def test_a_full_disk_fails_every_write_and_segment_creation_with_enospc_until_cleared():
    faults = DiskFaults()
    faults.set(0, 0, full=True)
    for point in ("write", "create", "write"):
        with pytest.raises(OSError) as failed:
            faults._hook(point)
        assert failed.value.errno == errno.ENOSPC
    faults._hook("fsync")  # nothing was written: there is nothing for an fsync to fail on
    faults.set(0, 0)
    faults._hook("write")
    faults._hook("create")


@pytest.mark.parametrize("delay_ms, errors", [(-1, 0), (FSYNC_DELAY_MS_MAX + 1, 0), (0, -1)])
def test_disk_faults_out_of_range_are_refused_and_change_nothing(delay_ms, errors):
    faults = DiskFaults()
    faults.set(5, 1)
    with pytest.raises(ValueError):
        faults.set(delay_ms, errors)
    assert (faults.fsync_delay_ms, faults.fsync_errors) == (5, 1)


def test_a_partition_names_other_nodes_of_the_cluster_only():
    faults = NodeFaults()
    faults.partition(["n1", "n3"], known=["n1", "n2", "n3"], node_id="n2")
    assert faults.partitioned == {"n1", "n3"}
    for peers in (["n2"], ["n9"]):
        with pytest.raises(ValueError, match="not other nodes"):
            faults.partition(peers, known=["n1", "n2", "n3"], node_id="n2")
    assert faults.partitioned == {"n1", "n3"}
    faults.partition([], known=["n1", "n2", "n3"], node_id="n2")
    assert faults.partitioned == frozenset()


def test_network_faults_are_bounded_and_change_nothing_when_refused():
    faults = NodeFaults()
    faults.set_network(250, 10)
    assert (faults.replication_delay_s, faults.replication_drop_percent) == (0.25, 10)
    for delay_ms, drop in ((REPLICATION_DELAY_MS_MAX + 1, 0), (0, 101)):
        with pytest.raises(ValueError):
            faults.set_network(delay_ms, drop)
    assert (faults.replication_delay_s, faults.replication_drop_percent) == (0.25, 10)


def test_drop_follows_its_percentage():
    faults = NodeFaults()
    assert not any(faults.drop() for _ in range(1000))
    faults.set_network(0, 100)
    assert all(faults.drop() for _ in range(1000))
    faults.set_network(0, 30)
    assert 150 < sum(faults.drop() for _ in range(1000)) < 450


def test_faults_are_described_in_words_and_none_is_nothing():
    assert describe(admin_pb2.DiskFault(), admin_pb2.NetworkFault(), []) == ()
    disk = admin_pb2.DiskFault(fsync_delay_ms=20, fsync_errors=2, full=True)
    network = admin_pb2.NetworkFault(replication_delay_ms=100, replication_drop_percent=5)
    assert describe(disk, network, ["node3", "node2"]) == (
        "fsync +20 ms",
        "2 fsync errors to come",
        "disk full",
        "replication +100 ms",
        "5 % replication dropped",
        "partitioned from node2, node3",
    )
