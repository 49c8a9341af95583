"""Every exception the SDK raises, with the names and error codes of the Couchbase Python SDK 4.x.

All classes derive directly from `CouchbaseException` (so `AmbiguousTimeoutException` and
`UnAmbiguousTimeoutException` are *not* subclasses of `TimeoutException`, as in Couchbase).
`DurakvException` is an alias of the root. KV failures carry a `KeyValueErrorContext`
(key, bucket, scope, collection, status code, retry attempts and reasons); callers should
branch on the class and on `error_code` / context fields, never on message text.

Deviations from Couchbase, all additive:
- `ValueTooLargeException` (error_code 104) exists so callers can catch an oversized value;
  Couchbase surfaces that case as a plain `CouchbaseException` with error_code 104.
- `BucketDoesNotExistException` (raised by bucket management) subclasses
  `BucketNotFoundException` instead of being its sibling, so either `except` catches it.
"""

from __future__ import annotations

from typing import Any


class ErrorContext:
    """What the SDK knew about a failed operation (fields vary by service)."""

    def __init__(self, **kwargs: Any) -> None:
        self._base = kwargs

    @property
    def last_dispatched_to(self) -> str | None:
        return self._base.get("last_dispatched_to")

    @property
    def last_dispatched_from(self) -> str | None:
        return self._base.get("last_dispatched_from")

    @property
    def retry_attempts(self) -> int | None:
        return self._base.get("retry_attempts")

    @property
    def retry_reasons(self) -> set[str] | None:
        return self._base.get("retry_reasons")

    def _get_base(self) -> dict[str, Any]:
        return self._base

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base})"


class KeyValueErrorContext(ErrorContext):
    """Context of a failed key-value operation."""

    @property
    def key(self) -> str | None:
        return self._base.get("key")

    @property
    def bucket_name(self) -> str | None:
        return self._base.get("bucket_name")

    @property
    def scope_name(self) -> str | None:
        return self._base.get("scope_name")

    @property
    def collection_name(self) -> str | None:
        return self._base.get("collection_name")

    @property
    def opaque(self) -> int | None:
        return self._base.get("opaque")

    @property
    def status_code(self) -> int | None:
        """The KV status the node answered with (Couchbase numbering), if one was received."""
        return self._base.get("status_code")

    @property
    def error_map_info(self) -> dict[str, Any] | None:
        return self._base.get("error_map_info")

    @property
    def extended_error_info(self) -> dict[str, Any] | None:
        return self._base.get("extended_error_info")


class ManagementErrorContext(ErrorContext):
    """Context of a failed bucket, scope or collection management call."""

    @property
    def status_code(self) -> int | None:
        return self._base.get("status_code")

    @property
    def path(self) -> str | None:
        return self._base.get("path")

    @property
    def content(self) -> str | None:
        return self._base.get("content")

    @property
    def response_code(self) -> int | None:
        return self._base.get("http_status")

    @property
    def client_context_id(self) -> str | None:
        return self._base.get("client_context_id")


