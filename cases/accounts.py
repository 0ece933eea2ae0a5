"""Accounts of every role: registration, e-mail verification, profile, passwords, staff, admin.

Every account is a natural person. Customers, delegates and company representatives register
themselves; staff (conciliator, scheduler, help-desk operator, admin) are created by an admin.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import ForeignKey, Integer, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.companies import Company
from cases.identity import (
    check_email,
    check_mobile,
    check_name,
    check_tax_code,
    check_username,
    check_vat,
    clean,
    username_key,
)
from cases.notifications import Notifier
from cases.passwords import PasswordHasher, check_password
from cases.sessions import SessionStore
from cases.throttle import Throttle
from cases.tokens import Purpose, find_link, issue_link, revoke, spend
from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, FieldErrors, UserError
from core.i18n import LANGUAGES
from core.ids import new_id
from core.quota import Quota
from core.settings import Settings

_E = TypeVar("_E", bound=StrEnum)

HISTORY = 3  # a new password must differ from this many latest ones (the current included)
STAFF_LINK_HOURS = 72


class Role(StrEnum):
    CUSTOMER = "customer"
    DELEGATE = "delegate"
    COMPANY_REP = "company_rep"
    CONCILIATOR = "conciliator"
    SCHEDULER = "scheduler"
    HELPDESK = "helpdesk"
    ADMIN = "admin"


STAFF_ROLES = frozenset({Role.CONCILIATOR, Role.SCHEDULER, Role.HELPDESK, Role.ADMIN})
SELF_REGISTERED = (Role.CUSTOMER, Role.DELEGATE, Role.COMPANY_REP)


class DelegateKind(StrEnum):
    ASSOCIATION = "association"
    PROFESSIONAL = "professional"
    RELATIVE = "relative"
    OTHER = "other"


class Status(StrEnum):
    PENDING_VERIFICATION = "pending_verification"
    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    DISABLED = "disabled"


class DisabledReason(StrEnum):
    INACTIVITY = "inactivity"
    ADMIN = "admin"


class MfaMethod(StrEnum):
    NONE = "none"
    EMAIL = "email"
    TOTP = "totp"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(40))
    username_key: Mapped[str] = mapped_column(String(40), unique=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    first_name: Mapped[str] = mapped_column(String(80))
    last_name: Mapped[str] = mapped_column(String(80))
    tax_code: Mapped[str] = mapped_column(String(16))
    mobile: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(16), index=True)
    delegate_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    association_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    company_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("companies.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    legal_entity_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    legal_entity_vat: Mapped[str | None] = mapped_column(String(11), nullable=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    mfa_method: Mapped[str] = mapped_column(String(8), default=MfaMethod.NONE)
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    totp_pending_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    language: Mapped[str] = mapped_column(String(2), default="it")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When an admin activated a company representative (or created the account active).
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


class PasswordHistory(Base):
    __tablename__ = "password_history"

    # An increasing key orders the history even when two changes share a timestamp.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Person:
    """The identity fields every account has, already validated."""

    first_name: str
    last_name: str
    tax_code: str
    email: str
    mobile: str


@dataclass(frozen=True)
class Registration:
    person: Person
    username: str
    password: str
    role: Role
    delegate_kind: DelegateKind | None
    association_name: str | None
    company_id: uuid.UUID | None
    legal_entity_name: str | None
    legal_entity_vat: str | None
    language: str


async def flush_unique(session: AsyncSession, field: str, code: ErrorCode) -> None:
    """Flush; a unique-constraint violation becomes a field error (nothing is written)."""
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise FieldErrors({field: [code]}) from None


def _put(errors: dict[str, list[ErrorCode]], field: str, result: str | ErrorCode) -> str:
    if isinstance(result, ErrorCode):
        errors.setdefault(field, []).append(result)
        return ""
    return result


def check_person(form: Mapping[str, object], errors: dict[str, list[ErrorCode]]) -> Person:
    """Validate the identity fields of ``form`` into ``errors``; returns cleaned values."""
    return Person(
        first_name=_put(errors, "first_name", check_name(clean(form.get("first_name")))),
        last_name=_put(errors, "last_name", check_name(clean(form.get("last_name")))),
        tax_code=_put(errors, "tax_code", check_tax_code(clean(form.get("tax_code"), 32))),
        email=_put(errors, "email", check_email(clean(form.get("email"), 300))),
        mobile=_put(errors, "mobile", check_mobile(clean(form.get("mobile"), 40))),
    )


def check_new_password(
    form: Mapping[str, object],
    errors: dict[str, list[ErrorCode]],
    *,
    username: str,
    first_name: str,
    last_name: str,
) -> str:
    """Validate ``password`` and ``password_confirm`` of ``form`` against the policy."""
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    broken = check_password(password, username=username, first_name=first_name, last_name=last_name)
    if broken:
        errors["password"] = broken
    confirm = form.get("password_confirm")
    if password and not broken and confirm != password:
        errors["password_confirm"] = [ErrorCode.PASSWORD_MISMATCH]
    return password


def _choice(enum: type[_E], value: object) -> _E | None:
    try:
        return enum(clean(value, 32))
    except ValueError:
        return None


def check_registration(form: Mapping[str, object]) -> Registration:
    """Validate a self-registration form; raise ``FieldErrors`` naming every wrong field."""
    errors: dict[str, list[ErrorCode]] = {}
    person = check_person(form, errors)
    username = _put(errors, "username", check_username(clean(form.get("username"), 60)))
    password = check_new_password(
        form, errors, username=username, first_name=person.first_name, last_name=person.last_name
    )
    role = _choice(Role, form.get("kind"))
    if role not in SELF_REGISTERED:
        errors["kind"] = [ErrorCode.REQUIRED if not form.get("kind") else ErrorCode.INVALID_CHOICE]
    delegate_kind = association = company_id = entity_name = entity_vat = None
    if role == Role.DELEGATE:
        delegate_kind = _choice(DelegateKind, form.get("delegate_kind"))
        if delegate_kind is None:
            errors["delegate_kind"] = [ErrorCode.REQUIRED]
        elif delegate_kind == DelegateKind.ASSOCIATION:
            association = clean(form.get("association_name"), 200)
            if not association:
                errors["association_name"] = [ErrorCode.REQUIRED]
            elif len(association) > 200:
                errors["association_name"] = [ErrorCode.TOO_LONG]
    if role == Role.COMPANY_REP:
        try:
            company_id = uuid.UUID(clean(form.get("company_id"), 40))
        except ValueError:
            errors["company_id"] = [ErrorCode.REQUIRED]
    if role == Role.CUSTOMER and form.get("legal_entity") in ("on", "1", "true", True):
        entity_name = clean(form.get("legal_entity_name"), 200)
        if not entity_name:
            errors["legal_entity_name"] = [ErrorCode.REQUIRED]
        elif len(entity_name) > 200:
            errors["legal_entity_name"] = [ErrorCode.TOO_LONG]
        entity_vat = _put(
            errors, "legal_entity_vat", check_vat(clean(form.get("legal_entity_vat"), 20))
        )
    if form.get("privacy") not in ("on", "1", "true", True):
        errors["privacy"] = [ErrorCode.REQUIRED]
    language = clean(form.get("language"), 2) or "it"
    if language not in LANGUAGES:
        errors["language"] = [ErrorCode.INVALID_CHOICE]
    if errors:
        raise FieldErrors(errors)
    assert role is not None
    return Registration(
        person=person,
        username=username,
        password=password,
        role=role,
        delegate_kind=delegate_kind,
        association_name=association,
        company_id=company_id,
        legal_entity_name=entity_name,
        legal_entity_vat=entity_vat or None,
        language=language,
    )


class Accounts:
    """Account actions: each ``do_*`` validates, changes state, commits, then wakes the mailer."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        hasher: PasswordHasher,
        notifier: Notifier,
        sessions: SessionStore,
        throttle: Throttle,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.hasher = hasher
        self.notifier = notifier
        self.sessions = sessions
        self.throttle = throttle
        # Accounts one client address may register per hour (``core.quota``).
        self.registrations = Quota("register", settings.registrations_per_hour, clock)

    # -- reading -----------------------------------------------------------------------

    async def get(self, account_id: uuid.UUID) -> Account | None:
        async with self.db.session() as session:
            return await session.get(Account, account_id)

    async def by_username(self, username: str) -> Account | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(Account).where(Account.username_key == username_key(username))
            )

    async def list(
        self, *, role: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Account]:
        """Accounts by name, filtered; all of them unless ``limit`` is given."""
        async with self.db.session() as session:
            query = select(Account).order_by(Account.last_name, Account.first_name, Account.id)
            if limit is not None:
                query = query.limit(limit)
            if role:
                query = query.where(Account.role == role)
            if status:
                query = query.where(Account.status == status)
            return list(await session.scalars(query))

    async def count(self) -> int:
        async with self.db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(Account)) or 0)

    # -- registration and verification ---------------------------------------------------

    async def _username_free(self, session: AsyncSession, username: str) -> bool:
        taken = await session.scalar(
            select(func.count())
            .select_from(Account)
            .where(Account.username_key == username_key(username))
        )
        return not taken

    async def do_register(self, form: Mapping[str, object], client: str | None = None) -> Account:
        """Create a self-registered account awaiting e-mail verification, and mail the link;
        ``client``, the address registering, is held to the hourly limit: refused before the
        form is even checked once the hour's registrations are used up (a script pays
        nothing to try), and the registration itself takes its use in its own transaction
        (parallel requests cannot share the last one; a refused form uses none)."""
        client_key = None if client is None else self.throttle.key("register", client)
        if client_key is not None:
            async with self.db.session() as session:
                await self.registrations.check(session, client_key)
        reg = check_registration(form)
        password_hash = await self.hasher.hash(reg.password)
        now = self.clock.now()
        async with self.db.session() as session:
            errors: dict[str, list[ErrorCode]] = {}
            if not await self._username_free(session, reg.username):
                errors["username"] = [ErrorCode.USERNAME_TAKEN]
            if reg.company_id is not None:
                company = await session.get(Company, reg.company_id)
                if company is None or not company.active:
                    errors["company_id"] = [ErrorCode.INVALID_CHOICE]
            if errors:
                raise FieldErrors(errors)
            if client_key is not None:
                await self.registrations.take(session, client_key)
            account = Account(
                id=new_id(),
                username=reg.username,
                username_key=username_key(reg.username),
                email=reg.person.email,
                first_name=reg.person.first_name,
                last_name=reg.person.last_name,
                tax_code=reg.person.tax_code,
                mobile=reg.person.mobile,
                role=reg.role,
                delegate_kind=reg.delegate_kind,
                association_name=reg.association_name,
                company_id=reg.company_id,
                legal_entity_name=reg.legal_entity_name,
                legal_entity_vat=reg.legal_entity_vat,
                status=Status.PENDING_VERIFICATION,
                password_hash=password_hash,
                password_changed_at=now,
                mfa_method=MfaMethod.NONE,
                language=reg.language,
                created_at=now,
            )
            session.add(account)
            # The row must exist before rows that refer to it; the unique username is decided
            # here by the database, also when two people race for it.
            await flush_unique(session, "username", ErrorCode.USERNAME_TAKEN)
            session.add(
                PasswordHistory(account_id=account.id, password_hash=password_hash, created_at=now)
            )
            await self._queue_verification(session, account)
            await session.commit()
        self.notifier.wake()
        return account

    async def _queue_verification(self, session: AsyncSession, account: Account) -> None:
        hours = self.settings.verify_token_hours
        token = await issue_link(
            session, account.id, Purpose.VERIFY_EMAIL, timedelta(hours=hours), self.clock.now()
        )
        self.notifier.queue_for(
            session,
            account,
            "verify_email",
            hours=hours,
            link=f"{self.notifier.public_url}/verify/{token}",
        )

    async def do_resend_verification(self, account_id: uuid.UUID) -> None:
        """Send a fresh verification link (the old one stops working)."""
        async with self.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None or account.status != Status.PENDING_VERIFICATION:
                return
            await self._queue_verification(session, account)
            await session.commit()
        self.notifier.wake()

    async def peek_link(self, purpose: Purpose, token: str) -> Account | None:
        """The account a still-valid link belongs to, without using the link."""
        async with self.db.session() as session:
            try:
                row = await find_link(session, token, purpose, self.clock.now())
            except UserError:
                return None
            return await session.get(Account, row.account_id)

    async def do_verify_email(self, token: str) -> Account:
        """Use a verification link: the account becomes active (or awaits an admin)."""
        now = self.clock.now()
        async with self.db.session() as session:
            row = await find_link(session, token, Purpose.VERIFY_EMAIL, now)
            account = await session.get(Account, row.account_id)
            if account is None:
                raise UserError(ErrorCode.TOKEN_INVALID)
            await spend(session, row, now)
            await self.confirm_email(session, account, now)
            await session.commit()
        self.notifier.wake()
        return account

    async def confirm_email(self, session: AsyncSession, account: Account, now: datetime) -> None:
        """The person proved the mailbox (a verification or a reset link): move the account on.

        A company representative then waits for an admin, and the admins are told.
        """
        if account.email_verified_at is None:
            account.email_verified_at = now
        if account.status == Status.PENDING_VERIFICATION:
            if account.role == Role.COMPANY_REP:
                account.status = Status.PENDING_APPROVAL
                await self._queue_approval_request(session, account)
            else:
                account.status = Status.ACTIVE

    async def _queue_approval_request(self, session: AsyncSession, account: Account) -> None:
        company = await session.get(Company, account.company_id) if account.company_id else None
        admins = await session.scalars(
            select(Account).where(Account.role == Role.ADMIN, Account.status == Status.ACTIVE)
        )
        for admin in admins:
            self.notifier.queue(
                session,
                to=admin.email,
                lang=admin.language,
                template="approval_needed",
                first_name=admin.first_name,
                person=account.full_name,
                company=company.name if company else "-",
            )

    # -- passwords -------------------------------------------------------------------------

    async def check_not_recent(
        self, session: AsyncSession, account_id: uuid.UUID, password: str
    ) -> bool:
        """True when ``password`` is none of the account's last ``HISTORY`` passwords."""
        hashes = await session.scalars(
            select(PasswordHistory.password_hash)
            .where(PasswordHistory.account_id == account_id)
            .order_by(PasswordHistory.id.desc())
            .limit(HISTORY)
        )
        for stored in list(hashes):
            if await self.hasher.verify(stored, password):
                return False
        return True

    async def set_password(
        self, session: AsyncSession, account: Account, password: str, now: datetime
    ) -> None:
        """Store a new password (policy and history already checked) and tell the owner.

        Every open link and code of the account stops working: whoever held them held them
        under the old password.
        """
        account.password_hash = await self.hasher.hash(password)
        account.password_changed_at = now
        session.add(
            PasswordHistory(
                account_id=account.id, password_hash=account.password_hash, created_at=now
            )
        )
        for purpose in (Purpose.RESET_PASSWORD, Purpose.CHANGE_EMAIL, Purpose.LOGIN_CODE):
            await revoke(session, account.id, purpose, now)
        self.notifier.queue_for(session, account, "password_changed")

    async def _current_password_ok(self, account: Account, form: Mapping[str, object]) -> bool:
        """Check the account's current password, throttled like sign-in (stolen sessions)."""
        key = self.throttle.key("current-password", str(account.id))
        await self.throttle.check([key])
        current = form.get("current_password")
        if isinstance(current, str) and await self.hasher.verify(account.password_hash, current):
            return True
        await self.throttle.record_failure([key])
        return False

    async def do_change_password(
        self, account_id: uuid.UUID, form: Mapping[str, object], *, keep_session: str
    ) -> None:
        """Change the password after checking the current one; end the other sessions."""
        now = self.clock.now()
        async with self.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise UserError(ErrorCode.UNAUTHENTICATED)
            errors: dict[str, list[ErrorCode]] = {}
            if not await self._current_password_ok(account, form):
                errors["current_password"] = [ErrorCode.PASSWORD_WRONG]
            password = check_new_password(
                form,
                errors,
                username=account.username,
                first_name=account.first_name,
                last_name=account.last_name,
            )
            if "password" not in errors and not await self.check_not_recent(
                session, account.id, password
            ):
                errors["password"] = [ErrorCode.PASSWORD_REUSED]
            if errors:
                raise FieldErrors(errors)
            await self.set_password(session, account, password, now)
            await session.commit()
        await self.sessions.delete_for_account(account_id, keep=keep_session)
        self.notifier.wake()

    # -- profile ---------------------------------------------------------------------------

    async def do_update_profile(self, account_id: uuid.UUID, form: Mapping[str, object]) -> Account:
        """Change mobile, language and the role's own details; a new e-mail needs confirming."""
        errors: dict[str, list[ErrorCode]] = {}
        mobile = _put(errors, "mobile", check_mobile(clean(form.get("mobile"), 40)))
        email = _put(errors, "email", check_email(clean(form.get("email"), 300)))
        language = clean(form.get("language"), 2) or "it"
        if language not in LANGUAGES:
            errors["language"] = [ErrorCode.INVALID_CHOICE]
        now = self.clock.now()
        async with self.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise UserError(ErrorCode.UNAUTHENTICATED)
            association = account.association_name
            if account.delegate_kind == DelegateKind.ASSOCIATION:
                association = clean(form.get("association_name"), 200)
                if not association:
                    errors["association_name"] = [ErrorCode.REQUIRED]
                elif len(association) > 200:
                    errors["association_name"] = [ErrorCode.TOO_LONG]
            changing_email = bool(email) and email.casefold() != account.email.casefold()
            # Moving the account to another mailbox hands over its recovery: a stolen session
            # alone must not be enough.
            if changing_email and not await self._current_password_ok(account, form):
                errors["current_password"] = [ErrorCode.PASSWORD_WRONG]
            if errors:
                raise FieldErrors(errors)
            account.mobile = mobile
            account.language = language
            account.association_name = association
            if changing_email:
                self.notifier.queue_for(session, account, "email_change_requested")
                hours = self.settings.verify_token_hours
                token = await issue_link(
                    session,
                    account.id,
                    Purpose.CHANGE_EMAIL,
                    timedelta(hours=hours),
                    now,
                    payload=email,
                )
                self.notifier.queue(
                    session,
                    to=email,
                    lang=account.language,
                    template="change_email",
                    first_name=account.first_name,
                    username=account.username,
                    hours=hours,
                    link=f"{self.notifier.public_url}/account/email/{token}",
                )
            await session.commit()
        self.notifier.wake()
        return account

    async def do_confirm_email_change(self, token: str) -> Account:
        now = self.clock.now()
        async with self.db.session() as session:
            row = await find_link(session, token, Purpose.CHANGE_EMAIL, now)
            account = await session.get(Account, row.account_id)
            if account is None or not row.payload:
                raise UserError(ErrorCode.TOKEN_INVALID)
            await spend(session, row, now)
            account.email = row.payload
            account.email_verified_at = now
            await session.commit()
            return account

    # -- staff and administration ------------------------------------------------------------

    async def do_create_account(
        self,
        form: Mapping[str, object],
        *,
        password: str | None = None,
        allowed: frozenset[Role] = STAFF_ROLES,
    ) -> tuple[Account, str | None]:
        """Create an active account on someone's behalf: an admin creating staff, the demo.

        With ``password`` (the CLI) the account is ready at once; without it the person is
        e-mailed a link to choose a password. Staff sign in in two steps from the start.
        Returns the account and the link, if one was sent.
        """
        errors: dict[str, list[ErrorCode]] = {}
        person = check_person(form, errors)
        username = _put(errors, "username", check_username(clean(form.get("username"), 60)))
        role = _choice(Role, form.get("role"))
        if role not in allowed:
            errors["role"] = [ErrorCode.INVALID_CHOICE]
        delegate_kind = _choice(DelegateKind, form.get("delegate_kind"))
        association = clean(form.get("association_name"), 200) or None
        if role == Role.DELEGATE and delegate_kind is None:
            errors["delegate_kind"] = [ErrorCode.REQUIRED]
        if role == Role.DELEGATE and delegate_kind == DelegateKind.ASSOCIATION and not association:
            errors["association_name"] = [ErrorCode.REQUIRED]
        if association is not None and len(association) > 200:
            errors["association_name"] = [ErrorCode.TOO_LONG]
        company_id: uuid.UUID | None = None
        if role == Role.COMPANY_REP:
            try:
                company_id = uuid.UUID(clean(form.get("company_id"), 40))
            except ValueError:
                errors["company_id"] = [ErrorCode.REQUIRED]
        if password is not None:
            broken = check_password(
                password,
                username=username,
                first_name=person.first_name,
                last_name=person.last_name,
            )
            if broken:
                errors["password"] = broken
        if errors:
            raise FieldErrors(errors)
        assert role is not None
        password_hash = await self.hasher.hash(password) if password is not None else None
        now = self.clock.now()
        link: str | None = None
        async with self.db.session() as session:
            if not await self._username_free(session, username):
                raise FieldErrors({"username": [ErrorCode.USERNAME_TAKEN]})
            if company_id is not None and await session.get(Company, company_id) is None:
                raise FieldErrors({"company_id": [ErrorCode.INVALID_CHOICE]})
            account = Account(
                id=new_id(),
                username=username,
                username_key=username_key(username),
                email=person.email,
                email_verified_at=now if password is not None else None,
                first_name=person.first_name,
                last_name=person.last_name,
                tax_code=person.tax_code,
                mobile=person.mobile,
                role=role,
                delegate_kind=delegate_kind if role == Role.DELEGATE else None,
                association_name=association if role == Role.DELEGATE else None,
                company_id=company_id,
                status=Status.ACTIVE,
                password_hash=password_hash,
                password_changed_at=now if password_hash else None,
                mfa_method=MfaMethod.EMAIL if role in STAFF_ROLES else MfaMethod.NONE,
                language="it",
                created_at=now,
                last_activity_at=now,
                approved_at=now,
            )
            session.add(account)
            await flush_unique(session, "username", ErrorCode.USERNAME_TAKEN)
            if password_hash is not None:
                session.add(
                    PasswordHistory(
                        account_id=account.id, password_hash=password_hash, created_at=now
                    )
                )
            else:
                token = await issue_link(
                    session,
                    account.id,
                    Purpose.RESET_PASSWORD,
                    timedelta(hours=STAFF_LINK_HOURS),
                    now,
                )
                link = f"{self.notifier.public_url}/reset/{token}"
                self.notifier.queue_for(
                    session,
                    account,
                    "staff_welcome",
                    role=str(role),
                    hours=STAFF_LINK_HOURS,
                    link=link,
                )
            await session.commit()
        self.notifier.wake()
        return account, link

    async def do_activate(self, account_id: uuid.UUID) -> Account:
        """An admin activates a company representative whose e-mail is verified."""
        async with self.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise UserError(ErrorCode.NOT_FOUND)
            if account.status != Status.PENDING_APPROVAL:
                raise UserError(ErrorCode.CONFLICT, "account is not awaiting approval")
            company = await session.get(Company, account.company_id) if account.company_id else None
            account.status = Status.ACTIVE
            account.approved_at = account.last_activity_at = self.clock.now()
            self.notifier.queue_for(
                session, account, "account_activated", company=company.name if company else "-"
            )
            await session.commit()
        self.notifier.wake()
        return account

    async def do_set_disabled(
        self, account_id: uuid.UUID, disabled: bool, *, actor_id: uuid.UUID | None = None
    ) -> Account:
        """Disable (ending its sessions at once) or re-enable an account."""
        if disabled and actor_id == account_id:
            raise UserError(ErrorCode.FORBIDDEN, "an admin cannot disable their own account")
        async with self.db.session() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise UserError(ErrorCode.NOT_FOUND)
            if disabled:
                account.status = Status.DISABLED
                account.disabled_reason = DisabledReason.ADMIN
            elif account.status == Status.DISABLED:
                # Back to where it was: enabling skips neither verification nor approval.
                account.status = self.status_when_enabled(account)
                account.disabled_reason = None
                account.last_activity_at = self.clock.now()
            await session.commit()
        if disabled:
            await self.sessions.delete_for_account(account_id)
        return account

    @staticmethod
    def status_when_enabled(account: Account) -> Status:
        if account.email_verified_at is None:
            return Status.PENDING_VERIFICATION
        if account.role == Role.COMPANY_REP and account.approved_at is None:
            return Status.PENDING_APPROVAL
        return Status.ACTIVE

    async def do_disable_inactive(self, account_id: uuid.UUID | None = None) -> int:
        """Disable the active accounts (or the one given) unused for the configured time.

        Returns how many were disabled; their sessions end.
        """
        cutoff = self.clock.now() - self.settings.inactivity
        query = select(Account).where(
            Account.status == Status.ACTIVE,
            func.coalesce(Account.last_activity_at, Account.created_at) < cutoff,
        )
        if account_id is not None:
            query = query.where(Account.id == account_id)
        async with self.db.session() as session:
            stale = list(await session.scalars(query))
            for account in stale:
                account.status = Status.DISABLED
                account.disabled_reason = DisabledReason.INACTIVITY
            await session.commit()
        for account in stale:
            await self.sessions.delete_for_account(account.id)
        return len(stale)
