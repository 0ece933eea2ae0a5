"""Structured logs: one JSON object per line on stderr.

Callers never log passwords, tokens or personal data; the access log records the route
pattern (``/reset/{token}``), not the path, so secrets in URLs never reach it.
"""

from __future__ import annotations

import logging
import sys

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


QUIET = ("aiosqlite", "sqlalchemy.engine", "asyncpg", "aiosmtplib", "redis")
