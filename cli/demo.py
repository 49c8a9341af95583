"""`durakv demo`: the Couchbase KV tutorial's operations against an embedded node, narrated.

Each step is what the tutorial shows (insert with options and expiry, get with a
timeout, upsert, replace, remove with CAS and durability, a scoped collection), plus
what durakv adds to it on one node: a CAS mismatch, a lock, a counter, and the
durability error a bucket with a replica gives on a single node.
"""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)


def _step(title: str) -> None:
    console.print(f"\n[bold cyan]▸ {title}[/]")


def _ok(text: str) -> None:
    console.print(f"  [green]✓[/] {escape(text)}")


def _refused(exc: Exception) -> None:
    console.print(f"  [yellow]✗ {type(exc).__name__}[/]: {escape(str(getattr(exc, 'message', None) or exc))}")


def run(data_dir: str) -> int:
    from durakv.cluster import Cluster
    from durakv.durability import Durability, ServerDurability
    from durakv.exceptions import (
        CasMismatchException,
        CollectionAlreadyExistsException,
        DocumentNotFoundException,
        DurabilityImpossibleException,
        ScopeAlreadyExistsException,
    )
    from durakv.management.buckets import CreateBucketSettings
    from durakv.options import (
        DeltaValue,
        GetOptions,
        IncrementOptions,
        InsertOptions,
        RemoveOptions,
        ReplaceOptions,
        SignedInt64,
        UpsertOptions,
    )

    console.print(f"[bold]durakv demo[/] — an embedded node in [magenta]{data_dir}[/]")
    with Cluster.embedded(data_dir) as cluster:
        bucket = cluster.bucket("default")
        coll = bucket.default_collection()
        for key in ("document-key", "document-key-opts", "document-key-1", "visits"):
            try:
                coll.remove(key)
            except DocumentNotFoundException:
                pass

        _step("insert a document")
        result = coll.insert("document-key", {"foo": "bar", "bar": "foo"})
        _ok(f"inserted document-key, cas={result.cas}")

        _step("insert with options: a 5 s timeout and a 30 s expiry")
        opts = InsertOptions(timeout=timedelta(seconds=5))
        result = coll.insert("document-key-opts", {"foo": "bar", "bar": "foo"}, opts, expiry=timedelta(seconds=30))
        got = coll.get("document-key-opts", GetOptions(with_expiry=True))
        _ok(f"cas={result.cas}, expires at {got.expiry_time:%H:%M:%S}")

        _step("get with a timeout")
        result = coll.get("document-key", GetOptions(timeout=timedelta(seconds=5)))
        _ok(f"content_as[dict] = {result.content_as[dict]}")

        _step("upsert: insert or update")
        coll.upsert("document-key", {"foobar": "barfoo"})
        _ok(f"document-key is now {coll.get('document-key').content_as[dict]}")
        coll.upsert("document-key-1", {"foo": "bar", "bar": "foo"})
        _ok(f"document-key-1 is {coll.get('document-key-1').content_as[dict]}")

        _step("replace, guarded by CAS")
        current = coll.get("document-key")
        result = coll.replace("document-key", {"foo": "bar", "bar": "foo"}, ReplaceOptions(cas=current.cas))
        _ok(f"replaced with the CAS we read; new cas={result.cas}")
        try:
            coll.replace("document-key", {"stale": True}, ReplaceOptions(cas=current.cas))
        except CasMismatchException as exc:
            _refused(exc)
            console.print("    (the document changed since that CAS was read, so the write is refused)")

        _step("remove with a wrong CAS, then with the right one and durability MAJORITY")
        try:
            coll.remove("document-key", RemoveOptions(cas=12345, durability=ServerDurability(Durability.MAJORITY)))
        except CasMismatchException as exc:
            _refused(exc)
        cas = coll.get("document-key").cas
        coll.remove("document-key", RemoveOptions(cas=cas, durability=ServerDurability(Durability.MAJORITY)))
        _ok(f"removed; exists() now says {coll.exists('document-key').exists}")

        _step("durability levels on one node with no replicas")
        table = Table("level", "result", "cas")
        for level in (Durability.MAJORITY, Durability.MAJORITY_AND_PERSIST_TO_ACTIVE, Durability.PERSIST_TO_MAJORITY):
            res = coll.upsert("document-key-1", {"level": level.name},
                              UpsertOptions(durability=ServerDurability(level)))  # fmt: skip
            table.add_row(level.name, "acknowledged", str(res.cas))
        console.print(table)
        console.print("    (persist levels were acknowledged only after the WAL fsync that covers them)")

        _step("a scoped collection: tenant_agent_00.users")
        manager = bucket.collections()
        try:
            manager.create_scope("tenant_agent_00")
        except ScopeAlreadyExistsException:
            pass
        try:
            manager.create_collection("tenant_agent_00", "users")
        except CollectionAlreadyExistsException:
            pass
        users = bucket.scope("tenant_agent_00").collection("users")
        users.upsert("user-key", {"name": "John Doe", "preferred_email": "johndoe111@test123.test"})
        _ok(f"user-key = {users.get('user-key').content_as[dict]}")

        _step("a lock and a counter")
        locked = users.get_and_lock("user-key", timedelta(seconds=5))
        _ok(f"get_and_lock gave lock cas={locked.cas}; a plain get now shows cas={users.get('user-key').cas}")
        users.unlock("user-key", locked.cas)
        _ok("unlocked with the lock CAS")
        counter = coll.binary().increment("visits", IncrementOptions(delta=DeltaValue(5), initial=SignedInt64(100)))
        _ok(f"increment on a missing key creates it with the initial value: visits = {counter.content}")
        counter = coll.binary().increment("visits", IncrementOptions(delta=DeltaValue(5)))
        _ok(f"increment by 5: visits = {counter.content}")

        _step("a bucket with one replica, on a single node")
        if "replicated" not in [b.name for b in cluster.buckets().get_all_buckets()]:
            cluster.buckets().create_bucket(CreateBucketSettings(name="replicated", num_replicas=1))
        replicated = cluster.bucket("replicated").default_collection()
        replicated.upsert("plain", {"ok": True})
        _ok("a plain write works")
        try:
            replicated.upsert("durable", {"ok": False}, UpsertOptions(durability=ServerDurability(Durability.MAJORITY)))
        except DurabilityImpossibleException as exc:
            _refused(exc)
            console.print("    (a majority of a 2-node chain needs the replica, and this node is alone)")
    console.print("\n[bold green]done[/] — the data stays in", data_dir)
    return 0
