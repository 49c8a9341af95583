"""The event loop a durakv server process (node, manager) runs on.

uvloop where it is installed (it is a dependency everywhere but Windows): the same asyncio
API with a loop written in C, which takes roughly a tenth off a node's CPU per replicated
write (docs/benchmarks.md). Anywhere else, asyncio's own loop; nothing else changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # pragma: no cover - Windows, or installed without it
    uvloop = None

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop (uvloop's when available), like asyncio.run."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)


async def cancel_and_wait(task: asyncio.Future, recancel_s: float = 1.0) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again while it goes on.

    A cancellation that arrives just as an awaited result completes can be lost (Python
    3.11's `asyncio.wait_for` swallows it); a loop that reconnects or polls would then run
    for good and its owner's stop hang. An error the task ended with is raised here.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_s)
    if not task.cancelled():
        task.result()


def loop_name() -> str:
    return "uvloop" if uvloop is not None else "asyncio"
