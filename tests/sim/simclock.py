"""The simulation's clock: a discrete-event scheduler, simulated threads, the run's PRNG, the trace.

Owns simulated time and the one `random.Random(seed)` that every other part of a run draws
from. Time is float seconds since the run started (`time`, small numbers, so a microsecond
delay is never lost to rounding); the engine is handed unix seconds (`now`, `T0 + time`).
Events run in (time, sequence) order: two events at the same instant run in the order they
were scheduled, so a run depends on nothing but the seed.

A `SimThread` is a generator standing in for a shell thread (the WAL flusher, the maintenance
thread, a client). It yields how long it sleeps (`yield 0.002`), or `park(timeout)` to wait
until someone calls `wake()` (a condition variable's notify). Between two yields it runs
alone, which is the serialisation the shells get from their locks.

Must never: read the wall clock, start an OS thread, or iterate anything whose order depends
on object ids or string hashes.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

T0 = 1_700_000_000.0  # unix seconds at simulated time 0 (2023-11-14), as tests/unit/enginekit.py
EVENTS_MAX = 5_000_000  # a run that schedules more is looping: stop it loudly


class SimulationStuck(AssertionError):
    """The event queue ran away (more than EVENTS_MAX events): a harness or engine loop."""


@dataclass(slots=True)
class Park:
    """Yielded by a SimThread: sleep until `wake()`, or until `timeout_s` passes (None: forever)."""

    timeout_s: float | None = None


def park(timeout_s: float | None = None) -> Park:
    return Park(timeout_s)


class Timer:
    """A scheduled call; `cancel()` makes it a no-op."""

    __slots__ = ("action", "args", "cancelled", "when")

    def __init__(self, when: float, action: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.action = action
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimClock:
    """Simulated time, the event queue, the run's PRNG and its trace."""

    def __init__(self, seed: int, *, trace: bool = True) -> None:
        self.seed = seed
        self.prng = random.Random(seed)
        self.time = 0.0
        self._queue: list[tuple[float, int, Timer]] = []
        self._sequence = 0
        self.events_run = 0
        self.tracing = trace
        self.trace: list[str] = []
        self.current: SimThread | None = None  # the thread whose step is running, if any

    @property
    def now(self) -> float:
        """Unix seconds, what the engine takes as `now`."""
        return T0 + self.time

    # -- scheduling ---------------------------------------------------------------------
    def call_at(self, when: float, action: Callable[..., Any], *args: Any) -> Timer:
        assert when >= self.time, f"an event in the past: {when} < {self.time}"
        timer = Timer(when, action, args)
        self._sequence += 1
        heapq.heappush(self._queue, (when, self._sequence, timer))
        return timer

    def call_later(self, delay_s: float, action: Callable[..., Any], *args: Any) -> Timer:
        assert delay_s >= 0, delay_s
        return self.call_at(self.time + delay_s, action, *args)

    def spawn(self, name: str, body: Generator[Any, Any, Any]) -> SimThread:
        """Start a simulated thread; it first runs as an event at the current instant."""
        return SimThread(self, name, body)

    def step(self) -> bool:
        """Run the next event; False when none is left."""
        queue = self._queue
        while queue:
            when, _, timer = heapq.heappop(queue)
            if timer.cancelled:
                continue
            assert when >= self.time, "time goes forward"
            self.time = when
            self.events_run += 1
            if self.events_run > EVENTS_MAX:
                raise SimulationStuck(f"more than {EVENTS_MAX} events: the simulation does not settle")
            timer.action(*timer.args)
            return True
        return False

    def run(self, until: Callable[[], bool] | None = None, *, time_max: float | None = None) -> None:
        """Run events until `until()` holds, the queue empties, or time would pass `time_max`."""
        while until is None or not until():
            if time_max is not None and (not self._queue or self._queue[0][0] > time_max):
                self.time = max(self.time, time_max)
                return
            if not self.step():
                return

    # -- randomness ---------------------------------------------------------------------
    def uniform(self, low: float, high: float) -> float:
        return self.prng.uniform(low, high)

    def chance(self, probability: float) -> bool:
        """True with `probability`; draws from the PRNG only when the answer is not certain."""
        if probability <= 0:
            return False
        if probability >= 1:
            return True
        return self.prng.random() < probability

    # -- trace --------------------------------------------------------------------------
    def log(self, who: str, message: str) -> None:
        """One line of the run's trace: `<seconds since start> <who> <what>`."""
        if self.tracing:
            self.trace.append(f"{self.time:.6f} {who} {message}")


class SimThread:
    """A generator run as a thread of simulated time (see the module docstring)."""

    def __init__(self, clock: SimClock, name: str, body: Generator[Any, Any, Any]) -> None:
        self.clock = clock
        self.name = name
        self._body = body
        self.alive = True
        self.parked = False
        self._timer: Timer | None = clock.call_later(0.0, self._resume)
        self._joiners: list[SimThread] = []

    def _resume(self) -> None:
        if not self.alive:
            return
        self._timer = None
        self.parked = False
        self.clock.current = self
        try:
            request = next(self._body)
        except StopIteration:
            self._finish()
            return
        finally:
            self.clock.current = None
        if isinstance(request, Park):
            self.parked = True
            if request.timeout_s is not None:
                self._timer = self.clock.call_later(request.timeout_s, self._resume)
        else:
            self._timer = self.clock.call_later(float(request), self._resume)

    def wake(self, delay_s: float = 0.0) -> None:
        """Resume a parked thread after `delay_s` (a notify); no effect on a sleeping or dead one."""
        if not self.alive or not self.parked:
            return
        if self._timer is not None:
            if self._timer.when <= self.clock.time + delay_s:
                return  # it resumes at least as soon anyway
            self._timer.cancel()
        self._timer = self.clock.call_later(delay_s, self._resume)

    def kill(self) -> None:
        """Stop the thread where it is (its process died); it never runs again."""
        self.alive = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._finish()

    def join(self, joiner: SimThread) -> Park:
        """`yield other.join(me)` parks `joiner` until this thread ends. Like every park it may
        end early (someone else woke the joiner): call it in a loop on `other.alive`."""
        if not self.alive:
            return Park(0.0)
        if joiner not in self._joiners:
            self._joiners.append(joiner)
        return Park(None)

    def _finish(self) -> None:
        self.alive = False
        joiners, self._joiners = self._joiners, []
        for joiner in joiners:
            joiner.wake()
