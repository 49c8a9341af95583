"""Expiry rules, as Couchbase's server applies them (reference §5.4). Pure.

On the wire an expiry is 0 (never), 1..30 days (relative seconds, inclusive), or an
absolute unix time. The engine stores absolute seconds. An absolute time at or before
the node's start is "already expired" (one second after start); beyond 2^32-1 it is
refused. Bucket and collection max TTLs cap it.
"""

from __future__ import annotations

from .errors import KVError, Status
from .limits import EXPIRY_ABSOLUTE_MAX_S, EXPIRY_RELATIVE_MAX_S


def to_absolute(wire_expiry: int, now: float, *, start_time: float = 0.0, max_ttl_s: int = 0) -> int:
    """The absolute expiry (unix seconds, 0 = never) for a wire expiry received at `now`."""
    if wire_expiry < 0:
        raise KVError(Status.EINVAL, f"expiry {wire_expiry} is negative")
    if wire_expiry == 0:
        absolute = 0
    elif wire_expiry <= EXPIRY_RELATIVE_MAX_S:
        absolute = int(now) + wire_expiry
    else:
        absolute = wire_expiry
        if absolute <= start_time:
            absolute = int(start_time) + 1
    if max_ttl_s > 0:
        cap = int(now) + max_ttl_s
        if absolute == 0 or absolute > cap:
            absolute = cap
    if absolute > EXPIRY_ABSOLUTE_MAX_S:
        raise KVError(Status.EINVAL, f"expiry {wire_expiry} overflows 32-bit absolute seconds")
    return absolute


def is_expired(expiry: int, now: float) -> bool:
    return expiry != 0 and expiry <= now
