"""Scopes and collections of one bucket: names, ids, and the manifest uid. Pure.

Invariants: the `_default` scope always exists; a collection id is never reused within
a bucket (ids only grow, from 8 as in Couchbase; 0 is the default collection); the
manifest uid increases with every change. A dropped `_default` collection can never be
created again. Name rules as reference §5.8.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import KVError, Status
from .limits import BUCKET_NAME_LEN_MAX, COLLECTIONS_MAX, NAME_LEN_MAX, SCOPES_MAX

DEFAULT_NAME = "_default"
FIRST_USER_ID = 8

_NAME_RE = re.compile(r"[A-Za-z0-9_%\-]+")
_BUCKET_NAME_RE = re.compile(r"[A-Za-z0-9._%\-]+")


def check_name(name: object, what: str) -> str:
    """A scope or collection name a user may create; EINVAL otherwise."""
    if not isinstance(name, str) or not (1 <= len(name) <= NAME_LEN_MAX) or not _NAME_RE.fullmatch(name):
        raise KVError(Status.EINVAL, f"invalid {what} name {name!r}: 1-{NAME_LEN_MAX} of A-Z a-z 0-9 _ - %")
    if name[0] in "_%":
        raise KVError(Status.EINVAL, f"invalid {what} name {name!r}: must not start with _ or %")
    return name


def check_bucket_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not (1 <= len(name) <= BUCKET_NAME_LEN_MAX)
        or not _BUCKET_NAME_RE.fullmatch(name)
        or name[0] == "."
    ):
        raise KVError(Status.EINVAL, f"invalid bucket name {name!r}: 1-{BUCKET_NAME_LEN_MAX} of A-Z a-z 0-9 . _ - %")
    return name


@dataclass
class CollectionEntry:
    name: str
    cid: int
    max_ttl_s: int = 0


@dataclass
class ScopeEntry:
    name: str
    sid: int
    collections: dict[str, CollectionEntry] = field(default_factory=dict)


class Manifest:
    """The collection manifest of one bucket."""

    def __init__(self) -> None:
        self.uid = 0
        self.next_id = FIRST_USER_ID
        default = ScopeEntry(DEFAULT_NAME, 0, {DEFAULT_NAME: CollectionEntry(DEFAULT_NAME, 0)})
        self.scopes: dict[str, ScopeEntry] = {DEFAULT_NAME: default}
        self.default_collection_dropped = False
        self.ids: dict[tuple[str, str], int] = {}
        self._by_id: dict[int, CollectionEntry] = {}
        self._reindex()

    # -- lookups -----------------------------------------------------------------------
    def collection_id(self, scope: str, collection: str) -> int:
        """The id of scope.collection; UNKNOWN_SCOPE or UNKNOWN_COLLECTION if absent."""
        cid = self.ids.get((scope, collection))
        if cid is not None:
            return cid
        if scope not in self.scopes:
            raise KVError(Status.UNKNOWN_SCOPE, f"scope {scope!r} not found")
        raise KVError(Status.UNKNOWN_COLLECTION, f"collection {scope}.{collection} not found")

    def collection(self, cid: int) -> CollectionEntry | None:
        return self._by_id.get(cid)

    def collection_ids(self) -> set[int]:
        return set(self.ids.values())

    # -- changes -----------------------------------------------------------------------
    def create_scope(self, name: str) -> None:
        check_name(name, "scope")
        if name in self.scopes:
            raise KVError(Status.SCOPE_EXISTS, f"scope {name!r} already exists")
        if len(self.scopes) >= SCOPES_MAX:
            raise KVError(Status.EINVAL, f"a bucket holds at most {SCOPES_MAX} scopes")
        self.scopes[name] = ScopeEntry(name, self._take_id())
        self._changed()

    def drop_scope(self, name: str) -> list[int]:
        """Drop a scope; returns the ids of the collections dropped with it."""
        if name == DEFAULT_NAME:
            raise KVError(Status.EINVAL, "the _default scope cannot be dropped")
        scope = self.scopes.pop(name, None)
        if scope is None:
            raise KVError(Status.UNKNOWN_SCOPE, f"scope {name!r} not found")
        self._changed()
        return [entry.cid for entry in scope.collections.values()]

    def create_collection(self, scope: str, name: str, max_ttl_s: int = 0) -> int:
        if name == DEFAULT_NAME:
            raise KVError(Status.EINVAL, "a collection named _default cannot be created")
        check_name(name, "collection")
        if not isinstance(max_ttl_s, int) or max_ttl_s < 0 or max_ttl_s > 2**31 - 1:
            raise KVError(Status.EINVAL, f"invalid collection max expiry {max_ttl_s!r}")
        entry = self.scopes.get(scope)
        if entry is None:
            raise KVError(Status.UNKNOWN_SCOPE, f"scope {scope!r} not found")
        if name in entry.collections:
            raise KVError(Status.COLLECTION_EXISTS, f"collection {scope}.{name} already exists")
        if len(self.ids) >= COLLECTIONS_MAX:
            raise KVError(Status.EINVAL, f"a bucket holds at most {COLLECTIONS_MAX} collections")
        cid = self._take_id()
        entry.collections[name] = CollectionEntry(name, cid, max_ttl_s)
        self._changed()
        return cid

    def drop_collection(self, scope: str, name: str) -> int:
        cid = self.collection_id(scope, name)
        del self.scopes[scope].collections[name]
        if scope == DEFAULT_NAME and name == DEFAULT_NAME:
            self.default_collection_dropped = True
        self._changed()
        return cid

    # -- persistence -------------------------------------------------------------------
    def to_json(self) -> bytes:
        return json.dumps(
            {
                "uid": self.uid,
                "next_id": self.next_id,
                "default_collection_dropped": self.default_collection_dropped,
                "scopes": [
                    {
                        "name": s.name,
                        "sid": s.sid,
                        "collections": [
                            {"name": c.name, "cid": c.cid, "max_ttl_s": c.max_ttl_s} for c in s.collections.values()
                        ],
                    }
                    for s in self.scopes.values()
                ],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        manifest = cls()
        manifest.uid = doc["uid"]
        manifest.next_id = doc["next_id"]
        manifest.default_collection_dropped = doc["default_collection_dropped"]
        manifest.scopes = {
            s["name"]: ScopeEntry(
                s["name"],
                s["sid"],
                {c["name"]: CollectionEntry(c["name"], c["cid"], c["max_ttl_s"]) for c in s["collections"]},
            )
            for s in doc["scopes"]
        }
        manifest._reindex()
        return manifest

    def describe(self) -> list[dict]:
        """The scopes as the management API answers them."""
        return [
            {
                "name": s.name,
                "collections": [{"name": c.name, "max_expiry_s": c.max_ttl_s} for c in s.collections.values()],
            }
            for s in self.scopes.values()
        ]

    def _take_id(self) -> int:
        ident = self.next_id
        self.next_id += 1
        return ident

    def _changed(self) -> None:
        self.uid += 1
        self._reindex()

    def _reindex(self) -> None:
        self.ids = {(s.name, c.name): c.cid for s in self.scopes.values() for c in s.collections.values()}
        self._by_id = {c.cid: c for s in self.scopes.values() for c in s.collections.values()}
