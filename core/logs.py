"""Structured logs: one JSON object per line on stderr.

Callers never log passwords, tokens or personal data; the access log records the route
pattern (``/reset/{token}``), not the path, so secrets in URLs never reach it.
"""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import HttpProcessingError
from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Install a single stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_concilia", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._concilia = True  # type: ignore[attr-defined]
    if json:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # These libraries log statements with their parameters (tokens, personal data) at DEBUG:
    # keep them quiet even when the service itself is debugged.
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server.filters):
        server.addFilter(MalformedRequests())


class MalformedRequests(logging.Filter):
    """aiohttp logs every request it cannot parse (a NUL in a header, a bad character in the
    path: what scanners send) as an ERROR with a traceback whose message quotes the request's
    bytes — a cookie among them. It was answered 400: that is a warning, named by the parse
    error's type, without the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if (
            record.levelno >= logging.ERROR
            and isinstance(error, HttpProcessingError)
            and (error.code or 400) < 500
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "bad_http_request", None
            record.exc_info = record.exc_text = None
            record.__dict__["error"] = type(error).__name__
        return True


QUIET = ("aiosqlite", "sqlalchemy.engine", "asyncpg", "aiosmtplib", "redis")
