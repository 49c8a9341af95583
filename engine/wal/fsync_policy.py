"""The WAL's fsync policy: when the flusher fdatasyncs, as a value parsed from configuration.

A plain value: it does no I/O and keeps no time; the flusher (log.py) reads `mode` and
`interval_ms` to decide. `str(policy)` gives back the text `parse` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from durakv.engine import limits

__all__ = ["FsyncPolicy"]


@dataclass(frozen=True)
class FsyncPolicy:
    """When the flusher fdatasyncs: every batch, at most every `interval_ms`, or on request only."""

    mode: Literal["always", "interval", "never"]
    interval_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> FsyncPolicy:
        if text == "always" or text == "never":
            return cls(text)
        name, sep, value = text.partition("=")
        if name == "interval" and sep and value.isdigit():
            interval_ms = int(value)
            if 1 <= interval_ms <= limits.WAL_FSYNC_INTERVAL_MAX_MS:
                return cls("interval", interval_ms)
        raise ValueError(
            f"fsync policy must be 'always', 'never' or 'interval=N' with 1 <= N <= "
            f"{limits.WAL_FSYNC_INTERVAL_MAX_MS} (ms), got {text!r}"
        )

    def __str__(self) -> str:
        return f"interval={self.interval_ms}" if self.mode == "interval" else self.mode
