"""The remote backends' settings: what they read from the merged cluster options, in seconds.

Owns the defaults of the timeouts and the configuration poll interval, the parsing of the
connection string into seeds (with its options merged under the explicit ones), and the
`authorization` metadata built from a password authenticator. Shared by the thread-based
backend (durakv._remote) and the asyncio backend (durakv.aio._backend).

Must never open a channel or make a call: it only turns options into values.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ._connstr import ConnectionString, cluster_option_defaults, parse

log = logging.getLogger("durakv.remote")

CONFIG_POLL_INTERVAL_S = 2.5  # Couchbase's config_poll_interval
BOOTSTRAP_TIMEOUT_DEFAULT_S = 10.0  # reference §1.3
CONNECT_TIMEOUT_DEFAULT_S = 2.0  # per seed, per bootstrap round
MANAGEMENT_TIMEOUT_DEFAULT_S = 75.0  # Couchbase's management_timeout


@dataclass(frozen=True)
class Settings:
    """What the backend reads from the merged cluster options, in seconds."""

    seeds: tuple[str, ...]
    metadata: tuple[tuple[str, str], ...]
    bootstrap_timeout_s: float
    connect_timeout_s: float
    management_timeout_s: float
    config_poll_interval_s: float

    @classmethod
    def from_options(cls, connstr: str, options: dict[str, Any]) -> Settings:
        """Parse the connection string and merge its options under `options` (explicit options win)."""
        parsed: ConnectionString = parse(connstr)
        for name, value in cluster_option_defaults(parsed).items():
            options.setdefault(name, value)
        if parsed.unknown:
            log.warning("ignoring unknown connection string options: %s", ", ".join(sorted(parsed.unknown)))
        return cls(
            seeds=parsed.addresses,
            metadata=auth_metadata(options.get("authenticator")),
            bootstrap_timeout_s=_seconds(options.get("bootstrap_timeout"), BOOTSTRAP_TIMEOUT_DEFAULT_S),
            connect_timeout_s=_seconds(options.get("connect_timeout"), CONNECT_TIMEOUT_DEFAULT_S),
            management_timeout_s=_seconds(options.get("management_timeout"), MANAGEMENT_TIMEOUT_DEFAULT_S),
            config_poll_interval_s=_seconds(options.get("config_poll_interval"), CONFIG_POLL_INTERVAL_S),
        )


def auth_metadata(authenticator: Any) -> tuple[tuple[str, str], ...]:
    """`authorization: Basic base64(user:password)`, or nothing without a password authenticator."""
    if not authenticator:
        return ()
    try:
        username, password = authenticator["username"], authenticator["password"]
    except (KeyError, TypeError):
        return ()
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return (("authorization", f"Basic {token}"),)


def _seconds(value: Any, default: float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds() or default
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default
