"""Option classes of the bucket and collection managers (Couchbase SDK 4.x names).

durakv's management calls complete in one step against the backend; the options are accepted
for compatibility and their `timeout` is not used yet.
"""

from __future__ import annotations

from ..options import OptionsTimeout


class CreateBucketOptions(OptionsTimeout):
    """create_bucket: timeout."""


class UpdateBucketOptions(OptionsTimeout):
    """update_bucket: timeout."""


class DropBucketOptions(OptionsTimeout):
    """drop_bucket: timeout."""


class GetBucketOptions(OptionsTimeout):
    """get_bucket: timeout."""


class GetAllBucketsOptions(OptionsTimeout):
    """get_all_buckets: timeout."""


class FlushBucketOptions(OptionsTimeout):
    """flush_bucket: timeout."""


class CreateScopeOptions(OptionsTimeout):
    """create_scope: timeout."""


class DropScopeOptions(OptionsTimeout):
    """drop_scope: timeout."""


class CreateCollectionOptions(OptionsTimeout):
    """create_collection: timeout."""


class DropCollectionOptions(OptionsTimeout):
    """drop_collection: timeout."""


class GetAllScopesOptions(OptionsTimeout):
    """get_all_scopes: timeout."""
