"""`Collection`: the key-value API of the Couchbase Python SDK 4.x over a durakv backend.

Each method merges its options (`durakv.options.forward_args`), validates the key as
Couchbase does (str or bytes, not empty; lengths are the node's to check), transcodes the
value, builds one `KVRequest` and runs it through `_retry.execute`, which owns retries,
deadlines and exception mapping. `get` without options is the hot path and does almost
nothing before `backend.execute`; its value is decoded lazily by `GetResult`.

Observe-based `ClientDurability(replicate_to, persist_to)` is carried out after the write by
`client/_observe.py`, as the Couchbase SDK does.

The option classes stay importable from here, as older Couchbase code expects.
"""

from __future__ import annotations

import re
from typing import Any

from ._backend import KVRequest, KVResponse, Op
from ._retry import DURABLE_OPS, apply_timeouts, execute
from .binary_collection import BinaryCollection
from .exceptions import (
    CouchbaseException,
    DocumentNotFoundException,
    DocumentNotJsonException,
    InvalidArgumentException,
    KeyValueErrorContext,
)
from .options import (
    AppendOptions,
    DecrementOptions,
    DeltaValue,
    ExistsOptions,
    GetAllReplicasOptions,
    GetAndLockOptions,
    GetAndTouchOptions,
    GetAnyReplicaOptions,
    GetOptions,
    IncrementOptions,
    InsertOptions,
    PrependOptions,
    RemoveOptions,
    ReplaceOptions,
    SignedInt64,
    TouchOptions,
    UnlockOptions,
    UpsertOptions,
    forward_args,
)
from .result import (
    ExistsResult,
    GetReplicaResult,
    GetResult,
    MultiExistsResult,
    MultiGetResult,
    MultiMutationResult,
    MutationResult,
    MutationToken,
)

__all__ = [
    "AppendOptions",
    "Collection",
    "DecrementOptions",
    "DeltaValue",
    "ExistsOptions",
    "GetAllReplicasOptions",
    "GetAndLockOptions",
    "GetAndTouchOptions",
    "GetAnyReplicaOptions",
    "GetOptions",
    "IncrementOptions",
    "InsertOptions",
    "PrependOptions",
    "RemoveOptions",
    "ReplaceOptions",
    "SignedInt64",
    "TouchOptions",
    "UnlockOptions",
    "UpsertOptions",
]

_GET = Op.GET
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _reader_of(backend: Any, bucket: str, scope: str, collection: str) -> Any:
    """The backend's direct single-attempt get for one collection, or a stand-in that defers to execute."""
    make = getattr(backend, "reader", None)
    reader = make(bucket, scope, collection) if make is not None else None
    return reader if reader is not None else _no_reader


def _no_reader(key: bytes) -> Any:
    raise LookupError("no direct reader")


