"""Every limit of the engine, as one named constant each (units last)."""

KEY_LEN_MAX_DEFAULT_COLLECTION = 250  # bytes, as Couchbase
KEY_LEN_MAX_NAMED_COLLECTION = 246  # bytes: the leb128 collection id takes up to 4 of the 250
VALUE_SIZE_MAX = 20 * 1024 * 1024  # bytes (Couchbase's default max_item_size)
NAME_LEN_MAX = 251  # scope and collection names
BUCKET_NAME_LEN_MAX = 100
BUCKETS_MAX = 30
SCOPES_MAX = 1000
COLLECTIONS_MAX = 1000

EXPIRY_RELATIVE_MAX_S = 30 * 24 * 3600  # expiries up to this many seconds are relative
EXPIRY_ABSOLUTE_MAX_S = 2**32 - 1  # stored as 32-bit absolute unix seconds

LOCK_TIME_DEFAULT_S = 15
LOCK_TIME_MAX_S = 30

NUM_VBUCKETS_DEFAULT = 64
NUM_VBUCKETS_MAX = 1024
NUM_REPLICAS_MAX = 3
SYNC_WRITE_REPLICAS_MAX = 2

DURABILITY_TIMEOUT_DEFAULT_MS = 30_000  # server default when the client sends none
DURABILITY_TIMEOUT_MAX_MS = 65_534
PENDING_PREPARES_MAX = 100_000  # per bucket; beyond it new SyncWrites get TMPFAIL

FAILOVER_LOG_ENTRIES_MAX = 25

WAL_RECORD_SIZE_MAX = VALUE_SIZE_MAX + 64 * 1024  # a record holds one document plus metadata
WAL_SEGMENT_SIZE_DEFAULT = 64 * 1024 * 1024
WAL_BUFFER_SIZE_MAX = 256 * 1024 * 1024  # unflushed bytes beyond this -> TMPFAIL
WAL_UNSYNCED_SIZE_MAX = 64 * 1024 * 1024  # written-but-unsynced bytes beyond this force an fsync, any policy
WAL_SEGMENT_SIZE_MIN = 1024  # smallest segment_size_max accepted (tests use small segments)
WAL_FSYNC_INTERVAL_MAX_MS = 60_000  # largest N accepted in fsync policy "interval=N"
WAL_FAILURE_RETRY_INTERVAL_S = 0.2  # a failed WAL retries its rewrite + fsync this often
WAL_GATHER_FRACTION = 0.5  # with concurrent writers, wait this fraction of an fsync for more
WAL_GATHER_MAX_S = 0.002  # ... but never longer than this
WAL_LAZY_DELAY_S = 0.005  # a lazy record (a SyncWrite's commit) waits at most this long for company

MEMTABLE_SIZE_CHECKPOINT = 64 * 1024 * 1024  # bytes that trigger a checkpoint
CHECKPOINT_INTERVAL_S = 5.0

LMDB_MAP_SIZE_INITIAL = 256 * 1024 * 1024
LMDB_MAP_SIZE_MAX = 1 << 40
LMDB_MAX_DBS = 8
LMDB_MAX_READERS = 126  # concurrent read transactions (LMDB's reader table size)
LMDB_RESIZE_READERS_WAIT_S = 10.0  # a map resize waits this long for open store snapshots to close

EXPIRY_PAGER_INTERVAL_S = 600.0
