"""Durability types of the SDK (names and values as in the Couchbase Python SDK 4.x).

`ServerDurability(level)` asks the node for a SyncWrite; `ClientDurability(replicate_to,
persist_to)` is Couchbase's older observe-based durability. `DurabilityParser` turns the
`durability` option into what a request carries: an int level for server durability, a dict
for client durability, and `None` for anything else.

The `None` case reproduces a Couchbase trap on purpose: passing a bare
`DurabilityLevel.MAJORITY` (instead of `ServerDurability(DurabilityLevel.MAJORITY)`) makes the
write run *without* durability. Code written for Couchbase must behave the same here, so the
value is still dropped -- but a warning is logged so the user can find out why.
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Any

from .exceptions import InvalidArgumentException

_log = logging.getLogger("durakv.durability")


class ReplicateTo(IntEnum):
    """Client durability: number of replicas that must hold the mutation in memory."""

    NONE = 0
    ONE = 1
    TWO = 2
    THREE = 3


class PersistTo(IntEnum):
    """Client durability: number of nodes that must have persisted the mutation (3.x values)."""

    NONE = 0
    ONE = 2
    TWO = 3
    THREE = 4


class PersistToExtended(IntEnum):
    """Client durability with the active node addressable on its own."""

    NONE = 0
    ACTIVE = 1
    ONE = 2
    TWO = 3
    THREE = 4
    FOUR = 5


_SERVER_STRS = {
    0: "none",
    1: "majority",
    2: "majority_and_persist_to_active",
    3: "persist_to_majority",
}
# Also accept the REST spellings Couchbase's cluster manager uses.
_FROM_SERVER_STRS = {
    **{name: level for level, name in _SERVER_STRS.items()},
    "majorityAndPersistActive": 2,
    "persistToMajority": 3,
}


class DurabilityLevel(IntEnum):
    """Server (SyncWrite) durability level; the value is the wire byte."""

    NONE = 0
    MAJORITY = 1
    MAJORITY_AND_PERSIST_TO_ACTIVE = 2
    PERSIST_TO_MAJORITY = 3

    @classmethod
    def to_server_str(cls, value: int) -> str:
        return _SERVER_STRS.get(int(value), "none")

    @classmethod
    def from_server_str(cls, value: str) -> DurabilityLevel:
        return cls(_FROM_SERVER_STRS.get(value, 0))


class Durability(IntEnum):
    """**DEPRECATED** use `DurabilityLevel` (same members and values)."""

    NONE = 0
    MAJORITY = 1
    MAJORITY_AND_PERSIST_TO_ACTIVE = 2
    PERSIST_TO_MAJORITY = 3


class ClientDurability:
    """Observe-based durability: wait until replicas hold / nodes persist the mutation."""

    def __init__(
        self,
        replicate_to: ReplicateTo = ReplicateTo.NONE,
        persist_to: PersistTo | PersistToExtended = PersistTo.NONE,
    ) -> None:
        self._replicate_to = replicate_to
        self._persist_to = persist_to

    @property
    def replicate_to(self) -> ReplicateTo:
        return self._replicate_to

    @property
    def persist_to(self) -> PersistTo | PersistToExtended:
        return self._persist_to

    def __repr__(self) -> str:
        return f"ClientDurability(replicate_to={self._replicate_to!r}, persist_to={self._persist_to!r})"


class ServerDurability:
    """SyncWrite durability enforced by the node at the given level."""

    def __init__(self, level: DurabilityLevel) -> None:
        # Accept the deprecated `Durability` enum and plain ints 0..3 as well.
        try:
            self._level = DurabilityLevel(int(level))
        except (TypeError, ValueError):
            raise InvalidArgumentException(f"not a durability level: {level!r}") from None

    @property
    def level(self) -> DurabilityLevel:
        return self._level

    def __repr__(self) -> str:
        return f"ServerDurability({self._level!r})"


DurabilityType = ClientDurability | ServerDurability


class DurabilityParser:
    """Turns a `durability` option into an int level, a client-durability dict, or None."""

    @staticmethod
    def parse_durability(durability: Any) -> int | dict[str, int] | None:
        if isinstance(durability, ServerDurability):
            return int(durability.level)
        if isinstance(durability, ClientDurability):
            return {
                "replicate_to": int(durability.replicate_to),
                "persist_to": int(durability.persist_to),
            }
        if durability is not None:
            _log.warning(
                "durability=%r is ignored and the write runs without durability: wrap a level in "
                "ServerDurability(...) (as the Couchbase SDK requires)",
                durability,
            )
        return None
