"""Connection strings: `durakv://host[:port][,host[:port]...][?option=value&...]`. Pure.

Owns the syntax of a connection string and nothing else: it opens no socket and resolves
no name. The result lists the seeds in the order given (bootstrap asks them in that
order) and the options as typed values.

Rules (Couchbase's connection string, narrowed to what durakv serves):
- The scheme `durakv://` is required (case-insensitive); anything else is refused.
- Hosts are separated by `,` or `;`. A host is a DNS name, an IPv4 address or a bracketed
  IPv6 address (`[::1]:7101`); the port defaults to 7101 (`DEFAULT_PORT`). A repeated seed
  is kept once.
- An optional `/` may end the host list; a path after it (Couchbase's legacy bucket name)
  is refused.
- Options follow `?` as `name=value` pairs joined by `&`. Durations (`kv_timeout`,
  `kv_durable_timeout`, `connect_timeout`, `bootstrap_timeout`, `management_timeout`,
  `config_poll_interval`) are milliseconds when given as a bare number (`kv_timeout=2500`)
  or a number with a unit among ns, us, ms, s, m, h (`kv_timeout=2.5s`), as Couchbase
  accepts them. `enable_mutation_tokens` is a boolean (true/false/1/0/yes/no/on/off), and
  so is durakv's own `kv_pipeline` (the asyncio SDK sends single operations on each
  node's KV.PipelineBatched stream, or KV.Pipeline for an older node, unless it is false;
  then one unary call each).
  Unknown option names are kept in `unknown` and ignored, as Couchbase ignores them (with
  a warning from the caller); a known name with a malformed value is refused.

How options combine with `ClusterOptions`: an option set explicitly in `ClusterOptions`
(or as a keyword argument) wins over the same option in the connection string
(`cluster_option_defaults` gives the connection string's values for the caller to
`setdefault`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from .exceptions import InvalidArgumentException

SCHEME = "durakv://"
DEFAULT_PORT = 7101
SEEDS_MAX = 64

DURATION_OPTIONS = frozenset(
    {
        "kv_timeout",
        "kv_durable_timeout",
        "connect_timeout",
        "bootstrap_timeout",
        "management_timeout",
        "config_poll_interval",
    }
)
BOOL_OPTIONS = frozenset({"enable_mutation_tokens", "kv_pipeline"})

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
_IPV6_RE = re.compile(r"\[([0-9A-Fa-f:.]+)\]")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)?")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Seed:
    host: str  # without brackets for IPv6
    port: int

    @property
    def address(self) -> str:
        """`host:port` as gRPC takes it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ConnectionString:
    seeds: tuple[Seed, ...]
    # Known options, typed: durations as float seconds, booleans as bool.
    options: dict[str, Any] = field(default_factory=dict)
    # Options durakv does not know, as given (ignored).
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(seed.address for seed in self.seeds)


def parse(connstr: str) -> ConnectionString:
    """Parse a connection string; `InvalidArgumentException` says what is wrong with a bad one."""
    if not isinstance(connstr, str):
        raise InvalidArgumentException(f"a connection string must be a str, not {type(connstr).__name__}")
    if not connstr[: len(SCHEME)].lower() == SCHEME:
        raise InvalidArgumentException(f"a connection string must start with {SCHEME}: {connstr!r}")
    rest = connstr[len(SCHEME) :]
    hosts_part, _, query = rest.partition("?")
    hosts_part, slash, path = hosts_part.partition("/")
    if slash and path:
        raise InvalidArgumentException(f"a connection string takes no path (buckets: cluster.bucket()): {connstr!r}")
    seeds: list[Seed] = []
    for item in re.split(r"[,;]", hosts_part):
        item = item.strip()
        if not item:
            if hosts_part.strip():
                raise InvalidArgumentException(f"empty host in connection string {connstr!r}")
            continue
        seed = _parse_seed(item, connstr)
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise InvalidArgumentException(f"a connection string needs at least one host: {connstr!r}")
    if len(seeds) > SEEDS_MAX:
        raise InvalidArgumentException(f"a connection string takes at most {SEEDS_MAX} hosts, not {len(seeds)}")
    options, unknown = _parse_options(query, connstr)
    return ConnectionString(tuple(seeds), options, unknown)


def cluster_option_defaults(parsed: ConnectionString) -> dict[str, Any]:
    """The connection string's options in `ClusterOptions` form (timedelta durations)."""
    out: dict[str, Any] = {}
    for name, value in parsed.options.items():
        out[name] = timedelta(seconds=value) if name in DURATION_OPTIONS else value
    return out


def _parse_seed(item: str, connstr: str) -> Seed:
    match = _IPV6_RE.match(item)
    if match:
        host, tail = match.group(1), item[match.end() :]
        if tail and not tail.startswith(":"):
            raise InvalidArgumentException(f"bad host {item!r} in connection string {connstr!r}")
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text_raw = item.partition(":")
        port_text = port_text_raw if colon else None
        if not _HOSTNAME_RE.fullmatch(host):
            raise InvalidArgumentException(f"bad host {item!r} in connection string {connstr!r}")
    if port_text is None:
        return Seed(host, DEFAULT_PORT)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidArgumentException(f"bad port in {item!r} (1..65535) in connection string {connstr!r}")
    return Seed(host, int(port_text))


def _parse_options(query: str, connstr: str) -> tuple[dict[str, Any], dict[str, str]]:
    options: dict[str, Any] = {}
    unknown: dict[str, str] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, eq, raw = pair.partition("=")
        name, value = unquote(name).strip(), unquote(raw).strip()
        if not eq or not name:
            raise InvalidArgumentException(f"option {pair!r} is not name=value in connection string {connstr!r}")
        if name in DURATION_OPTIONS:
            options[name] = _duration_s(name, value)
        elif name in BOOL_OPTIONS:
            options[name] = _boolean(name, value)
        else:
            unknown[name] = value
    return options, unknown


def _duration_s(name: str, value: str) -> float:
    match = _DURATION_RE.fullmatch(value)
    if match is None:
        raise InvalidArgumentException(f"option {name}={value!r}: expected milliseconds or a duration like 2.5s")
    number, unit = float(match.group(1)), match.group(2) or "ms"
    seconds = number * _UNIT_S[unit]
    if seconds <= 0:
        raise InvalidArgumentException(f"option {name}={value!r} must be positive")
    return seconds


def _boolean(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidArgumentException(f"option {name}={value!r}: expected true or false")
