"""Document versions written since the last checkpoint, in front of the LMDB store.

Two layers: `live` takes every change; at a checkpoint it is frozen (moved to `frozen`,
which the checkpointer writes to LMDB) and a fresh `live` starts. A read looks in
`live`, then `frozen`, then the store. Invariant: for any key, `live` is newer than
`frozen`, which is newer than the store; `frozen` is dropped only after the store has
durably applied it.
"""

from __future__ import annotations

from .document import Document


class Memtable:
    __slots__ = ("frozen", "frozen_size", "live", "live_size")

    def __init__(self) -> None:
        self.live: dict[bytes, Document] = {}
        self.frozen: dict[bytes, Document] = {}
        self.live_size = 0  # approximate bytes, to decide when to checkpoint
        self.frozen_size = 0

    def get(self, skey: bytes) -> Document | None:
        doc = self.live.get(skey)
        if doc is None and self.frozen:
            doc = self.frozen.get(skey)
        return doc

    def put(self, skey: bytes, doc: Document) -> None:
        self.live[skey] = doc
        self.live_size += len(skey) + len(doc.value) + 64

    def freeze(self) -> dict[bytes, Document]:
        assert not self.frozen, "a checkpoint is already in progress"
        self.frozen, self.live = self.live, {}
        self.frozen_size, self.live_size = self.live_size, 0
        return self.frozen

    def release_frozen(self) -> None:
        self.frozen = {}
        self.frozen_size = 0

    def drop(self, predicate) -> None:
        """Forget every entry whose store key matches (a dropped collection or vbucket)."""
        for layer in (self.live, self.frozen):
            for skey in [k for k in layer if predicate(k)]:
                del layer[skey]

    def __len__(self) -> int:
        return len(self.live) + len(self.frozen)
