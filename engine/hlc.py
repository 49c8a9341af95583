"""The hybrid logical clock that hands out CAS values, one per vbucket.

A CAS is wall-clock nanoseconds with the low 16 bits cleared; when that is not larger
than the last CAS handed out, the clock runs in logical mode and returns last + 1.
Peers' CAS values (replication, recovery) raise the floor, so a CAS is never reused for
a vbucket even when the wall clock steps back. Pure: the caller passes `now`.
"""

from __future__ import annotations

_LOW_BITS_MASK = ~0xFFFF
CAS_MAX = 2**64 - 1
CAS_LOCKED = CAS_MAX  # what a plain get shows for a locked document (-1 as signed)


class HybridLogicalClock:
    __slots__ = ("max_cas",)

    def __init__(self, max_cas: int = 0) -> None:
        self.max_cas = max_cas

    def next_cas(self, now: float) -> int:
        physical = int(now * 1_000_000_000) & _LOW_BITS_MASK
        cas = physical if physical > self.max_cas else self.max_cas + 1
        # CAS_MAX is reserved for "locked"; running into it would mean a broken clock.
        assert cas < CAS_MAX, "hybrid logical clock exhausted"
        self.max_cas = cas
        return cas

    def observe(self, cas: int) -> None:
        """A CAS made elsewhere (a replica stream, the WAL at recovery) raises the floor."""
        if cas > self.max_cas and cas != CAS_MAX:
            self.max_cas = cas
