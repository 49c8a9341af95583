"""durakv: a replicated document store with Couchbase key-value semantics."""

__version__ = "0.1.0"
