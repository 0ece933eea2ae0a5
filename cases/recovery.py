"""Username recovery and password reset by e-mail.

Both answer identically whether an account matches or not, and in the same time: the request
is checked at once, but looking the account up, issuing the link and queueing the mail happen
in the background, after the answer (done inline, a known account's request took several
times as long as an unknown one's: a timing oracle for who is registered). Links are built
from the configured public URL, never from the request. A reset link carries 256 random bits, is
stored only as a hash, works once for 30 minutes, and asking again revokes the older one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from cases.accounts import Account, Accounts, DisabledReason, Status, check_new_password
from cases.identity import check_email, clean, username_key
from cases.tokens import AccountToken, Purpose, find_link, issue_link, spend
from core.errors import ErrorCode, FieldErrors, UserError
from core.outage import log_failure

log = logging.getLogger(__name__)

RESETS_PER_HOUR = 5  # more requests are ignored silently (same answer), to stop mail floods
WAITING_MAX = 1000  # requests waiting for their turn; beyond, dropped (same answer), and logged


class Recovery:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self._tasks: set[asyncio.Task[None]] = set()
        # One request at a time, in the order they came: the hourly cap counts the links
        # issued before, and a flood of requests queues up instead of running all at once.
        self._turn = asyncio.Lock()

    def _later(self, work: Coroutine[Any, Any, None], what: str) -> None:
        if len(self._tasks) >= WAITING_MAX:
            work.close()
            log.warning("%s dropped: %d requests are waiting already", what, len(self._tasks))
            return

        async def run() -> None:
            try:
                async with self._turn:
                    await work
            except Exception:
                log_failure(log, "%s failed", what)

        task = asyncio.create_task(run(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the requests answered so far to be done (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    async def do_request_reset(self, identifier: object) -> None:
        """Mail a reset link to the account named by username or e-mail, if there is one
        (in the background: see the module's docstring)."""
        text = clean(identifier, 300)
        if not text:
            raise FieldErrors({"identifier": [ErrorCode.REQUIRED]})
        if "@" in text:
            email = check_email(text)
            if isinstance(email, ErrorCode):
                raise FieldErrors({"identifier": [email]})
            self._later(self._send_reset(email=email), "password reset request")
        else:
            self._later(self._send_reset(username=text), "password reset request")

    async def _send_reset(self, *, email: str | None = None, username: str | None = None) -> None:
        accounts = self.accounts
        now = accounts.clock.now()
        minutes = accounts.settings.reset_token_minutes
        async with accounts.db.session() as session:
            if email is not None:
                query = select(Account).where(func.lower(Account.email) == email.lower())
            else:
                query = select(Account).where(Account.username_key == username_key(username or ""))
            for account in list(await session.scalars(query)):
                recent = await session.scalar(
                    select(func.count())
                    .select_from(AccountToken)
                    .where(
                        AccountToken.account_id == account.id,
                        AccountToken.purpose == Purpose.RESET_PASSWORD,
                        AccountToken.created_at > now - timedelta(hours=1),
                    )
                )
                if (recent or 0) >= RESETS_PER_HOUR:
                    continue
                token = await issue_link(
                    session, account.id, Purpose.RESET_PASSWORD, timedelta(minutes=minutes), now
                )
                accounts.notifier.queue_for(
                    session,
                    account,
                    "reset_password",
                    minutes=minutes,
                    link=f"{accounts.notifier.public_url}/reset/{token}",
                )
            await session.commit()
        accounts.notifier.wake()

    async def do_reset_password(self, token: str, form: Mapping[str, object]) -> Account:
        """Set a new password with a reset link; every session of the account ends.

        The link proves the mailbox, so it also confirms an unverified address and re-enables
        an account disabled for inactivity (not one an admin disabled).
        """
        accounts = self.accounts
        now = accounts.clock.now()
        async with accounts.db.session() as session:
            row = await find_link(session, token, Purpose.RESET_PASSWORD, now)
            account = await session.get(Account, row.account_id)
            if account is None:
                raise UserError(ErrorCode.TOKEN_INVALID)
            errors: dict[str, list[ErrorCode]] = {}
            password = check_new_password(
                form,
                errors,
                username=account.username,
                first_name=account.first_name,
                last_name=account.last_name,
            )
            if "password" not in errors and not await accounts.check_not_recent(
                session, account.id, password
            ):
                errors["password"] = [ErrorCode.PASSWORD_REUSED]
            if errors:
                raise FieldErrors(errors)
            await spend(session, row, now)
            await accounts.set_password(session, account, password, now)
            await accounts.confirm_email(session, account, now)
            if (
                account.status == Status.DISABLED
                and account.disabled_reason == DisabledReason.INACTIVITY
            ):
                account.status = Status.ACTIVE
                account.disabled_reason = None
            account.last_activity_at = now
            await session.commit()
        await accounts.sessions.delete_for_account(account.id)
        accounts.notifier.wake()
        return account

    async def do_recover_username(self, email: object) -> None:
        """Mail the usernames registered with ``email``, if any (in the background)."""
        address = check_email(clean(email, 300))
        if isinstance(address, ErrorCode):
            raise FieldErrors({"email": [address]})
        self._later(self._send_usernames(address), "username recovery request")

    async def _send_usernames(self, address: str) -> None:
        accounts = self.accounts
        async with accounts.db.session() as session:
            rows = list(
                await session.scalars(
                    select(Account)
                    .where(func.lower(Account.email) == address.lower())
                    .order_by(Account.created_at)
                )
            )
            if rows:
                accounts.notifier.queue(
                    session,
                    to=rows[0].email,
                    lang=rows[0].language,
                    template="recover_username",
                    usernames=[r.username for r in rows],
                )
                await session.commit()
        accounts.notifier.wake()
