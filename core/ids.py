"""Identifiers and secret tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid


def new_id() -> uuid.UUID:
    """A fresh random primary key (not guessable, not sequential)."""
    return uuid.uuid4()


def new_token(nbytes: int = 32) -> str:
    """A URL-safe secret token of ``nbytes`` random bytes (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """What is stored for a secret token: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def keyed_hash(key: bytes, *parts: str) -> str:
    """An HMAC-SHA256 over ``parts``; for low-entropy secrets such as one-time codes."""
    return hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())
