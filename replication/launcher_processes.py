"""A local cluster's processes: start, stop, kill, pause them, and tell whether they run.

Pid files record each process's pid and start time, so a reused pid is never mistaken for
ours (replication/launcher.py's docstring); a command never signals a pid whose start time
does not match its pid file, and never starts a process whose pid file names a running one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from durakv.engine.files import atomic_write
from durakv.replication.cluster_dir import (
    KILL_WAIT_S,
    LOG_TAIL_BYTES_MAX,
    LOG_TAIL_LINES,
    MANAGER,
    POLL_INTERVAL_S,
    STOP_TIMEOUT_S_DEFAULT,
    ClusterDir,
    LauncherError,
    PortInUseError,
)

# How the processes are started: the running interpreter, so no console script on PATH is needed.
PROGRAM: tuple[str, ...] = (sys.executable, "-m", "durakv.cli.main")

_LOG_HEADER = "--- durakv cluster: starting at "  # opens each run's part of a log
_HAVE_PROC = os.path.exists("/proc/self/stat")
# Processes started by this process: polled so that ones which exited are reaped, not zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int | None  # None where there is no /proc


class Ending(NamedTuple):
    """How `stop` or `kill` ended a process."""

    pid: int
    killed_after_timeout: bool  # `stop`: it outlived SIGTERM's grace period and was SIGKILLed


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parens
    return fields[0], int(fields[19])


def is_running(record: PidRecord) -> bool:
    child = _children.get(record.pid)
    if child is not None and child.poll() is not None:  # reaps our own exited child
        del _children[record.pid]
        return False
    if _HAVE_PROC:
        stat = _proc_stat(record.pid)
        return stat is not None and stat[0] not in ("Z", "X") and stat[1] == record.start_ticks
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def is_paused(record: PidRecord) -> bool:
    """Whether the running process is stopped by a signal (a testbed pause); False without /proc."""
    stat = _proc_stat(record.pid) if _HAVE_PROC else None
    return stat is not None and stat[0] == "T"


def read_pid(cdir: ClusterDir, name: str) -> PidRecord | None:
    """The pid file's record, or None if there is none or it is unreadable."""
    try:
        doc = json.loads(cdir.pid_path(name).read_bytes())
        return PidRecord(int(doc["pid"]), doc["start_ticks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pid(cdir: ClusterDir, name: str) -> int | None:
    """The pid of `name` if it runs (its pid file names a live process with the recorded start)."""
    record = read_pid(cdir, name)
    return record.pid if record is not None and is_running(record) else None


def command_line(cdir: ClusterDir, name: str) -> list[str]:
    spec = cdir.spec
    address = spec.address(name)
    if name == MANAGER:
        role = ["manager", "--dir", str(cdir.path)]  # it keeps its state in <dir>/manager/
    else:
        role = ["node", "--data", str(cdir.node_dir(name)), "--manager", spec.manager_address, "--node-id", name]
        role += ["--fsync", spec.fsync_policy]
    return [*PROGRAM, *role, "--listen", address, "--secret-file", str(cdir.secret_path)]


def port_is_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the gRPC server sets it: a port held only by TIME_WAIT connections is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def start(cdir: ClusterDir, name: str) -> int:
    """Start `name` in the background (its log appended, its pid file written); its pid.

    LauncherError if it already runs; PortInUseError if something else holds its port.
    """
    address = cdir.spec.address(name)
    pid = running_pid(cdir, name)
    if pid is not None:
        raise LauncherError(f"{name} is already running (pid {pid})")
    if not port_is_free(address):
        raise PortInUseError(f"{address}, the address of {name}, is in use by another program")
    argv = command_line(cdir, name)
    cdir.logs_dir.mkdir(exist_ok=True)
    cdir.pids_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(cdir.log_path(name), "ab") as log:
        log.write(f"{_LOG_HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cdir.path,
            env=env,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    stat = _proc_stat(proc.pid) if _HAVE_PROC else None  # our unreaped child: /proc has it even if it exited
    record = {"pid": proc.pid, "start_ticks": stat[1] if stat else None}
    atomic_write(cdir.pid_path(name), json.dumps(record).encode() + b"\n", mode=0o644)
    return proc.pid


def _signal(record: PidRecord, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signum)


def _wait_gone(records: Iterable[PidRecord], timeout_s: float) -> list[PidRecord]:
    """Poll until none of `records` runs or the timeout passes; those still running."""
    deadline = time.monotonic() + timeout_s
    left = list(records)
    while True:
        left = [r for r in left if is_running(r)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_INTERVAL_S)


def _running_records(cdir: ClusterDir, names: Iterable[str]) -> dict[str, PidRecord]:
    """The running ones among `names`; the pid files of the others (stale) are removed."""
    running = {}
    for name in names:
        cdir.spec.address(name)  # UnknownProcessError for a name the cluster does not have
        record = read_pid(cdir, name)
        if record is not None and is_running(record):
            running[name] = record
        else:
            cdir.pid_path(name).unlink(missing_ok=True)
    return running


def _end(cdir: ClusterDir, names: Iterable[str], signum: int, timeout_s: float) -> dict[str, Ending]:
    """Send `signum` to the running processes of `names` at once, SIGKILL the ones still up
    after `timeout_s`, wait until all are gone, remove their pid files. Only the processes
    that were running are in the result."""
    running = _running_records(cdir, names)
    for record in running.values():
        _signal(record, signum)
        if signum != signal.SIGKILL:
            _signal(record, signal.SIGCONT)  # a paused process (`pause`) must see it now
    stubborn = _wait_gone(running.values(), timeout_s)
    for record in stubborn:
        _signal(record, signal.SIGKILL)
    left = _wait_gone(stubborn, KILL_WAIT_S)
    if left:
        raise LauncherError(f"processes {[r.pid for r in left]} survived SIGKILL for {KILL_WAIT_S} s")
    for name in running:
        cdir.pid_path(name).unlink(missing_ok=True)
    overdue = signum != signal.SIGKILL
    return {name: Ending(record.pid, overdue and record in stubborn) for name, record in running.items()}


def stop(cdir: ClusterDir, names: Iterable[str], timeout_s: float = STOP_TIMEOUT_S_DEFAULT) -> dict[str, Ending]:
    """SIGTERM the running processes of `names`; SIGKILL the ones still up after `timeout_s`."""
    return _end(cdir, names, signal.SIGTERM, timeout_s)


def pause(cdir: ClusterDir, names: Iterable[str], *, resume: bool = False) -> dict[str, int]:
    """SIGSTOP (or, `resume`, SIGCONT) the running processes of `names`: a testbed pause; name -> pid."""
    running = _running_records(cdir, names)
    for record in running.values():
        _signal(record, signal.SIGCONT if resume else signal.SIGSTOP)
    return {name: record.pid for name, record in running.items()}


def kill(cdir: ClusterDir, names: Iterable[str]) -> dict[str, Ending]:
    """SIGKILL the running processes of `names`: a crash, no shutdown."""
    return _end(cdir, names, signal.SIGKILL, KILL_WAIT_S)


def down(cdir: ClusterDir, timeout_s: float = STOP_TIMEOUT_S_DEFAULT) -> dict[str, Ending]:
    """Stop the whole cluster: the manager first (so it does not react to nodes going away), then the nodes."""
    return {**stop(cdir, [MANAGER], timeout_s), **stop(cdir, cdir.spec.nodes, timeout_s)}


def destroy(cdir: ClusterDir, timeout_s: float = STOP_TIMEOUT_S_DEFAULT) -> None:
    """Stop every process and remove the directory; NotAClusterError for a directory that is not ours."""
    cdir.spec  # noqa: B018 -- refuses anything without a valid cluster.json before touching it
    with cdir.lock():
        down(cdir, timeout_s)
        shutil.rmtree(cdir.path)


def log_tail(cdir: ClusterDir, name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines the process's latest run logged (from its `start` header on)."""
    try:
        with open(cdir.log_path(name), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES_MAX))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    run = text.splitlines()
    starts = [i for i, line in enumerate(run) if line.startswith(_LOG_HEADER)]
    return run[starts[-1] if starts else 0 :][-lines:]
