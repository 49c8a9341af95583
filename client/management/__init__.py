"""Management APIs: `durakv.management.buckets` and `durakv.management.collections`."""
