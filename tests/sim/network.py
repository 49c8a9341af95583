"""A simulated network for multi-node runs: ordered streams between nodes, delay, breaks, partitions.

Owns message delivery between simulated nodes. Replication (DESIGN §5) runs one gRPC
bidirectional stream per (replica node -> active node) pair, and gRPC over TCP gives a
stream's messages in order, each once, or breaks the stream, after which nothing more is
delivered and both ends learn it. So this network:
- delays each message by a random latency but never delivers a stream's messages out of
  order (reordering happens only across streams);
- "drops" by breaking the stream: the message and everything after it are discarded and
  both ends' `on_broken` run (the consumer then re-requests from its last complete snapshot);
- holds messages between partitioned nodes, delivers them in order if the partition heals
  within `keepalive_s`, and breaks the stream otherwise;
- breaks every stream of a node that stops (the peer sees a connection reset);
- bounds the bytes in flight per stream direction (`send` returns False when full: gRPC's
  flow-control window; the producer waits for `on_writable`).
Messages are opaque objects; their size is given by the sender.

Must never: deliver on a broken stream, deliver a stream's messages out of order, or draw
randomness from anything but the run's PRNG.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .simclock import SimClock, Timer

Handler = Callable[[Any], None]


@dataclass
class NetworkOptions:
    latency_s: tuple[float, float] = (0.0001, 0.002)
    break_probability: float = 0.0  # per message sent: the stream breaks instead
    keepalive_s: float = 1.0  # a partitioned stream breaks after this long
    bytes_in_flight_max: int = 1 << 20  # per stream direction


@dataclass(eq=False)
class _Direction:
    sender: str
    receiver: str
    on_message: Handler
    on_writable: Callable[[], None] | None = None
    queue: deque[tuple[Any, int]] = field(default_factory=deque)  # (message, size), in send order
    in_flight_bytes: int = 0
    delivery: Timer | None = None
    last_delivery_time: float = 0.0


@dataclass(eq=False)
class Stream:
    """A bidirectional stream between `opener` and `peer` (e.g. replica -> active)."""

    id: int
    name: str
    opener: str
    peer: str
    directions: dict[str, _Direction]  # by sender
    on_broken: Callable[[str], None]
    open: bool = True
    held_since: float | None = None  # when a partition began to hold it


class SimNetwork:
    """Streams between named nodes (see the module docstring)."""

    def __init__(self, clock: SimClock, options: NetworkOptions | None = None) -> None:
        self.clock = clock
        self.options = options or NetworkOptions()
        self.streams: list[Stream] = []
        self._cut: set[tuple[str, str]] = set()  # unordered pairs, stored both ways
        self.delivered = 0
        self.breaks = 0

    def connect(
        self,
        opener: str,
        peer: str,
        name: str,
        *,
        at_opener: Handler,
        at_peer: Handler,
        on_broken: Callable[[str], None],
    ) -> Stream:
        """Open a stream; `at_x` receives the messages sent to x; `on_broken(reason)` runs once."""
        directions = {opener: _Direction(opener, peer, at_peer), peer: _Direction(peer, opener, at_opener)}
        stream = Stream(len(self.streams) + 1, name, opener, peer, directions, on_broken)
        self.streams.append(stream)
        return stream

    def send(self, stream: Stream, sender: str, message: Any, size: int) -> bool:
        """Queue a message; False (nothing queued) when the stream is broken or its window is full."""
        direction = stream.directions[sender]
        if not stream.open or direction.in_flight_bytes + size > self.options.bytes_in_flight_max:
            return False
        if self.clock.chance(self.options.break_probability):
            self.break_stream(stream, "message dropped")
            return False
        direction.queue.append((message, size))
        direction.in_flight_bytes += size
        self._schedule(stream, direction)
        return True

    def _schedule(self, stream: Stream, direction: _Direction) -> None:
        if direction.delivery is not None or not direction.queue or not stream.open:
            return
        if (direction.sender, direction.receiver) in self._cut:
            if stream.held_since is None:
                stream.held_since = self.clock.time
                self.clock.call_later(self.options.keepalive_s, self._keepalive, stream)
            return
        latency = self.clock.uniform(*self.options.latency_s)
        when = max(self.clock.time + latency, direction.last_delivery_time)  # FIFO within the stream
        direction.delivery = self.clock.call_at(when, self._deliver, stream, direction)

    def _deliver(self, stream: Stream, direction: _Direction) -> None:
        direction.delivery = None
        if not stream.open:
            return
        if (direction.sender, direction.receiver) in self._cut:
            self._schedule(stream, direction)  # held until the partition heals
            return
        message, size = direction.queue.popleft()
        direction.in_flight_bytes -= size
        direction.last_delivery_time = self.clock.time
        self.delivered += 1
        direction.on_message(message)
        if direction.on_writable is not None and stream.open:
            direction.on_writable()
        self._schedule(stream, direction)

    def _keepalive(self, stream: Stream) -> None:
        held_s = None if stream.held_since is None else self.clock.time - stream.held_since
        # A timer left by an earlier, healed partition must not cut a newer one short.
        if stream.open and held_s is not None and held_s >= self.options.keepalive_s * 0.999 and self._held(stream):
            self.break_stream(stream, "partitioned longer than the keepalive")

    def _held(self, stream: Stream) -> bool:
        return any((d.sender, d.receiver) in self._cut and d.queue for d in stream.directions.values())

    def break_stream(self, stream: Stream, reason: str) -> None:
        if not stream.open:
            return
        stream.open = False
        self.breaks += 1
        for direction in stream.directions.values():
            if direction.delivery is not None:
                direction.delivery.cancel()
            direction.queue.clear()
            direction.in_flight_bytes = 0
        self.clock.log("net", f"stream {stream.name} ({stream.opener}<->{stream.peer}) broken: {reason}")
        stream.on_broken(reason)

    # -- faults -------------------------------------------------------------------------
    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        for a in side_a:
            for b in side_b:
                self._cut.update({(a, b), (b, a)})
        self.clock.log("net", f"partition {sorted(side_a)} | {sorted(side_b)}")

    def heal(self) -> None:
        self._cut.clear()
        self.clock.log("net", "partition healed")
        for stream in self.streams:
            stream.held_since = None
            for direction in stream.directions.values():
                self._schedule(stream, direction)

    def node_down(self, node: str) -> None:
        """A node stopped: each of its open streams breaks (the peer sees a reset)."""
        for stream in self.streams:
            if stream.open and node in (stream.opener, stream.peer):
                self.break_stream(stream, f"{node} stopped")
