"""Sign-in: password, throttling, the second step (e-mailed code or TOTP), sign-out.

The answer to a wrong password is the same whether the username exists or not, and costs the
same time (a dummy Argon2 verification). Only after the right password does the person learn
that the account waits for verification, approval, or was disabled.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import pyotp
from sqlalchemy import or_, select, update

from cases.accounts import Account, Accounts, DisabledReason, MfaMethod, Status
from cases.sessions import SessionData
from cases.throttle import Throttle
from cases.tokens import AccountToken, Purpose, code_hash, issue_code, revoke, spend
from core.errors import ErrorCode, UserError
from core.ids import same

RESEND_VERIFICATION_AFTER = timedelta(minutes=10)
TOTP_ISSUER = "Concilia"


@dataclass(frozen=True)
class SignedIn:
    token: str
    session: SessionData
    account: Account

    @property
    def mfa_pending(self) -> bool:
        return self.session.mfa_pending


def effective_method(account: Account) -> MfaMethod:
    """Staff always sign in in two steps; an e-mailed code when they chose nothing else."""
    method = MfaMethod(account.mfa_method)
    if account.is_staff and method == MfaMethod.NONE:
        return MfaMethod.EMAIL
    return method


class SignIn:
    def __init__(self, accounts: Accounts, throttle: Throttle, secret: bytes) -> None:
        self.accounts = accounts
        self.throttle = throttle
        self._secret = secret
        self._clock = accounts.clock

    async def do_sign_in(self, username: object, password: object, client: str) -> SignedIn:
        """Check the password and open a session (pending the second step when required)."""
        name = username.strip()[:60] if isinstance(username, str) else ""
        secret = password if isinstance(password, str) else ""
        keys = [self.throttle.key("user", name), self.throttle.key("ip", client)]
        await self.throttle.check(keys)
        account = await self.accounts.by_username(name) if name else None
        stored = account.password_hash if account is not None else None
        if not await self.accounts.hasher.verify(stored, secret) or account is None:
            await self.throttle.record_failure(keys)
            raise UserError(ErrorCode.LOGIN_FAILED)
        await self.throttle.clear(keys[0])
        await self._check_status(account)
        if stored is not None and self.accounts.hasher.needs_rehash(stored):
            await self._rehash(account.id, secret)
        method = effective_method(account)
        pending = method != MfaMethod.NONE
        if method == MfaMethod.EMAIL:
            await self._send_code(account)
        token, data = await self.accounts.sessions.create(account.id, mfa_pending=pending)
        if not pending:
            await self._record_login(account.id)
        return SignedIn(token, data, account)

    async def _check_status(self, account: Account) -> None:
        if account.status == Status.PENDING_VERIFICATION:
            await self._maybe_resend_verification(account)
            raise UserError(ErrorCode.EMAIL_NOT_VERIFIED)
        if account.status == Status.PENDING_APPROVAL:
            raise UserError(ErrorCode.ACCOUNT_PENDING_APPROVAL)
        if account.status == Status.DISABLED:
            if account.disabled_reason == DisabledReason.INACTIVITY:
                raise UserError(ErrorCode.ACCOUNT_DISABLED_INACTIVE)
            raise UserError(ErrorCode.ACCOUNT_DISABLED)
        if await self.accounts.do_disable_inactive(account.id):
            raise UserError(ErrorCode.ACCOUNT_DISABLED_INACTIVE)

    async def _maybe_resend_verification(self, account: Account) -> None:
        async with self.accounts.db.session() as session:
            latest = await session.scalar(
                select(AccountToken.created_at)
                .where(
                    AccountToken.account_id == account.id,
                    AccountToken.purpose == Purpose.VERIFY_EMAIL,
                )
                .order_by(AccountToken.created_at.desc())
                .limit(1)
            )
        if latest is None or self._clock.now() - latest > RESEND_VERIFICATION_AFTER:
            await self.accounts.do_resend_verification(account.id)

    async def _rehash(self, account_id: uuid.UUID, password: str) -> None:
        new_hash = await self.accounts.hasher.hash(password)
        async with self.accounts.db.session() as session:
            row = await session.get(Account, account_id)
            if row is not None:
                row.password_hash = new_hash
                await session.commit()

    async def _record_login(self, account_id: uuid.UUID) -> None:
        now = self._clock.now()
        async with self.accounts.db.session() as session:
            row = await session.get(Account, account_id)
            if row is not None:
                row.last_login_at = now
                row.last_activity_at = now
                await session.commit()

    async def _send_code(self, account: Account) -> None:
        settings = self.accounts.settings
        minutes = settings.login_code_minutes
        async with self.accounts.db.session() as session:
            code = await issue_code(
                session, self._secret, account.id, timedelta(minutes=minutes), self._clock.now()
            )
            self.accounts.notifier.queue_for(
                session, account, "login_code", code=code, minutes=minutes
            )
            await session.commit()
        self.accounts.notifier.wake()

    async def do_resend_code(self, data: SessionData) -> None:
        """Send a new e-mailed code for a session waiting for its second step."""
        account = await self.accounts.get(data.account_id)
        if account is None or not data.mfa_pending:
            raise UserError(ErrorCode.UNAUTHENTICATED)
        if effective_method(account) == MfaMethod.EMAIL:
            # Each resend counts, so a flood of mails is slowed down like wrong passwords are.
            sending = self.throttle.key("code-send", str(account.id))
            await self.throttle.check([sending])
            await self.throttle.record_failure([sending])
            await self._send_code(account)

    async def do_verify_code(self, token: str, data: SessionData, code: object) -> SignedIn:
        """Complete the second step; the session is replaced by a new one (new id)."""
        account = await self.accounts.get(data.account_id)
        if account is None or not data.mfa_pending:
            raise UserError(ErrorCode.UNAUTHENTICATED)
        text = "".join(code.split()) if isinstance(code, str) else ""
        key = self.throttle.key("code", str(account.id))
        await self.throttle.check([key])
        method = effective_method(account)
        if method == MfaMethod.TOTP:
            ok = await self._check_totp(account.id, text)
        else:
            ok = await self._check_email_code(account.id, text)
        if not ok:
            await self.throttle.record_failure([key])
            raise UserError(ErrorCode.CODE_INVALID)
        await self.throttle.clear(key)
        sessions = self.accounts.sessions
        await sessions.delete(token)
        new_token, new_data = await sessions.create(account.id, mfa_pending=False)
        await self._record_login(account.id)
        return SignedIn(new_token, new_data, account)

    async def _check_email_code(self, account_id: uuid.UUID, code: str) -> bool:
        now = self._clock.now()
        settings = self.accounts.settings
        async with self.accounts.db.session() as session:
            row = await session.scalar(
                select(AccountToken)
                .where(
                    AccountToken.account_id == account_id,
                    AccountToken.purpose == Purpose.LOGIN_CODE,
                    AccountToken.used_at.is_(None),
                    AccountToken.revoked_at.is_(None),
                )
                .order_by(AccountToken.created_at.desc())
                .limit(1)
            )
            if row is None or not row.live(now):
                raise UserError(ErrorCode.CODE_EXHAUSTED)
            if (
                len(code) == 6
                and code.isdigit()
                and same(row.payload or "", code_hash(self._secret, account_id, code))
            ):
                try:
                    await spend(session, row, now)
                except UserError:
                    return False  # another request used it first
                await session.commit()
                return True
            row.attempts += 1
            if row.attempts >= settings.login_code_attempts:
                await revoke(session, account_id, Purpose.LOGIN_CODE, now)
                await session.commit()
                raise UserError(ErrorCode.CODE_EXHAUSTED)
            await session.commit()
            return False

    async def _check_totp(self, account_id: uuid.UUID, code: str) -> bool:
        if len(code) != 6 or not code.isdigit():
            return False
        async with self.accounts.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None or not account.totp_secret:
                return False
            step = _totp_step(account.totp_secret, code, self._clock.now().timestamp())
            if step is None:
                return False
            # A code works once: refuse its time step or any earlier one (replay), atomically.
            result = await session.execute(
                update(Account)
                .where(
                    Account.id == account_id,
                    or_(Account.totp_last_step.is_(None), Account.totp_last_step < step),
                )
                .values(totp_last_step=step)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
            return getattr(result, "rowcount", 0) == 1

    async def do_sign_out(self, token: str) -> None:
        await self.accounts.sessions.delete(token)

    # -- choosing the second step ----------------------------------------------------------

    async def do_begin_totp(self, account_id: uuid.UUID) -> tuple[str, str]:
        """Start enrolling an authenticator app: returns the secret and its otpauth URI."""
        secret = pyotp.random_base32()
        async with self.accounts.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise UserError(ErrorCode.UNAUTHENTICATED)
            account.totp_pending_secret = secret
            await session.commit()
            uri = pyotp.TOTP(secret).provisioning_uri(
                name=account.username, issuer_name=TOTP_ISSUER
            )
        return secret, uri

    async def pending_totp(self, account_id: uuid.UUID) -> tuple[str, str] | None:
        account = await self.accounts.get(account_id)
        if account is None or not account.totp_pending_secret:
            return None
        secret = account.totp_pending_secret
        return secret, pyotp.TOTP(secret).provisioning_uri(
            name=account.username, issuer_name=TOTP_ISSUER
        )

    async def do_confirm_totp(self, account_id: uuid.UUID, code: object) -> None:
        """Finish enrolling: the first code from the app proves it holds the secret."""
        text = "".join(code.split()) if isinstance(code, str) else ""
        async with self.accounts.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None or not account.totp_pending_secret:
                raise UserError(ErrorCode.CODE_EXHAUSTED)
            step = (
                _totp_step(account.totp_pending_secret, text, self._clock.now().timestamp())
                if len(text) == 6 and text.isdigit()
                else None
            )
            if step is None:
                raise UserError(ErrorCode.CODE_INVALID)
            account.totp_secret = account.totp_pending_secret
            account.totp_pending_secret = None
            account.totp_last_step = step
            account.mfa_method = MfaMethod.TOTP
            await session.commit()

    async def do_set_method(self, account_id: uuid.UUID, method: object) -> None:
        """Choose e-mailed codes or none (staff cannot choose none)."""
        try:
            chosen = MfaMethod(method if isinstance(method, str) else "")
        except ValueError:
            raise UserError(ErrorCode.INVALID_CHOICE) from None
        if chosen == MfaMethod.TOTP:
            raise UserError(ErrorCode.INVALID_CHOICE, "TOTP is enabled by confirming a code")
        async with self.accounts.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise UserError(ErrorCode.UNAUTHENTICATED)
            if chosen == MfaMethod.NONE and account.is_staff:
                raise UserError(ErrorCode.MFA_REQUIRED_FOR_STAFF)
            account.mfa_method = chosen
            account.totp_secret = None
            account.totp_pending_secret = None
            account.totp_last_step = None
            await session.commit()


def _totp_step(secret: str, code: str, at: float, window: int = 1) -> int | None:
    """The time step (±``window``) at which ``code`` is right for ``secret``, if any."""
    totp = pyotp.TOTP(secret)
    step_now = int(at // totp.interval)
    for offset in range(-window, window + 1):
        step = step_now + offset
        if same(totp.at(step * totp.interval), code):
            return step
    return None
