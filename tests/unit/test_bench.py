"""The benchmark measuring helpers (cli/bench_measure.py) and `durakv cluster bench`'s own rules."""

from __future__ import annotations

import click
import pytest

from durakv.cli.bench import _levels, _numbers, durability_fields
from durakv.cli.bench_measure import Tally, bench_keys, make_doc, summary
from durakv.engine.keys import vbucket_of


def test_bench_keys_cover_every_vbucket_or_are_refused():
    keys = bench_keys(1024, 64)
    assert len(keys) == 1024 and {vbucket_of(k.encode(), 64) for k in keys} == set(range(64))
    with pytest.raises(ValueError, match="use more keys"):
        bench_keys(10, 64)


def test_make_doc_encodes_to_the_payload_size_asked_for():
    _doc, encoded = make_doc(300)
    assert len(encoded) == 300


def test_summary_gives_throughput_percentiles_and_cpu_per_item():
    tally = Tally()
    tally.add([0.001 * i for i in range(1, 101)], elapsed_s=2.0, client_cpu_s=0.1, server_cpu_s=0.4)
    out = summary(tally)
    assert out["ops_s"] == 50 and out["p50_ms"] == pytest.approx(50.5) and out["p99_ms"] == pytest.approx(99.01)
    assert (out["client_cpu_us"], out["server_cpu_us"]) == (1000.0, 4000.0)
    tally.add([0.001], elapsed_s=0.1, client_cpu_s=0.0, server_cpu_s=None)  # a server's CPU unreadable
    assert summary(tally)["server_cpu_us"] is None


def test_durability_fields_give_each_level_its_ratio_to_none_in_the_same_run():
    m = {
        "none_c4": {"ops_s": 1000, "p50_ms": 1.0, "p99_ms": 2.0},
        "majority_c4": {"ops_s": 600, "p50_ms": 2.0, "p99_ms": 5.0},
    }
    out = durability_fields(m, ("NONE", "MAJORITY"), (4,))
    assert (out["none_c4_vs_none_ratio"], out["majority_c4_vs_none_ratio"]) == (1.0, 0.6)
    alone = durability_fields({"majority_c4": m["majority_c4"]}, ("MAJORITY",), (4,))
    assert alone["majority_c4_vs_none_ratio"] is None  # NONE not measured: no ratio


def test_bench_options_are_checked():
    assert _numbers("1,16,64", "--concurrency") == (1, 16, 64)
    assert _levels("none, persist_to_majority") == ("NONE", "PERSIST_TO_MAJORITY")
    for bad in ("", "0", "x", "1,2000"):
        with pytest.raises(click.BadParameter):
            _numbers(bad, "--concurrency")
    with pytest.raises(click.BadParameter):
        _levels("MAJORITY,FAST")
