"""The service's password policy, and Argon2id hashing.

The policy, one error code per broken rule: at least 8 characters; an upper-case letter, a
lower-case letter, a digit and a special character; no username, first name or last name in
it (case-insensitive, accents folded); not a common password; on change, none of the last
three. Long passphrases with spaces and any Unicode are taken whole: Argon2 has no length cut.
"""

from __future__ import annotations

import asyncio
import re
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cases.identity import fold
from core.errors import ErrorCode

MIN_LENGTH = 8
MAX_LENGTH = 1024  # far beyond any passphrase; stops hashing megabytes on purpose
# Each part of a compound name ("De Luca") counts from three letters ("de" is in too many words);
# the whole name always counts, however short ("Li", "deluca").
NAME_PART_MIN = 3
COMMON_LIST = Path(__file__).parent / "data" / "common-passwords.txt"
_EDGES = re.compile(r"^[\W\d_]+|[\W\d_]+$")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, case-folded (read once)."""
    return frozenset(
        line.strip() for line in COMMON_LIST.read_text(encoding="utf-8").splitlines() if line
    )


def is_common(password: str) -> bool:
    """True for a listed password, also when only digits or symbols were added at its ends."""
    folded = password.casefold()
    listed = common_passwords()
    if folded in listed:
        return True
    core = _EDGES.sub("", folded)
    return len(core) >= 4 and core in listed


def _name_parts(name: str) -> list[str]:
    folded = fold(name)
    parts = [p for p in re.split(r"[\s'’.\-]+", folded) if len(p) >= NAME_PART_MIN]
    whole = re.sub(r"[\s'’.\-]+", "", folded)
    if len(whole) >= 2:
        parts.append(whole)
    return parts


def check_password(
    password: str, *, username: str = "", first_name: str = "", last_name: str = ""
) -> list[ErrorCode]:
    """Every policy rule the password breaks (empty when it is acceptable)."""
    if not password:
        return [ErrorCode.REQUIRED]
    if len(password) > MAX_LENGTH:
        return [ErrorCode.PASSWORD_TOO_LONG]
    errors: list[ErrorCode] = []
    if len(password) < MIN_LENGTH:
        errors.append(ErrorCode.PASSWORD_TOO_SHORT)
    if not any(c.isupper() for c in password):
        errors.append(ErrorCode.PASSWORD_NO_UPPER)
    if not any(c.islower() for c in password):
        errors.append(ErrorCode.PASSWORD_NO_LOWER)
    if not any(c.isdigit() for c in password):
        errors.append(ErrorCode.PASSWORD_NO_DIGIT)
    if all(c.isalnum() for c in password):
        errors.append(ErrorCode.PASSWORD_NO_SPECIAL)
    folded = fold(password)
    compact = re.sub(r"[\s'’.\-]+", "", folded)
    if username and fold(username) in folded:
        errors.append(ErrorCode.PASSWORD_HAS_USERNAME)
    if first_name and any(p in folded or p in compact for p in _name_parts(first_name)):
        errors.append(ErrorCode.PASSWORD_HAS_FIRST_NAME)
    if last_name and any(p in folded or p in compact for p in _name_parts(last_name)):
        errors.append(ErrorCode.PASSWORD_HAS_LAST_NAME)
    if is_common(password):
        errors.append(ErrorCode.PASSWORD_COMMON)
    return errors


class PasswordHasher:
    """Argon2id hashing off the event loop; a dummy verify keeps unknown users as slow."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4):
        self._hasher = Argon2Hasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._dummy = self._hasher.hash("dummy password for absent accounts")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``; for ``None`` spend the same time, say no."""
        if stored is None:
            await asyncio.to_thread(self._verify, self._dummy, password)
            return False
        return await asyncio.to_thread(self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        return bool(self._hasher.check_needs_rehash(stored))