class Collection:
    """A collection of documents, addressed by key."""

    def __init__(self, scope: Any, name: str) -> None:
        bucket = scope._bucket
        cluster = bucket._cluster
        self._scope = scope
        self._name = name
        self._scope_name = scope.name
        self._bucket_name = bucket.name
        self._backend = cluster._backend
        self._reader: Any = None  # the backend's direct get for this collection, fetched on first use
        self._transcoder = cluster._transcoder
        self._kv_timeout_s = cluster._kv_timeout_s
        self._mutation_tokens = cluster._mutation_tokens
        self._binary: BinaryCollection | None = None

    @staticmethod
    def default_name() -> str:
        return "_default"

    @property
    def name(self) -> str:
        return self._name

    @property
    def scope_name(self) -> str:
        return self._scope_name

    @property
    def bucket_name(self) -> str:
        return self._bucket_name

    def binary(self) -> BinaryCollection:
        if self._binary is None:
            self._binary = BinaryCollection(self)
        return self._binary

    # --- reads ------------------------------------------------------------------------------

    def get(self, key: str, *opts: Any, **kwargs: Any) -> GetResult:
        if opts or kwargs:
            return self._get_with_options(key, forward_args(kwargs, *opts))
        key_bytes = key.encode() if key.__class__ is str and key else self._key_bytes(key)
        reader = self._reader
        if reader is None:
            reader = self._reader = _reader_of(self._backend, self._bucket_name, self._scope_name, self._name)
        try:
            # One attempt through the backend's direct reader (an embedded node answers in
            # microseconds); any refusal is redone through the general path, which retries
            # and raises the proper exception. A get is idempotent, so that is safe.
            response = reader(key_bytes)
        except Exception:
            request = KVRequest(
                _GET, self._bucket_name, self._scope_name, self._name, key_bytes, timeout_s=self._kv_timeout_s
            )
            response = execute(self._backend, request, True)
        return GetResult(key, response.cas, response.flags, response.value, self._transcoder)

    def _get_with_options(self, key: str, args: dict[str, Any]) -> GetResult:
        transcoder = args.get("transcoder", self._transcoder)
        project = args.get("project")
        if project and not (isinstance(project, list) and all(isinstance(p, str) for p in project)):
            raise self._invalid(key, "project must be a list of str")
        request = self._request(Op.GET, key, args)
        request.with_expiry = bool(args.get("with_expiry"))
        response = execute(self._backend, request, True)
        expiry = response.expiry if request.with_expiry else None
        result = GetResult(key, response.cas, response.flags, response.value, transcoder, expiry)
        if project:
            doc = result.value
            if not isinstance(doc, (dict, list)):
                raise DocumentNotJsonException("project needs a JSON object", context=self._context(key))
            result._value = _project(doc, project)
        return result

    def get_any_replica(self, key: str, *opts: Any, **kwargs: Any) -> GetReplicaResult:
        args = forward_args(kwargs, *opts)
        response = execute(self._backend, self._request(Op.GET_ANY_REPLICA, key, args))
        if isinstance(response, list):
            response = response[0]
        return self._replica_result(key, response, args)

    def get_all_replicas(self, key: str, *opts: Any, **kwargs: Any) -> list[GetReplicaResult]:
        args = forward_args(kwargs, *opts)
        responses = execute(self._backend, self._request(Op.GET_ALL_REPLICAS, key, args))
        if isinstance(responses, KVResponse):
            responses = [responses]
        if not responses:
            raise DocumentNotFoundException("no copy of the document exists", context=self._context(key))
        return [self._replica_result(key, r, args) for r in responses]

    def _replica_result(self, key: str, response: KVResponse, args: dict[str, Any]) -> GetReplicaResult:
        transcoder = args.get("transcoder", self._transcoder)
        return GetReplicaResult(
            key, response.cas, response.flags, response.value, transcoder, is_replica=response.is_replica
        )

    def exists(self, key: str, *opts: Any, **kwargs: Any) -> ExistsResult:
        args = forward_args(kwargs, *opts)
        try:
            response = execute(self._backend, self._request(Op.EXISTS, key, args))
        except DocumentNotFoundException:
            return ExistsResult(key, False)
        return ExistsResult(key, response.exists, response.cas if response.exists else 0)

    def get_and_touch(self, key: str, expiry: Any, *opts: Any, **kwargs: Any) -> GetResult:
        args = forward_args({**kwargs, "expiry": expiry}, *opts)
        request = self._request(Op.GET_AND_TOUCH, key, args)
        request.expiry = self._required(key, args, "expiry")
        response = execute(self._backend, request)
        transcoder = args.get("transcoder", self._transcoder)
        return GetResult(key, response.cas, response.flags, response.value, transcoder)

    def get_and_lock(self, key: str, lock_time: Any, *opts: Any, **kwargs: Any) -> GetResult:
        args = forward_args({**kwargs, "lock_time": lock_time}, *opts)
        request = self._request(Op.GET_AND_LOCK, key, args)
        request.lock_time_s = self._required(key, args, "lock_time")
        response = execute(self._backend, request)
        transcoder = args.get("transcoder", self._transcoder)
        return GetResult(key, response.cas, response.flags, response.value, transcoder)

    # --- writes -----------------------------------------------------------------------------

    def insert(self, key: str, value: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        return self._store(Op.INSERT, key, value, forward_args(kwargs, *opts))

    def upsert(self, key: str, value: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        return self._store(Op.UPSERT, key, value, forward_args(kwargs, *opts))

    def replace(self, key: str, value: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        args = forward_args(kwargs, *opts)
        if args.get("expiry") and args.get("preserve_expiry") is True:
            raise self._invalid(key, "replace cannot take both expiry and preserve_expiry=True")
        return self._store(Op.REPLACE, key, value, args)

    def _store(self, op: Op, key: str, value: Any, args: dict[str, Any]) -> MutationResult:
        transcoder = args.get("transcoder", self._transcoder)
        request = self._request(op, key, args)
        request.value, request.flags = transcoder.encode_value(value)
        request.expiry = args.get("expiry", 0)
        if op is not Op.INSERT:
            request.preserve_expiry = bool(args.get("preserve_expiry", False))
            if op is Op.REPLACE:
                request.cas = args.get("cas", 0)
        response = execute(self._backend, request)
        return MutationResult(key, response.cas, self._token(response))

    def remove(self, key: str, *opts: Any, **kwargs: Any) -> MutationResult:
        args = forward_args(kwargs, *opts)
        request = self._request(Op.REMOVE, key, args)
        request.cas = args.get("cas", 0)
        response = execute(self._backend, request)
        return MutationResult(key, response.cas, self._token(response))

    def touch(self, key: str, expiry: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        args = forward_args({**kwargs, "expiry": expiry}, *opts)
        request = self._request(Op.TOUCH, key, args)
        request.expiry = self._required(key, args, "expiry")
        response = execute(self._backend, request)
        return MutationResult(key, response.cas, self._token(response))

    def unlock(self, key: str, cas: int, *opts: Any, **kwargs: Any) -> None:
        args = forward_args({**kwargs, "cas": cas}, *opts)
        request = self._request(Op.UNLOCK, key, args)
        request.cas = self._required(key, args, "cas")
        execute(self._backend, request)

    # --- multi-key (one request per key, in order) ------------------------------------------

    def get_multi(self, keys: list[str], *opts: Any, **kwargs: Any) -> MultiGetResult:
        return self._multi(self.get, [(k, ()) for k in keys], opts, kwargs, MultiGetResult)

    def exists_multi(self, keys: list[str], *opts: Any, **kwargs: Any) -> MultiExistsResult:
        return self._multi(self.exists, [(k, ()) for k in keys], opts, kwargs, MultiExistsResult)

    def insert_multi(self, keys_and_docs: dict[str, Any], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        items = [(k, (v,)) for k, v in keys_and_docs.items()]
        return self._multi(self.insert, items, opts, kwargs, MultiMutationResult)

    def upsert_multi(self, keys_and_docs: dict[str, Any], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        items = [(k, (v,)) for k, v in keys_and_docs.items()]
        return self._multi(self.upsert, items, opts, kwargs, MultiMutationResult)

    def replace_multi(self, keys_and_docs: dict[str, Any], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        items = [(k, (v,)) for k, v in keys_and_docs.items()]
        return self._multi(self.replace, items, opts, kwargs, MultiMutationResult)

    def remove_multi(self, keys: list[str], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        return self._multi(self.remove, [(k, ()) for k in keys], opts, kwargs, MultiMutationResult)

    @staticmethod
    def _multi(method: Any, items: list[tuple[Any, tuple]], opts: tuple, kwargs: dict, result_cls: type) -> Any:
        merged = dict(opts[0]) if opts and opts[0] else {}
        merged.update(kwargs)
        per_key = merged.pop("per_key_options", None) or {}
        return_exceptions = merged.pop("return_exceptions", True)
        calls = [(key, (*positional, {**merged, **per_key.get(key, {})})) for key, positional in items]
        if getattr(method.__self__._backend, "execute_many", None) is not None:
            from ._remote import run_batched  # one attempt per key sent together, per node

            outcomes = run_batched(method, calls)
        else:
            outcomes = {}
            for key, args in calls:
                try:
                    outcomes[key] = method(key, *args)
                except CouchbaseException as error:
                    outcomes[key] = error
                    if not return_exceptions:
                        break
        if not return_exceptions:
            for outcome in outcomes.values():
                if isinstance(outcome, CouchbaseException):
                    raise outcome
        return result_cls(outcomes)

    # --- shared helpers ---------------------------------------------------------------------

    def _request(self, op: Op, key: Any, args: dict[str, Any]) -> KVRequest:
        """A request for `op` with timeouts and durability applied (raises on unsupported durability)."""
        request = KVRequest(op, self._bucket_name, self._scope_name, self._name, self._key_bytes(key))
        durability = args.get("durability")
        if (
            isinstance(durability, dict)
            and op in DURABLE_OPS
            and (durability["replicate_to"] or durability["persist_to"])
        ):
            request.client_durability = (int(durability["replicate_to"]), int(durability["persist_to"]))
        apply_timeouts(request, args, self._kv_timeout_s)
        return request

    def _key_bytes(self, key: Any) -> bytes:
        if isinstance(key, str):
            key_bytes = key.encode("utf-8")
        elif isinstance(key, (bytes, bytearray)):
            key_bytes = bytes(key)
        else:
            raise self._invalid(key, f"a key must be str or bytes, not {type(key).__name__}")
        if not key_bytes:
            raise self._invalid(key, "a key must not be empty")
        return key_bytes

    def _required(self, key: Any, args: dict[str, Any], name: str) -> Any:
        if name not in args:
            raise self._invalid(key, f"{name} is required")
        return args[name]

    def _token(self, response: KVResponse) -> MutationToken | None:
        if not self._mutation_tokens or not response.seqno:
            return None
        return MutationToken(response.vbucket, response.vbucket_uuid, response.seqno, self._bucket_name)

    def _context(self, key: Any) -> KeyValueErrorContext:
        if isinstance(key, (bytes, bytearray)):
            key = bytes(key).decode("utf-8", "replace")
        return KeyValueErrorContext(
            key=key if isinstance(key, str) else repr(key),
            bucket_name=self._bucket_name,
            scope_name=self._scope_name,
            collection_name=self._name,
        )

    def _invalid(self, key: Any, message: str) -> InvalidArgumentException:
        return InvalidArgumentException(message, context=self._context(key))

    def __repr__(self) -> str:
        return f"Collection({self._bucket_name}.{self._scope_name}.{self._name})"


def _project(doc: Any, paths: list[str]) -> dict[str, Any]:
    """The parts of `doc` named by `paths` (e.g. "a.b", "tags[0]"); missing paths are left out."""
    out: dict[str, Any] = {}
    for path in paths:
        parts = [m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _PATH_PART.finditer(path)]
        found, value = _lookup(doc, parts)
        if found and parts:
            _insert(out, parts, value)
    return out


def _lookup(doc: Any, parts: list[str | int]) -> tuple[bool, Any]:
    node = doc
    for part in parts:
        in_dict = isinstance(part, str) and isinstance(node, dict) and part in node
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if not (in_dict or in_list):
            return False, None
        node = node[part]
    return True, node


def _insert(out: Any, parts: list[str | int], value: Any) -> None:
    """Place `value` at `parts` in `out`; array indexes become appended elements."""
    node = out
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        child = value if last else ([] if isinstance(parts[i + 1], int) else {})
        if isinstance(node, list):
            node.append(child)
        elif last or part not in node:
            node[part] = child
        else:
            child = node[part]
            if not isinstance(child, list if isinstance(parts[i + 1], int) else dict):
                return  # an earlier, shorter path already holds this part whole
        node = child
