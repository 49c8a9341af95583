"""The boundary between the SDK objects users hold and the node that serves them.

`Collection`, `BinaryCollection` and the managers turn user calls (options, keyword
arguments, transcoding, validation, retries, exception mapping) into `KVRequest`s and
hand them to a `Backend`. Two backends exist: the embedded one (an in-process engine
node) and, later, the gRPC one. A backend executes exactly one attempt of one request
and either returns a `KVResponse` or raises `BackendStatusError` carrying the KV status
code (Couchbase's numbering) -- retries and deadlines are the SDK's, not the backend's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol


class Op(Enum):
    GET = "get"
    EXISTS = "exists"
    INSERT = "insert"
    UPSERT = "upsert"
    REPLACE = "replace"
    REMOVE = "remove"
    TOUCH = "touch"
    GET_AND_TOUCH = "get_and_touch"
    GET_AND_LOCK = "get_and_lock"
    UNLOCK = "unlock"
    INCREMENT = "increment"
    DECREMENT = "decrement"
    APPEND = "append"
    PREPEND = "prepend"
    GET_ANY_REPLICA = "get_any_replica"
    GET_ALL_REPLICAS = "get_all_replicas"


@dataclass(slots=True)
class KVRequest:
    op: Op
    bucket: str
    scope: str
    collection: str
    key: bytes
    value: bytes = b""
    flags: int = 0
    cas: int = 0
    expiry: int = 0  # wire form: 0 never, 1..30 days relative seconds, else absolute unix seconds
    preserve_expiry: bool = False
    durability_level: int = 0  # DurabilityLevel value; 0 = none
    durability_timeout_ms: int | None = None  # sent to the server: 90 % of the op timeout
    lock_time_s: int = 0
    delta: int = 1
    initial: int | None = None  # counters: None = do not create
    with_expiry: bool = False
    timeout_s: float = 2.5  # the whole operation's budget, for the backend's own waits
    # Observe-based durability (ClientDurability): (replicate_to, persist_to) as numbers, or None.
    client_durability: tuple[int, int] | None = None


@dataclass(slots=True)
class KVResponse:
    cas: int = 0
    value: bytes = b""
    flags: int = 0
    expiry: int = 0  # absolute unix seconds, 0 = none (filled for get with_expiry)
    seqno: int = 0
    vbucket: int = 0
    vbucket_uuid: int = 0
    counter: int = 0
    exists: bool = True
    is_replica: bool = False

    @classmethod
    def of_mutation(cls, outcome: Any) -> KVResponse:
        """From anything carrying a mutation's cas, seqno, vbucket, vbucket_uuid and counter
        (the engine's MutationOutcome, kv.proto's MutationResponse)."""
        return cls(
            cas=outcome.cas,
            seqno=outcome.seqno,
            vbucket=outcome.vbucket,
            vbucket_uuid=outcome.vbucket_uuid,
            counter=outcome.counter,
        )


@dataclass(slots=True)
class ObservedCopy:
    """One node's view of a vbucket, for observe-based durability."""

    is_active: bool
    vbucket_uuid: int
    current_seqno: int  # received (in memory)
    persisted_seqno: int  # fsynced


class BackendStatusError(Exception):
    """One attempt was refused by the node with a KV status (Couchbase numbering)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"status 0x{status:02x}")
        self.status = status
        self.message = message


class Backend(Protocol):
    def execute(self, request: KVRequest) -> KVResponse | list[KVResponse]: ...

    def bucket_names(self) -> list[str]: ...

    def manage(self, action: str, **args: Any) -> Any:
        """Bucket and collection management: see client/management for the actions."""
        ...

    def close(self) -> None: ...
