"""The thread-based backend's connections: one gRPC channel, with its KV and Admin stubs, per node address.

Owns the channel options every remote backend dials with (`CHANNEL_OPTIONS`, shared with
durakv.aio._backend) and the pool of `Node`s of one `RemoteBackend`: a node's channel is
created on first use, reused by every thread (gRPC channels are thread-safe), and closed
once, when the backend closes; after that the pool refuses to open new ones.

Must never make a call itself or decide what a failed call means (that is durakv._wire's
`rpc_failure`).
"""

from __future__ import annotations

import threading

import grpc

from durakv.proto import admin_pb2_grpc, kv_pb2_grpc

MESSAGE_SIZE_MAX = 64 * 1024 * 1024  # bytes; the contract asks for at least 32 MiB
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MESSAGE_SIZE_MAX),
    ("grpc.max_receive_message_length", MESSAGE_SIZE_MAX),
    # Cluster traffic goes straight to the nodes: an http_proxy meant for web traffic
    # must not capture it.
    ("grpc.enable_http_proxy", 0),
)


class Node:
    """One node address: its channel and stubs (created once, reused by every thread)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.kv = kv_pb2_grpc.KVStub(self.channel)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)


class NodePool:
    """The `Node` of every address a backend has called; none is opened once the pool is detached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}
        self._closed = False

    def get(self, address: str) -> Node:
        """The node at `address`, opened on first use; ConnectionRefusedError once the pool is detached."""
        node = self._nodes.get(address)
        if node is None:
            with self._lock:
                if self._closed:
                    raise ConnectionRefusedError("the cluster is closed")
                node = self._nodes.get(address)
                if node is None:
                    node = self._nodes[address] = Node(address)
        return node

    def detach(self) -> list[Node] | None:
        """Refuse new nodes from now on and hand over the open ones to close; None if already detached."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            nodes, self._nodes = list(self._nodes.values()), {}
        return nodes
