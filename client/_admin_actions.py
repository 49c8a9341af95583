"""The management actions: each action of client/management as an Admin RPC, and how its failures surface.

Owns `ADMIN_ACTIONS` (action name -> RPC, request builder, response parser, whether it
changes the configuration), the request of one call (an argument the wire cannot carry is
EINVAL), which transport failures let a call go to another node (`admin_try_next`: a
change that may have been made is never sent twice), and the SDK exception a transport
failure becomes (`admin_transport_failure`). Shared by the thread-based and the asyncio
backends.

Pure: it never makes a call or chooses the node to ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from durakv.proto import admin_pb2, cluster_pb2

from . import exceptions as exc
from ._backend import BackendStatusError
from ._backends import BackendTimeoutError
from ._errors import KVStatus


@dataclass(frozen=True)
class AdminAction:
    rpc: str
    build: Callable[[dict[str, Any]], Any]
    parse: Callable[[Any], Any]
    changes_config: bool


def _settings_dict(settings: Any) -> dict[str, Any]:
    return {
        "name": settings.name,
        "num_vbuckets": settings.num_vbuckets,
        "num_replicas": settings.num_replicas,
        "durability_min_level": int(settings.durability_min_level),
        "max_ttl_s": settings.max_ttl_s,
    }


def _create_bucket(args: dict[str, Any]) -> Any:
    s = args["settings"]
    return admin_pb2.CreateBucketRequest(
        settings=cluster_pb2.BucketSettings(
            name=s["name"],
            num_vbuckets=s.get("num_vbuckets") or 0,
            num_replicas=s.get("num_replicas") or 0,
            durability_min_level=s.get("durability_min_level") or 0,
            max_ttl_s=s.get("max_ttl_s") or 0,
        )
    )


def _scopes(response: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": scope.name,
            "collections": [{"name": c.name, "max_expiry_s": c.max_ttl_s} for c in scope.collections],
        }
        for scope in response.manifest.scopes
    ]


def _nothing(response: Any) -> None:
    return None


# The actions of client/management (BucketManager, CollectionManager) -> Admin RPCs.
ADMIN_ACTIONS: dict[str, AdminAction] = {
    "create_bucket": AdminAction("CreateBucket", _create_bucket, _nothing, True),
    "drop_bucket": AdminAction("DropBucket", lambda a: admin_pb2.DropBucketRequest(name=a["name"]), _nothing, True),
    "get_bucket": AdminAction(
        "GetBucket", lambda a: admin_pb2.GetBucketRequest(name=a["name"]), lambda r: _settings_dict(r.settings), False
    ),
    "get_all_buckets": AdminAction(
        "ListBuckets", lambda a: admin_pb2.ListBucketsRequest(), lambda r: [_settings_dict(b) for b in r.buckets], False
    ),
    "create_scope": AdminAction(
        "CreateScope", lambda a: admin_pb2.CreateScopeRequest(bucket=a["bucket"], scope=a["scope"]), _nothing, True
    ),
    "drop_scope": AdminAction(
        "DropScope", lambda a: admin_pb2.DropScopeRequest(bucket=a["bucket"], scope=a["scope"]), _nothing, True
    ),
    "create_collection": AdminAction(
        "CreateCollection",
        lambda a: admin_pb2.CreateCollectionRequest(
            bucket=a["bucket"], scope=a["scope"], collection=a["collection"], max_ttl_s=a.get("max_expiry_s") or 0
        ),
        _nothing,
        True,
    ),
    "drop_collection": AdminAction(
        "DropCollection",
        lambda a: admin_pb2.DropCollectionRequest(bucket=a["bucket"], scope=a["scope"], collection=a["collection"]),
        _nothing,
        True,
    ),
    "get_all_scopes": AdminAction(
        "GetCollectionsManifest", lambda a: admin_pb2.GetCollectionsManifestRequest(bucket=a["bucket"]), _scopes, False
    ),
}


def admin_request(action: str, args: dict[str, Any]) -> tuple[AdminAction, Any]:
    spec = ADMIN_ACTIONS.get(action)
    if spec is None:
        raise BackendStatusError(KVStatus.NOT_SUPPORTED, f"{action} is not supported by a durakv cluster")
    try:
        return spec, spec.build(args)
    except (ValueError, TypeError) as error:
        raise BackendStatusError(KVStatus.EINVAL, f"{action}: {error}") from None


def admin_transport_failure(action: str, failure: Exception, changes: bool) -> Exception:
    """A management call's transport failure as the exception the manager lets through."""
    if isinstance(failure, BackendStatusError):
        return failure
    if isinstance(failure, BackendTimeoutError):
        cls = exc.AmbiguousTimeoutException if changes else exc.UnAmbiguousTimeoutException
        return cls(f"{action}: {failure}", inner_cause=failure)
    if isinstance(failure, ConnectionRefusedError):
        return exc.ServiceUnavailableException(f"{action}: no node could be reached ({failure})", inner_cause=failure)
    return exc.RequestCanceledException(
        f"{action}: the connection failed in flight; the change may or may not have been made ({failure})"
        if changes
        else f"{action}: {failure}",
        inner_cause=failure,
    )


def admin_try_next(failure: Exception, changes: bool) -> bool:
    """Whether a management call that failed this way may be sent to another node.

    Never sent: yes. Maybe sent: only if it changes nothing (a change that may have been
    made is not made twice). A refusal or a timeout: no.
    """
    if isinstance(failure, ConnectionRefusedError):
        return True
    return isinstance(failure, ConnectionError) and not changes
