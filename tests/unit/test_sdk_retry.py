"""Timeout defaults and the retry-until-deadline loop (reference §1.3, §1.8), with a fake clock."""

from __future__ import annotations

import dataclasses

import pytest

import durakv._retry as retry
import durakv.exceptions as exc
from durakv._backend import BackendStatusError, KVRequest, KVResponse, Op
from durakv._backends import BackendTimeoutError
from durakv._errors import KVStatus


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(retry, "monotonic", fake.monotonic)
    monkeypatch.setattr(retry, "sleep", fake.sleep)
    return fake


class ScriptedBackend:
    """Answers each execute() with the next scripted item; the last item repeats."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests: list[KVRequest] = []

    def execute(self, request):
        self.requests.append(dataclasses.replace(request))
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, BaseException):
            raise item
        return item


def status(code: int) -> BackendStatusError:
    return BackendStatusError(code, "refused")


def request(op: Op, timeout_s: float = 2.5) -> KVRequest:
    return KVRequest(op, "b", "_default", "_default", b"k", timeout_s=timeout_s)


# --- timeouts --------------------------------------------------------------------------------


def timeouts(op: Op, args: dict, default: float = 2.5) -> tuple[float, int, int | None]:
    req = request(op)
    retry.apply_timeouts(req, args, default)
    return req.timeout_s, req.durability_level, req.durability_timeout_ms


def test_timeout_defaults_to_cluster_kv_timeout():
    assert timeouts(Op.GET, {}) == (2.5, 0, None)
    assert timeouts(Op.UPSERT, {}, default=4.0) == (4.0, 0, None)


def test_explicit_timeout_wins():
    assert timeouts(Op.UPSERT, {"timeout": 7.0}) == (7.0, 0, None)


@pytest.mark.parametrize("op", [Op.INSERT, Op.UPSERT, Op.REPLACE, Op.REMOVE, Op.APPEND, Op.PREPEND])
def test_durable_mutation_without_timeout_gets_ten_seconds(op):
    assert timeouts(op, {"durability": 1}) == (10.0, 1, 9000)


@pytest.mark.parametrize("op", [Op.INCREMENT, Op.DECREMENT])
def test_durable_counter_keeps_kv_timeout(op):
    assert timeouts(op, {"durability": 2}) == (2.5, 2, 2250)


def test_durable_level_none_still_gets_ten_seconds_but_no_durability_timeout():
    # Couchbase applies the 10 s default to any server durability, NONE included.
    assert timeouts(Op.UPSERT, {"durability": 0}) == (10.0, 0, None)


def test_durability_timeout_floor_is_one_and_a_half_seconds():
    assert timeouts(Op.UPSERT, {"durability": 3, "timeout": 0.5}) == (1.5, 3, 1350)


def test_durability_timeout_is_ninety_percent_of_op_timeout():
    assert timeouts(Op.UPSERT, {"durability": 1, "timeout": 4.0}) == (4.0, 1, 3600)


def test_durability_timeout_clamped_to_sixteen_bits():
    assert timeouts(Op.UPSERT, {"durability": 1, "timeout": 100.0})[2] == 65_534


@pytest.mark.parametrize("op", [Op.GET, Op.TOUCH, Op.GET_AND_LOCK, Op.EXISTS])
def test_durability_ignored_for_non_mutations(op):
    assert timeouts(op, {"durability": 1}) == (2.5, 0, None)


def test_client_durability_is_not_server_durable():
    assert timeouts(Op.UPSERT, {"durability": {"replicate_to": 0, "persist_to": 0}}) == (2.5, 0, None)


# --- retry loop ------------------------------------------------------------------------------


def test_success_first_time_needs_no_sleep(clock):
    backend = ScriptedBackend(KVResponse(cas=5))
    assert retry.execute(backend, request(Op.GET), True).cas == 5
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "code",
    [
        KVStatus.NOT_MY_VBUCKET,
        KVStatus.LOCKED,
        KVStatus.TMPFAIL,
        KVStatus.SYNC_WRITE_IN_PROGRESS,
        KVStatus.SYNC_WRITE_RECOMMIT_IN_PROGRESS,
    ],
)
def test_retryable_status_is_retried_until_success(clock, code):
    backend = ScriptedBackend(status(code), status(code), KVResponse(cas=9))
    assert retry.execute(backend, request(Op.UPSERT)).cas == 9
    assert len(backend.requests) == 3
    assert clock.sleeps == [0.001, 0.002]


def test_retry_sends_remaining_budget(clock):
    backend = ScriptedBackend(status(KVStatus.TMPFAIL), KVResponse())
    retry.execute(backend, request(Op.UPSERT, timeout_s=2.0))
    assert backend.requests[0].timeout_s == 2.0
    assert backend.requests[1].timeout_s == pytest.approx(2.0 - 0.001)


def test_backoff_doubles_and_caps_at_fifty_ms(clock):
    backend = ScriptedBackend(status(KVStatus.TMPFAIL))
    with pytest.raises(exc.TemporaryFailException):
        retry.execute(backend, request(Op.UPSERT))
    assert clock.sleeps[:7] == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05])
    assert max(clock.sleeps) == pytest.approx(0.05)


def test_deadline_is_respected_exactly(clock):
    backend = ScriptedBackend(status(KVStatus.SYNC_WRITE_IN_PROGRESS))
    with pytest.raises(exc.AmbiguousTimeoutException):
        retry.execute(backend, request(Op.UPSERT, timeout_s=1.0))
    assert clock.now == pytest.approx(101.0)


def test_non_idempotent_deadline_is_ambiguous(clock):
    backend = ScriptedBackend(status(KVStatus.SYNC_WRITE_IN_PROGRESS))
    with pytest.raises(exc.AmbiguousTimeoutException) as info:
        retry.execute(backend, request(Op.UPSERT))
    error = info.value
    assert error.error_code == 13
    assert error.error_context.retry_reasons == {"key_value_sync_write_in_progress"}
    assert error.error_context.retry_attempts == len(backend.requests) - 1
    assert isinstance(error.inner_cause, BackendStatusError)


def test_idempotent_deadline_is_unambiguous(clock):
    backend = ScriptedBackend(status(KVStatus.SYNC_WRITE_RECOMMIT_IN_PROGRESS))
    with pytest.raises(exc.UnAmbiguousTimeoutException) as info:
        retry.execute(backend, request(Op.GET), True)
    assert info.value.error_code == 14
    assert info.value.error_context.retry_reasons == {"key_value_sync_write_re_commit_in_progress"}


def test_locked_until_deadline_becomes_document_locked_keeping_timeout_code(clock):
    backend = ScriptedBackend(status(KVStatus.LOCKED))
    with pytest.raises(exc.DocumentLockedException) as info:
        retry.execute(backend, request(Op.UPSERT))
    assert info.value.error_code == 13
    assert "key_value_locked" in info.value.error_context.retry_reasons


def test_locked_get_until_deadline_is_document_locked_with_unambiguous_code(clock):
    backend = ScriptedBackend(status(KVStatus.LOCKED))
    with pytest.raises(exc.DocumentLockedException) as info:
        retry.execute(backend, request(Op.GET_AND_LOCK))
    assert info.value.error_code == 13


def test_tmpfail_until_deadline_becomes_temporary_fail(clock):
    backend = ScriptedBackend(status(KVStatus.TMPFAIL))
    with pytest.raises(exc.TemporaryFailException) as info:
        retry.execute(backend, request(Op.GET), True)
    assert info.value.error_code == 14


def test_locked_wins_over_tmpfail_in_remap(clock):
    backend = ScriptedBackend(status(KVStatus.TMPFAIL), status(KVStatus.LOCKED))
    with pytest.raises(exc.DocumentLockedException):
        retry.execute(backend, request(Op.UPSERT))


def test_unlock_locked_is_cas_mismatch_without_retry(clock):
    backend = ScriptedBackend(status(KVStatus.LOCKED))
    with pytest.raises(exc.CasMismatchException):
        retry.execute(backend, request(Op.UNLOCK))
    assert len(backend.requests) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("code", [KVStatus.EBUSY, KVStatus.ENOMEM])
def test_other_temporary_statuses_fail_at_once(clock, code):
    backend = ScriptedBackend(status(code))
    with pytest.raises(exc.TemporaryFailException):
        retry.execute(backend, request(Op.UPSERT))
    assert len(backend.requests) == 1


def test_final_status_after_retries_reports_them(clock):
    backend = ScriptedBackend(status(KVStatus.LOCKED), status(KVStatus.LOCKED), status(KVStatus.KEY_ENOENT))
    with pytest.raises(exc.DocumentNotFoundException) as info:
        retry.execute(backend, request(Op.REPLACE))
    assert info.value.error_context.retry_attempts == 2
    assert info.value.error_context.retry_reasons == {"key_value_locked"}
    assert info.value.error_context.status_code == KVStatus.KEY_ENOENT


def test_connection_refused_until_deadline_is_unambiguous(clock):
    backend = ScriptedBackend(ConnectionRefusedError())
    with pytest.raises(exc.UnAmbiguousTimeoutException) as info:
        retry.execute(backend, request(Op.UPSERT))
    assert info.value.error_context.retry_reasons == {"node_not_available"}


def test_connection_lost_in_flight_is_ambiguous(clock):
    backend = ScriptedBackend(ConnectionResetError())
    with pytest.raises(exc.AmbiguousTimeoutException):
        retry.execute(backend, request(Op.UPSERT))


def test_connection_refused_then_success(clock):
    backend = ScriptedBackend(ConnectionRefusedError(), KVResponse(cas=3))
    assert retry.execute(backend, request(Op.UPSERT)).cas == 3


def test_backend_timeout_is_ambiguous_for_mutation(clock):
    backend = ScriptedBackend(BackendTimeoutError("slow"))
    with pytest.raises(exc.AmbiguousTimeoutException):
        retry.execute(backend, request(Op.UPSERT))
    assert len(backend.requests) == 1


def test_backend_timeout_is_unambiguous_for_get(clock):
    backend = ScriptedBackend(BackendTimeoutError("slow"))
    with pytest.raises(exc.UnAmbiguousTimeoutException):
        retry.execute(backend, request(Op.GET), True)


def test_first_attempt_past_deadline_fails_without_retry(clock):
    class SlowBackend(ScriptedBackend):
        def execute(self, req):
            clock.now += 5.0
            return super().execute(req)

    backend = SlowBackend(status(KVStatus.TMPFAIL))
    with pytest.raises(exc.TemporaryFailException):
        retry.execute(backend, request(Op.UPSERT))
    assert len(backend.requests) == 1
