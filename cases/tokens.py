"""Single-use secrets sent by e-mail: verification links, reset links, sign-in codes.

Only a hash of each secret is stored. A token is valid until it expires, is used, or is
revoked (a newer one of the same purpose, or a password change, revokes it).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.errors import ErrorCode, UserError
from core.ids import keyed_hash, new_id, new_token, token_hash


class Purpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    LOGIN_CODE = "login_code"
    CHANGE_EMAIL = "change_email"


class AccountToken(Base):
    __tablename__ = "account_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[str | None] = mapped_column(String(320), nullable=True)

    def live(self, now: datetime) -> bool:
        return self.used_at is None and self.revoked_at is None and now < self.expires_at


async def revoke(
    session: AsyncSession, account_id: uuid.UUID, purpose: Purpose, now: datetime
) -> None:
    """Revoke every still-open token of ``purpose`` for the account."""
    await session.execute(
        update(AccountToken)
        .where(
            AccountToken.account_id == account_id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )


async def issue_link(
    session: AsyncSession,
    account_id: uuid.UUID,
    purpose: Purpose,
    ttl: timedelta,
    now: datetime,
    *,
    payload: str | None = None,
) -> str:
    """A new 256-bit link token; older open tokens of the same purpose are revoked."""
    await revoke(session, account_id, purpose, now)
    token = new_token()
    session.add(
        AccountToken(
            id=new_id(),
            account_id=account_id,
            purpose=purpose,
            token_hash=token_hash(token),
            created_at=now,
            expires_at=now + ttl,
            attempts=0,
            payload=payload,
        )
    )
    return token


async def find_link(
    session: AsyncSession, token: str, purpose: Purpose, now: datetime
) -> AccountToken:
    """The live token row for ``token``; raise ``TOKEN_INVALID`` when unknown or spent."""
    if not token or len(token) > 200:
        raise UserError(ErrorCode.TOKEN_INVALID)
    row = await session.scalar(
        select(AccountToken).where(
            AccountToken.token_hash == token_hash(token), AccountToken.purpose == purpose
        )
    )
    if row is None or not row.live(now):
        raise UserError(ErrorCode.TOKEN_INVALID)
    return row


async def spend(session: AsyncSession, row: AccountToken, now: datetime) -> None:
    """Mark a token used, at most once even when two requests race (on any node)."""
    result = await session.execute(
        update(AccountToken)
        .where(
            AccountToken.id == row.id,
            AccountToken.used_at.is_(None),
            AccountToken.revoked_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise UserError(ErrorCode.TOKEN_INVALID)


def code_hash(secret: bytes, account_id: uuid.UUID, code: str) -> str:
    return keyed_hash(secret, "login-code", str(account_id), code)


async def issue_code(
    session: AsyncSession, secret: bytes, account_id: uuid.UUID, ttl: timedelta, now: datetime
) -> str:
    """A new six-digit sign-in code; older codes of the account are revoked."""
    await revoke(session, account_id, Purpose.LOGIN_CODE, now)
    code = f"{secrets.randbelow(1_000_000):06d}"
    session.add(
        AccountToken(
            id=new_id(),
            account_id=account_id,
            purpose=Purpose.LOGIN_CODE,
            # The hash includes a fresh id so equal codes of different logins never collide.
            token_hash=keyed_hash(secret, "login-code-row", new_token(16)),
            created_at=now,
            expires_at=now + ttl,
            attempts=0,
            payload=code_hash(secret, account_id, code),
        )
    )
    return code
