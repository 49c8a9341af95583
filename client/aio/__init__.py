"""durakv.aio: the asyncio SDK, shaped like the Couchbase Python SDK's `acouchbase` package.

    from durakv.aio.cluster import Cluster

    cluster = await Cluster.connect("durakv://127.0.0.1:7101", ClusterOptions(PasswordAuthenticator("u", "p")))
    coll = cluster.bucket("default").default_collection()
    result = await coll.get("key")

Same names as the synchronous SDK (`durakv.cluster`, `durakv.bucket`, ...), with every
operation that talks to the cluster a coroutine: `durakv.aio.cluster.Cluster`
(`AsyncCluster`), `durakv.aio.bucket.Bucket`, `durakv.aio.scope.Scope`,
`durakv.aio.collection.Collection`, `durakv.aio.binary_collection.BinaryCollection` and the
managers in `durakv.aio.management`. Options, durability, transcoders, results and
exceptions are the synchronous SDK's own classes (`durakv.options`, `durakv.result`, ...).

Operations run concurrently: they share one pipelined gRPC stream per node (the operations
submitted together travel in one message), so `asyncio.gather` of many operations keeps
them all in flight at once.
"""

from .cluster import AsyncCluster, Cluster

__all__ = ["AsyncCluster", "Cluster"]
