"""Connection strings (durakv._connstr): seeds, default port, options, and every way to get one wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest

import durakv.exceptions as exc
from durakv._connstr import DEFAULT_PORT, SEEDS_MAX, ConnectionString, Seed, cluster_option_defaults, parse


def test_parse_single_host_gets_default_port():
    parsed = parse("durakv://127.0.0.1")
    assert parsed.seeds == (Seed("127.0.0.1", DEFAULT_PORT),)
    assert parsed.addresses == ("127.0.0.1:7101",)
    assert DEFAULT_PORT == 7101


def test_parse_many_hosts_keeps_order_and_ports():
    parsed = parse("durakv://h1:7201,h2,h3.example.com:7301")
    assert parsed.addresses == ("h1:7201", "h2:7101", "h3.example.com:7301")


def test_parse_semicolon_separator_and_spaces():
    assert parse("durakv://a:1; b:2").addresses == ("a:1", "b:2")


def test_parse_repeated_seed_kept_once():
    assert parse("durakv://a,a:7101,b").addresses == ("a:7101", "b:7101")


def test_parse_ipv6_in_brackets():
    parsed = parse("durakv://[::1]:7201,[fe80::2]")
    assert parsed.seeds == (Seed("::1", 7201), Seed("fe80::2", DEFAULT_PORT))
    assert parsed.addresses == ("[::1]:7201", "[fe80::2]:7101")


def test_parse_scheme_is_case_insensitive_and_trailing_slash_allowed():
    assert parse("DURAKV://node1:7101/").addresses == ("node1:7101",)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2500", 2.5), ("2.5s", 2.5), ("250ms", 0.25), ("1m", 60.0), ("1500us", 0.0015), (".5s", 0.5)],
)
def test_parse_duration_option_units(text, seconds):
    parsed = parse(f"durakv://h?kv_timeout={text}")
    assert parsed.options["kv_timeout"] == pytest.approx(seconds)


def test_parse_every_duration_option_and_boolean():
    parsed = parse(
        "durakv://h?kv_timeout=1000&kv_durable_timeout=2000&connect_timeout=3000&bootstrap_timeout=4000"
        "&management_timeout=5000&config_poll_interval=600&enable_mutation_tokens=false"
    )
    assert parsed.options == {
        "kv_timeout": 1.0,
        "kv_durable_timeout": 2.0,
        "connect_timeout": 3.0,
        "bootstrap_timeout": 4.0,
        "management_timeout": 5.0,
        "config_poll_interval": 0.6,
        "enable_mutation_tokens": False,
    }


def test_parse_unknown_option_is_kept_apart_and_ignored():
    parsed = parse("durakv://h?network=external&kv_timeout=100")
    assert parsed.unknown == {"network": "external"}
    assert parsed.options == {"kv_timeout": 0.1}


def test_cluster_option_defaults_are_timedeltas():
    defaults = cluster_option_defaults(parse("durakv://h?kv_timeout=1500&enable_mutation_tokens=yes"))
    assert defaults == {"kv_timeout": timedelta(seconds=1.5), "enable_mutation_tokens": True}


def test_connection_string_value_is_frozen():
    parsed = parse("durakv://h")
    assert isinstance(parsed, ConnectionString)
    with pytest.raises(AttributeError):
        parsed.seeds = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    "connstr",
    [
        "couchbase://h",
        "http://h:7101",
        "durakv:/h",
        "h:7101",
        "",
        "durakv://",
        "durakv://?kv_timeout=10",
        "durakv://h1,,h2",
        "durakv://h1,",
        "durakv://h:0",
        "durakv://h:65536",
        "durakv://h:port",
        "durakv://h:-1",
        "durakv://h:",
        "durakv://-bad-",
        "durakv://a b",
        "durakv://[::1",
        "durakv://[::1]x",
        "durakv://h/default",
        "durakv://h?kv_timeout",
        "durakv://h?=1",
        "durakv://h?kv_timeout=fast",
        "durakv://h?kv_timeout=0",
        "durakv://h?kv_timeout=-5",
        "durakv://h?kv_timeout=5d",
        "durakv://h?enable_mutation_tokens=maybe",
    ],
)
def test_parse_bad_connection_string_is_invalid_argument(connstr):
    with pytest.raises(exc.InvalidArgumentException):
        parse(connstr)


def test_parse_non_str_is_invalid_argument():
    with pytest.raises(exc.InvalidArgumentException):
        parse(7101)  # type: ignore[arg-type]


def test_parse_too_many_seeds_is_invalid_argument():
    hosts = ",".join(f"h{i}" for i in range(SEEDS_MAX + 1))
    with pytest.raises(exc.InvalidArgumentException):
        parse(f"durakv://{hosts}")
    assert len(parse(f"durakv://{','.join(f'h{i}' for i in range(SEEDS_MAX))}").seeds) == SEEDS_MAX
