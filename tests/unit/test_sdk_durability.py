"""Durability types and the parsing trap of reference §1.2 item 6."""

from __future__ import annotations

import logging

import pytest

from durakv.durability import (
    ClientDurability,
    Durability,
    DurabilityLevel,
    DurabilityParser,
    PersistTo,
    PersistToExtended,
    ReplicateTo,
    ServerDurability,
)
from durakv.exceptions import InvalidArgumentException


def test_durability_level_values_are_wire_bytes():
    assert [int(level) for level in DurabilityLevel] == [0, 1, 2, 3]
    assert [level.name for level in DurabilityLevel] == [
        "NONE",
        "MAJORITY",
        "MAJORITY_AND_PERSIST_TO_ACTIVE",
        "PERSIST_TO_MAJORITY",
    ]


def test_deprecated_durability_enum_has_same_members():
    assert {m.name: int(m) for m in Durability} == {m.name: int(m) for m in DurabilityLevel}


@pytest.mark.parametrize(
    "level, text",
    [
        (DurabilityLevel.NONE, "none"),
        (DurabilityLevel.MAJORITY, "majority"),
        (DurabilityLevel.MAJORITY_AND_PERSIST_TO_ACTIVE, "majority_and_persist_to_active"),
        (DurabilityLevel.PERSIST_TO_MAJORITY, "persist_to_majority"),
    ],
)
def test_durability_level_server_str_round_trip(level, text):
    assert DurabilityLevel.to_server_str(level) == text
    assert DurabilityLevel.from_server_str(text) is level


def test_durability_level_from_rest_spelling():
    assert DurabilityLevel.from_server_str("majorityAndPersistActive") is DurabilityLevel.MAJORITY_AND_PERSIST_TO_ACTIVE
    assert DurabilityLevel.from_server_str("persistToMajority") is DurabilityLevel.PERSIST_TO_MAJORITY


def test_client_durability_enum_values():
    assert [int(v) for v in ReplicateTo] == [0, 1, 2, 3]
    assert [int(v) for v in PersistTo] == [0, 2, 3, 4]
    assert [int(v) for v in PersistToExtended] == [0, 1, 2, 3, 4, 5]


def test_client_durability_defaults_none():
    durability = ClientDurability()
    assert durability.replicate_to is ReplicateTo.NONE
    assert durability.persist_to is PersistTo.NONE


def test_server_durability_accepts_deprecated_enum():
    assert ServerDurability(Durability.MAJORITY).level is DurabilityLevel.MAJORITY


def test_server_durability_rejects_unknown_level():
    with pytest.raises(InvalidArgumentException):
        ServerDurability(7)


def test_parse_server_durability_gives_int():
    assert DurabilityParser.parse_durability(ServerDurability(DurabilityLevel.MAJORITY)) == 1


def test_parse_bare_level_is_dropped_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="durakv.durability"):
        assert DurabilityParser.parse_durability(DurabilityLevel.MAJORITY) is None
    assert any(record.levelno == logging.WARNING for record in caplog.records)


def test_parse_none_is_silent(caplog):
    with caplog.at_level(logging.WARNING, logger="durakv.durability"):
        assert DurabilityParser.parse_durability(None) is None
    assert not caplog.records
