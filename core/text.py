"""User text as it may be stored: Unicode NFC, without control characters (a NUL would be refused
by PostgreSQL, others confuse what shows it), line breaks and tabs kept."""

from __future__ import annotations

import unicodedata


def strip_controls(value: str) -> str:
    text = unicodedata.normalize("NFC", value.replace("\r\n", "\n"))
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