class CouchbaseException(Exception):
    """Root of every SDK exception. `error_code` is Couchbase's numeric error code."""

    _ERROR_CODE: int | None = None

    def __init_subclass__(cls, code: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls._ERROR_CODE = code

    def __init__(
        self,
        message: str | None = None,
        *,
        error_code: int | None = None,
        context: ErrorContext | None = None,
        error_context: ErrorContext | None = None,
        inner_cause: BaseException | None = None,
        exc_info: dict[str, Any] | None = None,
        base: Any = None,
    ) -> None:
        self._message = message
        self._error_code = error_code
        self._context = context if context is not None else error_context
        self._exc_info = dict(exc_info or {})
        if inner_cause is not None:
            self._exc_info["inner_cause"] = inner_cause
        self._base = base
        super().__init__(message)

    @property
    def error_code(self) -> int | None:
        return self._error_code if self._error_code is not None else self._ERROR_CODE

    @property
    def message(self) -> str | None:
        return self._message

    @property
    def error_context(self) -> ErrorContext:
        if self._context is None:
            self._context = ErrorContext()
        return self._context

    @property
    def context(self) -> ErrorContext:
        """**DEPRECATED** use `error_context`."""
        return self.error_context

    @property
    def inner_cause(self) -> BaseException | None:
        return self._exc_info.get("inner_cause")

    def __repr__(self) -> str:
        details = []
        if self.error_code is not None:
            details.append(f"ec={self.error_code}")
        if self._message:
            details.append(f"message={self._message}")
        if self._context is not None:
            details.append(f"context={self._context!r}")
        if self.inner_cause is not None:
            details.append(f"inner_cause={self.inner_cause!r}")
        return f"{type(self).__name__}(<{', '.join(details)}>)"

    def __str__(self) -> str:
        return self.__repr__()


DurakvException = CouchbaseException


# --- common ---------------------------------------------------------------------------------


class RequestCanceledException(CouchbaseException, code=2):
    """The operation was cancelled before it completed (e.g. the cluster was closed)."""


class InvalidArgumentException(CouchbaseException, code=3):
    """An argument has an invalid value or type."""


class ServiceUnavailableException(CouchbaseException, code=4):
    """The service needed for the operation is not available."""


class InternalServerFailureException(CouchbaseException, code=5):
    """The node failed internally (KV status EINTERNAL)."""


class AuthenticationException(CouchbaseException, code=6):
    """Authentication failed or the user lacks access."""


class TemporaryFailException(CouchbaseException, code=7):
    """The node is temporarily unable to serve the request; retrying later may succeed."""


class ParsingFailedException(CouchbaseException, code=8):
    """A request could not be parsed."""


class CasMismatchException(CouchbaseException, code=9):
    """The CAS given does not match the document's current CAS."""


CASMismatchException = CasMismatchException


class BucketNotFoundException(CouchbaseException, code=10):
    """The bucket does not exist."""


class CollectionNotFoundException(CouchbaseException, code=11):
    """The collection does not exist."""


class UnsupportedOperationException(CouchbaseException, code=12):
    """The operation is not supported."""


class TimeoutException(CouchbaseException):
    """A generic timeout (the KV deadlines raise the two classes below instead)."""


class AmbiguousTimeoutException(CouchbaseException, code=13):
    """The deadline passed after the request may have reached the node: it may have been applied."""


class UnAmbiguousTimeoutException(CouchbaseException, code=14):
    """The deadline passed and the operation certainly changed nothing (idempotent or never sent)."""


class FeatureUnavailableException(CouchbaseException, code=15):
    """The feature is not available in this deployment."""


class ScopeNotFoundException(CouchbaseException, code=16):
    """The scope does not exist."""


class RateLimitedException(CouchbaseException, code=21):
    """The request exceeded a rate limit."""


class QuotaLimitedException(CouchbaseException, code=22):
    """The request exceeded a quota."""


class MissingConnectionException(CouchbaseException):
    """The cluster is closed or was never connected."""


class InternalSDKException(CouchbaseException, code=5000):
    """The SDK did something wrong; please report it."""


class UnsuccessfulOperationException(CouchbaseException, code=5002):
    """An operation did not succeed and no more specific class applies."""


class ValueFormatException(CouchbaseException):
    """A value could not be encoded or decoded by the transcoder."""


class InvalidIndexException(CouchbaseException):
    """A result index is out of range."""


# --- key-value ------------------------------------------------------------------------------


class DocumentNotFoundException(CouchbaseException, code=101):
    """The document does not exist."""


class DocumentUnretrievableException(CouchbaseException, code=102):
    """No copy of the document (active or replica) could be read."""


class DocumentLockedException(CouchbaseException, code=103):
    """The document is locked by `get_and_lock`."""


class ValueTooLargeException(CouchbaseException, code=104):
    """The value exceeds the node's item size limit (durakv addition; see the module docstring)."""


class DocumentExistsException(CouchbaseException, code=105):
    """The document already exists."""


class DurabilityInvalidLevelException(CouchbaseException, code=107):
    """The durability level is not valid for this bucket."""


class DurabilityImpossibleException(CouchbaseException, code=108):
    """The durability requirement cannot be met with the current topology."""


class DurabilitySyncWriteAmbiguousException(CouchbaseException, code=109):
    """The SyncWrite did not complete in time: it may or may not have been applied."""


class DurabilitySyncWriteInProgressException(CouchbaseException, code=110):
    """Another SyncWrite on the same key is still pending."""


class PathNotFoundException(CouchbaseException, code=113):
    """A sub-document path was not found."""


class PathMismatchException(CouchbaseException, code=114):
    """A sub-document path does not match the document's structure."""


class PathInvalidException(CouchbaseException, code=115):
    """A sub-document path is not syntactically valid."""


class PathTooBigException(CouchbaseException, code=116):
    """A sub-document path is too long or has too many components."""


class PathTooDeepException(CouchbaseException, code=117):
    """A sub-document path has too many levels."""


class ValueTooDeepException(CouchbaseException, code=118):
    """Inserting the value would make the document too deep."""


class InvalidValueException(CouchbaseException, code=119):
    """The value is not valid for the operation."""


class DocumentNotJsonException(CouchbaseException, code=120):
    """A JSON-only operation was attempted on a non-JSON document."""


class NumberTooBigException(CouchbaseException, code=121):
    """A number is outside the range arithmetic operations support."""


class DeltaInvalidException(CouchbaseException, code=122):
    """The counter document is not a number, or the delta is invalid."""


class PathExistsException(CouchbaseException, code=123):
    """A sub-document path already exists."""


class DocumentNotLockedException(CouchbaseException, code=131):
    """`unlock` was called on a document that is not locked."""


class MutationTokenOutdatedException(CouchbaseException, code=133):
    """A mutation token is older than the data it refers to."""


class RangeScanCompletedException(CouchbaseException, code=134):
    """A range scan has no more results."""


SubdocCantInsertValueException = InvalidValueException
SubdocPathMismatchException = PathMismatchException


# --- bucket, scope and collection management ------------------------------------------------


class BucketAlreadyExistsException(CouchbaseException, code=605):
    """A bucket with this name already exists."""


class BucketDoesNotExistException(BucketNotFoundException):
    """Bucket management: the bucket does not exist (also a `BucketNotFoundException`)."""


class BucketNotFlushableException(CouchbaseException, code=607):
    """The bucket cannot be flushed."""


class ScopeAlreadyExistsException(CouchbaseException, code=602):
    """A scope with this name already exists."""


class CollectionAlreadyExistsException(CouchbaseException, code=601):
    """A collection with this name already exists in the scope."""
