"""Username recovery and password reset by e-mail.

Both answer identically whether an account matches or not, and in the same time: the request
is checked and recorded at once as a job in the database (``core.jobs``: one insert, whatever
the account), and looking the account up, issuing the link and queueing the mail are that
job's work, just after the answer (done inline, a known account's request took several times
as long as an unknown one's: a timing oracle for who is registered). Being a job, a request
that was answered is not lost: a node that stops, or a database that fails while it runs,
leaves it pending, and it is done when it can be. Each identifier (address or username) may
ask ``REQUESTS_PER_HOUR`` times an hour (``core.quota``); more requests get the same answer
and do nothing, and an account gets at most ``RESETS_PER_HOUR`` reset links an hour however
it is named. Links are built from the configured public URL, never from the request. A reset
link carries 256 random bits, is stored only as a hash, works once for 30 minutes, and asking
again revokes the older one. The job's payload (the identifier) is emptied once it is done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Account, Accounts, DisabledReason, Status, check_new_password
from cases.identity import check_email, clean, username_key
from cases.tokens import AccountToken, Purpose, find_link, issue_link, spend
from core.errors import ErrorCode, FieldErrors, UserError
from core.ids import keyed_hash
from core.jobs import Job, JobRunner, schedule_job
from core.quota import Quota

log = logging.getLogger(__name__)

RESETS_PER_HOUR = 5  # reset links per account an hour; more requests do nothing (same answer)
REQUESTS_PER_HOUR = 5  # requests per identifier an hour; more do nothing (same answer)
RESET_JOB = "recovery.reset"
USERNAMES_JOB = "recovery.usernames"
JOB_REF = "recovery"


class Recovery:
    def __init__(self, accounts: Accounts, secret: bytes, jobs: JobRunner) -> None:
        self.accounts = accounts
        self._secret = secret
        self._jobs = jobs
        self.requests = Quota("recovery", REQUESTS_PER_HOUR, accounts.clock)
        jobs.register(RESET_JOB, self._send_reset)
        jobs.register(USERNAMES_JOB, self._send_usernames)

    async def _ask(self, kind: str, identity: str, payload: dict[str, Any]) -> None:
        """Record the request as a job due now (within its identifier's hourly quota), and
        wake the runner; the same statements whatever the account."""
        accounts = self.accounts
        key = keyed_hash(self._secret, kind, identity)
        now = accounts.clock.now()
        async with accounts.db.session() as session:
            queued = await self.requests.reserve(session, key)
            if queued:
                schedule_job(session, kind=kind, ref=JOB_REF, due_at=now, now=now, payload=payload)
            await session.commit()
        if queued:
            self._jobs.wake()
        else:
            log.info("%s ignored: over the hourly limit of its identifier", kind)

    async def drain(self) -> None:
        """Do the requests answered so far that are due (tests; nodes do it by themselves)."""
        await self._jobs.run_due(kinds=(RESET_JOB, USERNAMES_JOB))

    async def do_request_reset(self, identifier: object) -> None:
        """Mail a reset link to the account named by username or e-mail, if there is one
        (by a job, after the answer: see the module's docstring)."""
        text = clean(identifier, 300)
        if not text:
            raise FieldErrors({"identifier": [ErrorCode.REQUIRED]})
        if "@" in text:
            email = check_email(text)
            if isinstance(email, ErrorCode):
                raise FieldErrors({"identifier": [email]})
            await self._ask(RESET_JOB, f"email:{email.lower()}", {"email": email})
        else:
            await self._ask(RESET_JOB, f"username:{username_key(text)}", {"username": text})

    async def _send_reset(self, session: AsyncSession, job: Job) -> None:
        accounts = self.accounts
        now = accounts.clock.now()
        minutes = accounts.settings.reset_token_minutes
        email = job.payload.get("email")
        username = job.payload.get("username")
        if isinstance(email, str):
            query = select(Account).where(func.lower(Account.email) == email.lower())
        elif isinstance(username, str):
            query = select(Account).where(Account.username_key == username_key(username))
        else:
            return  # emptied already (done before) or not ours
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
        job.payload = {}

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
        """Mail the usernames registered with ``email``, if any (by a job, after the answer)."""
        address = check_email(clean(email, 300))
        if isinstance(address, ErrorCode):
            raise FieldErrors({"email": [address]})
        await self._ask(USERNAMES_JOB, f"email:{address.lower()}", {"email": address})

    async def _send_usernames(self, session: AsyncSession, job: Job) -> None:
        accounts = self.accounts
        address = job.payload.get("email")
        if not isinstance(address, str):
            return  # emptied already (done before) or not ours
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
        job.payload = {}
