"""`event_loop.cancel_and_wait`: a stop that cannot hang on a lost cancellation."""

from __future__ import annotations

import asyncio

import pytest

from durakv.replication.event_loop import cancel_and_wait


def test_a_cancellation_lost_once_is_repeated_until_the_task_ends():
    async def scenario() -> asyncio.Task:
        running = asyncio.Event()

        async def stubborn() -> None:
            lost = False
            while True:  # a reconnecting loop
                running.set()
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    if lost:
                        raise
                    lost = True  # as asyncio.wait_for (Python 3.11) can lose one

        task = asyncio.ensure_future(stubborn())
        await running.wait()  # inside its loop, where the first cancellation is lost
        await asyncio.wait_for(cancel_and_wait(task, recancel_s=0.05), 5)
        return task

    assert asyncio.run(scenario()).cancelled()


def test_an_error_the_task_ended_with_is_raised():
    async def scenario() -> None:
        async def broken() -> None:
            raise ValueError("broken")

        task = asyncio.ensure_future(broken())
        await asyncio.sleep(0)
        await cancel_and_wait(task)

    with pytest.raises(ValueError, match="broken"):
        asyncio.run(scenario())
