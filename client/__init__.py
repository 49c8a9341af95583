"""durakv: a replicated document store with Couchbase key-value semantics."""
