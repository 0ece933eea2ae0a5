"""Which dependency an exception says is down: the database (PostgreSQL) or Redis.

A request or a room event that fails because a dependency cannot be reached is not a bug of
ours: the edges answer it with ``ErrorCode.UNAVAILABLE`` (HTTP 503 with ``Retry-After``, or a
Socket.IO error ack) naming the dependency, and log one line without a traceback. Everything
else stays an internal error, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types

import asyncpg
from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_errors

DATABASE = "database"
REDIS = "redis"
RETRY_AFTER_SECONDS = 5  # what a client is told to wait before trying again

# Packages whose frames name the dependency a bare OSError came from (asyncpg's connect raises
# ConnectionRefusedError as is, through SQLAlchemy's pool).
_MODULES = (("sqlalchemy", DATABASE), ("asyncpg", DATABASE), ("redis", REDIS))


def _from_frames(tb: types.TracebackType | None) -> str | None:
    found = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        for prefix, dependency in _MODULES:
            if module == prefix or module.startswith(prefix + "."):
                found = dependency  # the innermost one wins
        tb = tb.tb_next
    return found


def _one(exc: BaseException) -> str | None:
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return REDIS
    if isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("LOADING"):
        return REDIS  # a restarted Redis reading its data back
    if isinstance(exc, sa_errors.DBAPIError) and exc.connection_invalidated:
        return DATABASE
    if isinstance(exc, sa_errors.TimeoutError):  # the pool had no connection to give
        return DATABASE
    # Only the errors of a connection: not SQLAlchemy's OperationalError or InterfaceError as
    # such, nor asyncpg's InterfaceError, which also stand for bugs and bad input (a query
    # argument out of range, "no such table", another operation in progress); a connection
    # lost under a statement comes as ``connection_invalidated`` above.
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError,
    ):
        return DATABASE
    if isinstance(exc, OSError | asyncio.TimeoutError):
        return _from_frames(exc.__traceback__)
    return None


def dependency_down(exc: BaseException) -> str | None:
    """``"database"`` or ``"redis"`` when ``exc`` (or what caused it) says that dependency
    cannot be reached now; ``None`` for any other failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _one(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """Log the exception being handled: one warning line naming the dependency when it is an
    outage (the node's dependency watch tells when it started and ended), the traceback
    otherwise. Call it from an ``except`` block."""
    exc = sys.exc_info()[1]
    dependency = dependency_down(exc) if exc is not None else None
    if dependency is None:
        logger.exception(message, *args)
        return
    logger.warning(message + " (%s unavailable: %s)", *args, dependency, type(exc).__name__)
