"""Database errors, translated once, where they arise, into the error tree.

Every store operation runs on a connection from `StoreBase._write` or
`_read`, and whatever SQLAlchemy or the driver raises there leaves the store
as a `StorageError`, chained to the original for the logs. No caller imports
SQLAlchemy to catch the store's failures, and no client is shown a table,
a statement or a path.

The one judgement made here is whether the same call may succeed in a
moment (`StorageUnavailable`, 503): the database is out of reach, a
connection broke, or it gave a transaction up (a lock, a deadlock, a
serialization failure). Anything else (a broken constraint, a bad statement)
is a `StorageError`, 500: a bug to fix, not to retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa

from overnight.errors import StorageError, StorageUnavailable

#: SQLSTATEs (PostgreSQL's and the standard's) that mean "try again":
#: connection exceptions (08), transaction rollback (40: serialization
#: failure, deadlock), insufficient resources (53), the server shutting
#: down or starting up (57P), and a lock not available (55P03).
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P", "55P03")

#: What SQLAlchemy raises for a database that cannot be used right now.
#: OSError covers a refused or dropped connection, which asyncpg raises
#: bare when the pool opens a new connection; SQLite reports a busy or
#: unopenable file as an OperationalError.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    sa.TimeoutError,  # no connection free in the pool
    sa.DisconnectionError,
    sa.OperationalError,
    sa.InterfaceError,
)


def is_transient(error: BaseException) -> bool:
    """Whether the operation that raised `error` may succeed if run again."""
    if isinstance(error, _TRANSIENT_TYPES):
        return True
    if isinstance(error, sa.DBAPIError):
        if error.connection_invalidated:
            return True
        state = getattr(error.orig, "sqlstate", None)
        return isinstance(state, str) and state.startswith(_TRANSIENT_SQLSTATES)
    return False


def storage_error(error: BaseException) -> StorageError:
    """The project's error for a database error."""
    if is_transient(error):
        return StorageUnavailable("The database is unavailable right now; try again shortly.")
    return StorageError("The database could not carry out this operation.")


@contextmanager
def translated() -> Iterator[None]:
    """Run a store operation's transaction: a database error (or a refused
    connection) inside it leaves as a `StorageError`; the store's own errors
    (Conflict, LimitExceeded) pass through untouched."""
    try:
        yield
    except (sa.SQLAlchemyError, OSError) as error:
        raise storage_error(error) from error
