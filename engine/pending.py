"""A handle for a request that completes later (a SyncWrite waiting for its commit).

The engine core never blocks: a durable write returns a `Pending`; the core resolves
it when the durability monitor commits or aborts the prepare. Shells wait on it their
own way (a threading.Event in the embedded shell, an asyncio future in the node
server) by registering a callback. Resolved exactly once (asserted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import KVError


class Pending:
    __slots__ = ("_callbacks", "done", "error", "result")

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        self.error: KVError | None = None
        self._callbacks: list[Callable[[Pending], None]] = []

    def add_callback(self, callback: Callable[[Pending], None]) -> None:
        """Call `callback(self)` on resolution (at once if already resolved)."""
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def resolve(self, result: Any = None, error: KVError | None = None) -> None:
        assert not self.done, "a pending request is resolved twice"
        self.done = True
        self.result = result
        self.error = error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def outcome(self) -> Any:
        """The result, or raise the error it was resolved with."""
        assert self.done
        if self.error is not None:
            raise self.error
        return self.result
