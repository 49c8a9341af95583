"""Keys: validation and the key -> vbucket hash. Pure."""

from __future__ import annotations

import zlib

from .errors import KVError, Status
from .limits import KEY_LEN_MAX_DEFAULT_COLLECTION, KEY_LEN_MAX_NAMED_COLLECTION

DEFAULT_COLLECTION_ID = 0


def vbucket_of(key: bytes, num_vbuckets: int) -> int:
    """Couchbase's mapping: CRC-32 of the key bytes only, bits 16..30, modulo the vbucket count."""
    return ((zlib.crc32(key) >> 16) & 0x7FFF) % num_vbuckets


def check_key(key: bytes, collection_id: int) -> None:
    """Raise EINVAL for an empty key or one longer than the collection allows."""
    if not key:
        raise KVError(Status.EINVAL, "key is empty")
    limit = KEY_LEN_MAX_DEFAULT_COLLECTION if collection_id == DEFAULT_COLLECTION_ID else KEY_LEN_MAX_NAMED_COLLECTION
    if len(key) > limit:
        raise KVError(Status.EINVAL, f"key of {len(key)} bytes exceeds the {limit}-byte limit", key=key)
