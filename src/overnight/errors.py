"""The one error tree. Every failure a caller can see is one of these.

    OvernightError                  500  something we did not expect
    ├── InvalidRequest              400  the request is malformed or names a bad value
    ├── AuthenticationFailed        401  missing or unknown API key
    ├── Forbidden                   403  a credential that is known but not good for this
    ├── NotFound                    404  no such object (for this tenant)
    ├── Conflict                    409  the object is in the wrong state for this
    │   └── ConflictInProgress      409  another request on it is still running: retry
    ├── PayloadTooLarge             413  a body or file over a configured limit
    ├── LimitExceeded               429  a tenant quota (pending batches, enqueued requests)
    ├── RateLimited                 429  a key sent requests faster than its rate limit
    ├── HeadersTooLarge             431  the request line and headers are over the limit
    ├── StorageError                500  the database failed an operation (a bug, a broken constraint)
    │   └── StorageUnavailable      503  the database is out of reach or gave a transaction up
    │                                    (a lock, a deadlock, a lost connection): a retry may
    │                                    pass; also an Unavailable
    └── Unavailable                 503  the service cannot take this right now

Dialects render these in their own envelope (`api/errors.py`); foreign errors
(database, HTTP client) are translated into them once, at the edge where
they arise: every database error becomes a `StorageError` inside `store/`.
`code` and `param` follow the OpenAI convention so that every dialect can
pass them through.
"""

from __future__ import annotations


class OvernightError(Exception):
    status_code = 500
    default_code: str | None = "server_error"
    #: Seconds after which the same request may succeed (sent as `Retry-After`).
    retry_after: float | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    @property
    def retryable(self) -> bool:
        """Whether a client may usefully send the same request again."""
        return self.status_code >= 500 or self.status_code in (408, 429)


class InvalidRequest(OvernightError):
    status_code = 400
    default_code = "invalid_request"


class AuthenticationFailed(OvernightError):
    status_code = 401
    default_code = "invalid_api_key"


class Forbidden(OvernightError):
    status_code = 403
    default_code = "forbidden"


class NotFound(OvernightError):
    status_code = 404
    default_code = "not_found"


class Conflict(OvernightError):
    status_code = 409
    default_code = "conflict"


class ConflictInProgress(Conflict):
    @property
    def retryable(self) -> bool:
        """The request it collides with ends soon; an SDK's retries, seconds
        apart, then get past it."""
        return True


class PayloadTooLarge(OvernightError):
    status_code = 413
    default_code = "payload_too_large"


class LimitExceeded(OvernightError):
    status_code = 429
    default_code = "limit_exceeded"

    @property
    def retryable(self) -> bool:
        """A quota frees up as batches end, in minutes: an SDK's automatic
        retries, seconds apart, would only be refused again."""
        return False


class RateLimited(OvernightError):
    """Retryable, unlike a quota: the SDKs wait `Retry-After` and try again."""

    status_code = 429
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HeadersTooLarge(OvernightError):
    status_code = 431
    default_code = "request_header_fields_too_large"


class Unavailable(OvernightError):
    status_code = 503
    default_code = "unavailable"


class StorageError(OvernightError):
    """The database failed an operation. Raised from inside `store/` only,
    chained to the driver's error (`__cause__`) for the logs; the message a
    client sees names no table, statement or path."""

    default_code = "storage_error"


class StorageUnavailable(StorageError, Unavailable):
    """The database is out of reach or gave a transaction up: a moment
    later the same call may well succeed. Loops that run for ever (the
    heartbeat, the flusher's counts) log it and go round again."""

    status_code = 503
    default_code = "storage_unavailable"
