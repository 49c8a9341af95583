"""durakv's write-ahead log: segmented files of opaque records, group commit, torn-tail recovery.

The byte format and the recovery rules are in FORMAT.md (shipped with the package);
`codec` is the pure format, `log` the shell that owns files, fsync and the flusher.
"""

from durakv.engine.wal.codec import WalFormatVersionError, WalRecord
from durakv.engine.wal.log import FsyncPolicy, WalBackpressureError, WalClosedError, WriteAheadLog

__all__ = [
    "FsyncPolicy",
    "WalBackpressureError",
    "WalClosedError",
    "WalFormatVersionError",
    "WalRecord",
    "WriteAheadLog",
]
