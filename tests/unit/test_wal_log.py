"""The WAL shell on real files: recovery at open, group commit, policies, power loss, failures."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from durakv.engine.errors import DataDirError, FormatVersionError, WalCorruptError, WalFailedError
from durakv.engine.wal import FsyncPolicy, WalBackpressureError, WalClosedError, WriteAheadLog, codec
from durakv.engine.wal.codec import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE

try:
    import walsurgery as ws
except ImportError:  # tests/unit became a package
    from tests.unit import walsurgery as ws

DEADLINE_S = 10.0
SMALL_SEGMENT = 1024


def wait_until(condition: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, "condition not reached before the deadline"
        time.sleep(0.002)  # polling interval, not a wait for an event


def payload(index: int, size: int = 40) -> bytes:
    return f"{index:08d}".encode().ljust(size, b".")


def replayed(wal: WriteAheadLog, from_lsn: int = 0) -> list[tuple[int, bytes]]:
    return [(record.kind, record.payload) for record in wal.replay(from_lsn)]


def reopen(directory: Path, **kwargs) -> list[tuple[int, bytes]]:
    wal = WriteAheadLog.open(directory, **kwargs)
    try:
        return replayed(wal)
    finally:
        wal.close()


def current_segment(directory: Path) -> Path:
    return ws.segment_paths(directory)[-1]


@pytest.fixture
def opened(tmp_path: Path):
    """Open (and start) WALs in tmp_path; whatever a test leaves open is closed at teardown."""
    logs: list[WriteAheadLog] = []

    def open_log(*, start: bool = True, policy: str = "always", **kwargs) -> WriteAheadLog:
        wal = WriteAheadLog.open(tmp_path / "wal", fsync_policy=FsyncPolicy.parse(policy), **kwargs)
        logs.append(wal)
        if start:
            wal.start()
        return wal

    yield open_log
    for wal in logs:
        try:
            wal.close()
        except WalFailedError:
            pass


# ---- policy parsing ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["always", "never", "interval=1", "interval=60000"])
def test_wal_fsync_policy_parse_round_trips(text: str) -> None:
    assert str(FsyncPolicy.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["", "sometimes", "interval", "interval=", "interval=0", "interval=60001", "interval=-5"]
)
def test_wal_fsync_policy_parse_bad_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        FsyncPolicy.parse(text)


# ---- open, append, replay ----------------------------------------------------------


def test_wal_open_creates_missing_directories_with_one_empty_segment(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path / "a" / "b" / "wal")
    assert (wal.end_lsn, wal.persisted_lsn, wal.first_lsn) == (0, 0, 0)
    assert [p.name for p in ws.segment_paths(tmp_path / "a" / "b" / "wal")] == ["00000000000000000000.wal"]
    wal.close()


def test_wal_open_on_a_file_raises_data_dir_error(tmp_path: Path) -> None:
    (tmp_path / "wal").write_bytes(b"")
    with pytest.raises(DataDirError):
        WriteAheadLog.open(tmp_path / "wal")


def test_wal_open_with_stray_wal_name_raises_data_dir_error(tmp_path: Path) -> None:
    (tmp_path / "7.wal").write_bytes(b"")
    with pytest.raises(DataDirError):
        WriteAheadLog.open(tmp_path)


def test_wal_append_replay_survives_reopen(opened, tmp_path: Path) -> None:
    wal = opened()
    ends = [wal.append(1 + i % 3, payload(i)) for i in range(100)]
    ends.append(wal.append_many([(9, b"many-1"), (9, b""), (9, b"many-3")]))
    assert wal.wait_persisted(ends[-1], DEADLINE_S)
    records = list(wal.replay())
    assert [r.end for r in records[:100]] == ends[:100] and records[-1].end == ends[-1] == wal.end_lsn
    wal.close()
    expected = [(1 + i % 3, payload(i)) for i in range(100)] + [(9, b"many-1"), (9, b""), (9, b"many-3")]
    assert reopen(tmp_path / "wal") == expected
    reopened = opened()
    assert reopened.end_lsn == reopened.persisted_lsn == ends[-1]
    assert reopened.append(1, b"next") == ends[-1] + RECORD_HEADER_SIZE + 4


def test_wal_replay_from_lsn_skips_earlier_records_and_includes_unpersisted(opened) -> None:
    wal = opened(start=False)
    ends = [wal.append(1, payload(i)) for i in range(10)]
    assert wal.persisted_lsn == 0  # not started: nothing written, yet replay sees the buffer
    assert replayed(wal, from_lsn=ends[4]) == [(1, payload(i)) for i in range(5, 10)]
    assert replayed(wal, from_lsn=ends[4] + 1) == [(1, payload(i)) for i in range(6, 10)]


def test_wal_bad_append_raises_value_error_and_changes_nothing(opened) -> None:
    wal = opened()
    for kind, data in [(0, b"x"), (256, b"x")]:
        with pytest.raises(ValueError):
            wal.append(kind, data)
        with pytest.raises(ValueError):
            wal.append_many([(1, b"ok"), (kind, data)])
    assert wal.end_lsn == 0 and replayed(wal) == []


def test_wal_backpressure_at_buffer_limit_plus_one(opened) -> None:
    wal = opened(start=False, buffer_size_max=10 * (RECORD_HEADER_SIZE + 40))
    for i in range(10):
        wal.append(1, payload(i))
    with pytest.raises(WalBackpressureError):
        wal.append(1, b"")
    wal.start()
    assert wal.wait_persisted(wal.end_lsn, DEADLINE_S)
    wal.append(1, b"")  # room again once persisted


# ---- segments ----------------------------------------------------------------------


def test_wal_segments_roll_at_record_boundaries_and_replay_across_them(opened, tmp_path: Path) -> None:
    wal = opened(segment_size_max=SMALL_SEGMENT)
    for i in range(200):
        wal.append(1, payload(i, size=i % 90))
    wal.append(2, bytes(3 * SMALL_SEGMENT))  # larger than a segment: gets one of its own
    wal.append(3, b"after")
    end_lsn = wal.end_lsn
    wal.close()
    paths = ws.segment_paths(tmp_path / "wal")
    assert len(paths) > 10
    for path in paths:
        data = path.read_bytes()
        offsets = ws.record_offsets(data)  # every segment ends on a record boundary
        assert len(data) <= SMALL_SEGMENT or len(offsets) == 1
    names = [codec.parse_segment_file_name(p.name) for p in paths]
    sizes = [p.stat().st_size - SEGMENT_HEADER_SIZE for p in paths]
    assert names == [sum(sizes[:i]) for i in range(len(paths))]  # contiguous LSNs
    expected = [(1, payload(i, size=i % 90)) for i in range(200)] + [(2, bytes(3 * SMALL_SEGMENT)), (3, b"after")]
    assert reopen(tmp_path / "wal", segment_size_max=SMALL_SEGMENT) == expected
    assert sum(sizes) == end_lsn


def test_wal_release_before_deletes_only_fully_covered_segments(opened, tmp_path: Path) -> None:
    wal = opened(segment_size_max=SMALL_SEGMENT)
    ends = [wal.append(1, payload(i, size=100)) for i in range(60)]
    assert wal.wait_persisted(ends[-1], DEADLINE_S)
    starts = [codec.parse_segment_file_name(p.name) for p in ws.segment_paths(tmp_path / "wal")]
    assert len(starts) >= 5
    wal.release_before(starts[3] - 1)  # inside segment 2: segments 0 and 1 end at or below it
    assert [codec.parse_segment_file_name(p.name) for p in ws.segment_paths(tmp_path / "wal")] == starts[2:]
    wal.release_before(starts[3])  # exactly segment 2's end
    assert wal.first_lsn == starts[3]
    wal.release_before(wal.end_lsn + 1000)  # never the current segment
    assert [codec.parse_segment_file_name(p.name) for p in ws.segment_paths(tmp_path / "wal")] == starts[-1:]
    kept = [(1, payload(i, size=100)) for i, end in enumerate(ends) if end > starts[-1]]
    assert replayed(wal) == kept
    wal.close()
    assert reopen(tmp_path / "wal", segment_size_max=SMALL_SEGMENT) == kept


# ---- group commit and policies -----------------------------------------------------


def test_wal_group_commit_shares_fsyncs_between_16_writers(opened) -> None:
    wal = opened()
    threads_count, appends_per_thread = 16, 100

    def writer(thread: int) -> None:
        for i in range(appends_per_thread):
            assert wal.wait_persisted(wal.append(1, payload(thread * 1000 + i)), DEADLINE_S)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    appends = threads_count * appends_per_thread
    assert len(replayed(wal)) == appends
    assert wal.fsync_count * 3 <= appends, f"{wal.fsync_count} fsyncs for {appends} appends"


def test_wal_persisted_lsn_and_on_persisted_are_monotonic(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    calls: list[int] = []
    wal.start(on_persisted=calls.append)
    ends = [wal.append(1, payload(i)) for i in range(300)]
    seen = [wal.persisted_lsn]
    deadline_s = time.monotonic() + DEADLINE_S
    while not calls or calls[-1] < ends[-1]:  # sample while the flusher publishes
        assert time.monotonic() < deadline_s
        seen.append(wal.persisted_lsn)
        time.sleep(0)
    assert calls == sorted(set(calls)) and set(calls) <= set(ends)
    assert seen == sorted(seen)
    wal.close()


@pytest.mark.parametrize("policy", ["never", "interval=60000"])
def test_wal_lazy_policy_writes_but_fsyncs_only_on_request(opened, tmp_path: Path, policy: str) -> None:
    wal = opened(policy=policy)
    first = wal.append(1, b"one")
    second = wal.append(1, b"two")
    wait_until(lambda: current_segment(tmp_path / "wal").stat().st_size == SEGMENT_HEADER_SIZE + second)
    assert (wal.persisted_lsn, wal.fsync_count) == (0, 0)  # written (page cache), not synced
    wal.request_sync(first)
    assert wal.wait_persisted(first, DEADLINE_S)
    assert wal.persisted_lsn == second and wal.fsync_count == 1  # one fsync covers all written
    wal.request_sync(second)  # already covered: no new fsync
    third = wal.append(1, b"three")
    wait_until(lambda: current_segment(tmp_path / "wal").stat().st_size == SEGMENT_HEADER_SIZE + third)
    assert (wal.persisted_lsn, wal.fsync_count) == (second, 1)
    wal.close()  # close syncs what is left
    assert reopen(tmp_path / "wal") == [(1, b"one"), (1, b"two"), (1, b"three")]


def test_wal_interval_policy_fsyncs_without_request(opened) -> None:
    wal = opened(policy="interval=20")
    end = wal.append(1, b"x")
    assert wal.wait_persisted(end, DEADLINE_S) and wal.fsync_count == 1


# ---- recovery at open (file level) --------------------------------------------------


def _write_log(directory: Path, count: int, **kwargs) -> list[int]:
    wal = WriteAheadLog.open(directory, **kwargs)
    ends = [wal.append(1, payload(i)) for i in range(count)]
    wal.close()
    return ends


def test_wal_open_cuts_torn_tail_on_disk(tmp_path: Path) -> None:
    ends = _write_log(tmp_path, 5)
    segment = current_segment(tmp_path)
    ws.rewrite(segment, lambda d: d[:-3])
    assert reopen(tmp_path) == [(1, payload(i)) for i in range(4)]
    assert segment.stat().st_size == SEGMENT_HEADER_SIZE + ends[3]


@pytest.mark.parametrize("size", [0, 20, "zeros"])
def test_wal_open_recreates_torn_header_of_last_segment(tmp_path: Path, size) -> None:
    _write_log(tmp_path, 60, segment_size_max=SMALL_SEGMENT)
    segment = current_segment(tmp_path)
    start = codec.parse_segment_file_name(segment.name)
    wal = WriteAheadLog.open(tmp_path, segment_size_max=SMALL_SEGMENT)
    expected = [(r.kind, r.payload) for r in wal.replay() if r.end <= start]
    wal.close()
    ws.rewrite(segment, lambda d: bytes(64) if size == "zeros" else d[:size])  # a crash while creating it
    wal = WriteAheadLog.open(tmp_path, segment_size_max=SMALL_SEGMENT)
    assert wal.end_lsn == start and replayed(wal) == expected
    assert segment.read_bytes() == codec.encode_segment_header(start)
    wal.close()


def test_wal_open_refuses_bad_record_before_valid_one(tmp_path: Path) -> None:
    ends = _write_log(tmp_path, 5)
    segment = current_segment(tmp_path)
    ws.rewrite(segment, lambda d: ws.flip_byte(d, SEGMENT_HEADER_SIZE + ends[1] + 20))
    with pytest.raises(WalCorruptError) as caught:
        WriteAheadLog.open(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(segment), SEGMENT_HEADER_SIZE + ends[1])


def test_wal_open_refuses_torn_sealed_segment_and_gap(tmp_path: Path) -> None:
    _write_log(tmp_path, 60, segment_size_max=SMALL_SEGMENT)
    paths = ws.segment_paths(tmp_path)
    ws.rewrite(paths[1], lambda d: d[:-1])
    with pytest.raises(WalCorruptError) as caught:
        WriteAheadLog.open(tmp_path)
    assert caught.value.path == str(paths[1])
    paths[1].unlink()  # now a gap between segments 0 and 2
    with pytest.raises(WalCorruptError) as caught:
        WriteAheadLog.open(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(paths[2]), 0)


def test_wal_open_unknown_version_raises_format_version_error(tmp_path: Path) -> None:
    _write_log(tmp_path, 3)
    segment = current_segment(tmp_path)
    ws.rewrite(segment, lambda d: ws.set_header_field(d, 8, "<I", 9, reseal=True))
    with pytest.raises(FormatVersionError) as caught:
        WriteAheadLog.open(tmp_path)
    assert caught.value.path == str(segment) and caught.value.version == 9


# ---- power loss ----------------------------------------------------------------------


def _power_loss_scenario(opened, tmp_path: Path) -> tuple[int, bytes, list[tuple[int, bytes]]]:
    """Persist a prefix, write more without fsync, lose power. Returns (synced end, lost bytes, prefix)."""
    wal = opened(policy="never")
    prefix = [(1, payload(i)) for i in range(20)]
    for kind, data in prefix:
        wal.append(kind, data)
    synced = wal.end_lsn
    wal.request_sync(synced)
    assert wal.wait_persisted(synced, DEADLINE_S)
    for i in range(20, 30):
        wal.append(2, payload(i))
    segment = current_segment(tmp_path / "wal")
    wait_until(lambda: segment.stat().st_size == SEGMENT_HEADER_SIZE + wal.end_lsn)  # in the page cache
    lost = segment.read_bytes()[SEGMENT_HEADER_SIZE + synced :]
    wal.power_loss()
    assert segment.stat().st_size == SEGMENT_HEADER_SIZE + synced
    with pytest.raises(WalClosedError):
        wal.append(1, b"after")
    return synced, lost, prefix


def test_wal_power_loss_drops_exactly_the_unsynced_bytes(opened, tmp_path: Path) -> None:
    synced, _, prefix = _power_loss_scenario(opened, tmp_path)
    wal = opened(start=False)
    assert wal.end_lsn == synced and replayed(wal) == prefix


@pytest.mark.parametrize(
    "kept", [1, RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + 40 + 5, 3 * (RECORD_HEADER_SIZE + 40) - 1]
)
def test_wal_power_loss_with_partial_writeback_opens_cleanly(opened, tmp_path: Path, kept: int) -> None:
    # Write-back may have flushed a prefix of the unsynced bytes: a torn tail, cut at open.
    synced, lost, prefix = _power_loss_scenario(opened, tmp_path)
    with current_segment(tmp_path / "wal").open("ab") as file:
        file.write(lost[:kept])
    wal = opened(start=False)
    whole = kept // (RECORD_HEADER_SIZE + 40)
    assert replayed(wal) == prefix + [(2, payload(i)) for i in range(20, 20 + whole)]
    assert wal.end_lsn == synced + whole * (RECORD_HEADER_SIZE + 40)


# ---- failures ------------------------------------------------------------------------


def _fail_at(point: str, error: int) -> Callable[[str], None]:
    def hook(name: str) -> None:
        if name == point:
            raise OSError(error, os.strerror(error))

    return hook


@pytest.mark.parametrize(("point", "error"), [("fsync", errno.EIO), ("write", errno.ENOSPC), ("create", errno.EIO)])
def test_wal_injected_failure_stops_appends_then_recovers(tmp_path: Path, point: str, error: int) -> None:
    wal = WriteAheadLog.open(tmp_path, segment_size_max=SMALL_SEGMENT)
    failures: list[BaseException] = []
    wal.start(on_failure=failures.append)
    before = wal.append_many([(1, payload(i, size=200)) for i in range(3)])
    assert wal.wait_persisted(before, DEADLINE_S)
    wal.fault_hook = _fail_at(point, error)
    after = wal.append_many([(1, payload(i, size=200)) for i in range(3, 10)])  # needs a new segment
    wait_until(lambda: wal.failed is not None)
    assert isinstance(wal.failed, OSError) and wal.failed.errno == error
    with pytest.raises(WalFailedError):
        wal.append(1, b"refused")
    assert wal.persisted_lsn < after and len(failures) == 1
    wal.fault_hook = None
    assert wal.wait_persisted(after, DEADLINE_S)
    wait_until(lambda: wal.failed is None)
    wal.append(1, b"accepted again")
    wal.close()
    assert reopen(tmp_path, segment_size_max=SMALL_SEGMENT) == [(1, payload(i, size=200)) for i in range(10)] + [
        (1, b"accepted again")
    ]


RLIMIT_SCRIPT = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    from durakv.engine.errors import WalFailedError
    from durakv.engine.wal import WriteAheadLog

    directory = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG, not a signal
    failures, writes, persisted = [], [], []
    wal = WriteAheadLog.open(directory)
    wal.start(on_persisted=persisted.append, on_failure=failures.append)
    first = wal.append(1, b"a" * 100)
    assert wal.wait_persisted(first, 10)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 + first + 150, hard))
    wal.fault_hook = writes.append
    last = wal.append_many([(2, b"b" * 100), (3, b"c" * 100)])  # crosses the limit mid-write
    deadline = time.monotonic() + 10
    while wal.failed is None or writes.count("write") < 3:  # failed, and retried at least twice
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        wal.append(4, b"refused")
        refused = False
    except WalFailedError:
        refused = True
    persisted_while_failed = wal.persisted_lsn
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    recovered = wal.wait_persisted(last, 10)
    while wal.failed is not None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    wal.append(5, b"after")
    wal.close()
    wal = WriteAheadLog.open(directory)
    print(json.dumps({
        "errno": failures[0].errno, "failure_calls": len(failures), "refused": refused,
        "first": first, "last": last, "persisted_while_failed": persisted_while_failed,
        "recovered": recovered, "persisted_calls": persisted,
        "replayed": [[r.kind, len(r.payload)] for r in wal.replay()],
    }))
    wal.close()
    """
)


def test_wal_real_efbig_from_rlimit_fsize_fails_then_recovers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RLIMIT_SCRIPT, str(tmp_path / "wal")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["errno"] == errno.EFBIG and outcome["failure_calls"] == 1 and outcome["refused"]
    assert outcome["persisted_while_failed"] == outcome["first"]  # nothing acknowledged while failed
    assert outcome["recovered"]
    assert outcome["persisted_calls"] == sorted(outcome["persisted_calls"])
    assert outcome["persisted_calls"][:2] == [outcome["first"], outcome["last"]]
    assert outcome["replayed"] == [[1, 100], [2, 100], [3, 100], [5, 5]]
