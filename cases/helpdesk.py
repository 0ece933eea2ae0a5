"""The help desk ("Informazioni, Segnalazioni, Supporto"): tickets, their threads, attachments.

Anyone may write, signed in or not; a ticket gets its code (``HD-2026-000001``) at once from a
per-year counter updated atomically. Signed-in senders follow their tickets online and write
follow-ups; anonymous senders give a name, an e-mail address and their language and get the
answers by e-mail. Help-desk operators (and admins) see the queue, answer and close. A ticket
exists only for its sender and the operators: for anyone else it is "not found", so a guessed
id tells nothing.

Attachments arrive as streams. Each file is checked (count, extension) before its bytes, stored
at once with what is left of the 15 MB budget of its message as the limit, then checked by
content; the rows are written only when the whole message is accepted. A refusal at any point
deletes what was stored, so neither rows nor objects are left behind; objects of a crash between
the two are swept with the other owners of the storage (``cases.storage.sweep_orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account, Role, Status
from cases.identity import NAME_MAX, check_email, check_name, clean
from cases.notifications import Notifier
from cases.storage import FileTooLarge, Storage, Stored
from cases.uploads import (
    HELPDESK_EXTENSIONS,
    HELPDESK_MAX_FILES,
    HELPDESK_MAX_TOTAL,
    check_content,
    check_extension,
    extension,
    sanitize_name,
)
from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, FieldErrors, UserError
from core.i18n import LANGUAGES, N_
from core.ids import keyed_hash, new_id
from core.quota import Quota

CODE_PREFIX = "HD"
SUBJECT_MAX = 200
BODY_MAX = 5000
OPERATORS = frozenset({Role.HELPDESK, Role.ADMIN})
QUEUE_LIMIT = 200


class Category(StrEnum):
    INFORMATION = "information"
    REPORT = "report"
    SUPPORT = "support"


class TicketStatus(StrEnum):
    OPEN = "open"  # waiting for the help desk
    ANSWERED = "answered"  # the help desk answered last
    CLOSED = "closed"


CATEGORY_LABELS = {
    Category.INFORMATION: N_("Information"),
    Category.REPORT: N_("Report"),
    Category.SUPPORT: N_("Support"),
}
STATUS_LABELS = {
    TicketStatus.OPEN: N_("Open"),
    TicketStatus.ANSWERED: N_("Answered"),
    TicketStatus.CLOSED: N_("Closed"),
}


class TicketCounter(Base):
    """The last number given to a ticket in each year (codes are HD-YYYY-NNNNNN)."""

    __tablename__ = "helpdesk_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer)


class Ticket(Base):
    __tablename__ = "helpdesk_tickets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    category: Mapped[str] = mapped_column(String(16), index=True)
    subject: Mapped[str] = mapped_column(String(SUBJECT_MAX))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # The sender: an account, or (signed out) a name, an address and a language for the answers.
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id"), nullable=True, index=True
    )
    contact_name: Mapped[str | None] = mapped_column(String(NAME_MAX), nullable=True)
    contact_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    contact_language: Mapped[str | None] = mapped_column(String(5), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def anonymous(self) -> bool:
        return self.account_id is None


class TicketMessage(Base):
    """One message of a ticket's thread, plain text."""

    __tablename__ = "helpdesk_messages"

    # An increasing key keeps the thread in order even within one clock tick.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("helpdesk_tickets.id"), index=True)
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    from_staff: Mapped[bool] = mapped_column(Boolean)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TicketAttachment(Base):
    """A file of a message; the name is only metadata, the object lives under its key."""

    __tablename__ = "helpdesk_attachments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("helpdesk_tickets.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("helpdesk_messages.id"), index=True)
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(160))
    extension: Mapped[str] = mapped_column(String(10))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FilesTooLarge(UserError):
    """The files of one message passed their total limit (found while they streamed)."""

    def __init__(self, limit: int = HELPDESK_MAX_TOTAL) -> None:
        super().__init__(ErrorCode.FILES_TOO_LARGE, limit=limit)
        self.limit = limit


async def next_ticket_code(session: AsyncSession, year: int) -> str:
    """The next code of ``year``, unique across nodes: the counter row is updated atomically."""
    for _attempt in range(3):
        number = await session.scalar(
            update(TicketCounter)
            .where(TicketCounter.year == year)
            .values(last=TicketCounter.last + 1)
            .returning(TicketCounter.last)
        )
        if number is None:
            try:
                async with session.begin_nested():
                    await session.execute(insert(TicketCounter).values(year=year, last=1))
            except IntegrityError:
                continue  # another node opened the year first: take a number from its row
            number = 1
        return f"{CODE_PREFIX}-{year}-{number:06d}"
    raise RuntimeError("could not allocate a help-desk code")


# -- checking what people typed -------------------------------------------------------------


def clean_text(value: object, max_len: int) -> str:
    """A multi-line text as typed: normalized, line breaks kept, other control characters
    dropped, at most ``max_len + 1`` characters (so that "too long" can still be told)."""
    if not isinstance(value, str):
        return ""
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n")
    kept = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    return kept.strip()[: max_len + 1]


def check_body(value: object, field: str = "message") -> str:
    """The text of a message; ``FieldErrors`` naming ``field`` when empty or too long."""
    text = clean_text(value, BODY_MAX)
    if not text:
        raise FieldErrors({field: [ErrorCode.REQUIRED]})
    if len(text) > BODY_MAX:
        raise FieldErrors({field: [ErrorCode.TOO_LONG]})
    return text


@dataclass(frozen=True)
class NewTicket:
    """A checked ticket form; ``name``, ``email`` and ``language`` only for anonymous senders."""

    category: Category
    subject: str
    body: str
    name: str | None = None
    email: str | None = None
    language: str | None = None


def check_ticket(form: Mapping[str, object], *, signed_in: bool, language: str) -> NewTicket:
    """Validate a new ticket's fields, naming every wrong one. ``language`` is the one the
    sender reads (the page's) when the form does not choose one."""
    errors: dict[str, list[ErrorCode]] = {}
    raw_category = form.get("category")
    category = Category.INFORMATION
    try:
        category = Category(raw_category if isinstance(raw_category, str) else "")
    except ValueError:
        errors["category"] = [ErrorCode.INVALID_CHOICE if raw_category else ErrorCode.REQUIRED]
    subject = clean(form.get("subject"), SUBJECT_MAX)
    if not subject:
        errors["subject"] = [ErrorCode.REQUIRED]
    elif len(subject) > SUBJECT_MAX:
        errors["subject"] = [ErrorCode.TOO_LONG]
    body = ""
    try:
        body = check_body(form.get("message"))
    except FieldErrors as exc:
        errors.update(exc.fields)
    if signed_in:
        if errors:
            raise FieldErrors(errors)
        return NewTicket(category, subject, body)
    name = check_name(clean(form.get("name"), NAME_MAX))
    if isinstance(name, ErrorCode):
        errors["name"] = [name]
    email = check_email(clean(form.get("email"), 300))
    if isinstance(email, ErrorCode):
        errors["email"] = [email]
    chosen = form.get("language") or language
    if chosen not in LANGUAGES:
        errors["language"] = [ErrorCode.INVALID_CHOICE]
    if errors:
        raise FieldErrors(errors)
    assert isinstance(name, str) and isinstance(email, str) and isinstance(chosen, str)
    return NewTicket(category, subject, body, name, email, chosen)


def is_operator(account: Account | None) -> bool:
    return account is not None and account.role in OPERATORS and account.status == Status.ACTIVE


# -- attachments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedFile:
    name: str
    extension: str
    stored: Stored


class Attachments:
    """The files of one message as they arrive: each checked and stored at once, the lot
    held to the count and total limits. Until the message is written they belong to this
    object, and ``discard`` deletes them all."""

    def __init__(
        self,
        storage: Storage,
        *,
        max_files: int = HELPDESK_MAX_FILES,
        max_total: int = HELPDESK_MAX_TOTAL,
    ) -> None:
        self.storage = storage
        self.max_files = max_files
        self.max_total = max_total
        self.files: list[StagedFile] = []
        self.total = 0

    async def add(self, filename: str, chunks: AsyncIterator[bytes]) -> StagedFile:
        """Check and store one file; ``FieldErrors`` on ``files`` or ``FilesTooLarge``."""
        if len(self.files) >= self.max_files:
            raise FieldErrors({"files": [ErrorCode.TOO_MANY_FILES]})
        name = sanitize_name(filename)
        verdict = check_extension(name, HELPDESK_EXTENSIONS)
        if not verdict.ok:
            raise FieldErrors({"files": [verdict.code or ErrorCode.FILE_TYPE_NOT_ALLOWED]})
        ext = extension(name)
        try:
            stored = await self.storage.put(chunks, max_bytes=self.max_total - self.total)
        except FileTooLarge:
            raise FilesTooLarge(self.max_total) from None
        try:
            content = await asyncio.to_thread(check_content, self.storage.path(stored.key), ext)
            if not content.ok:
                raise FieldErrors({"files": [content.code or ErrorCode.FILE_CONTENT_MISMATCH]})
        except BaseException:
            await self.storage.delete(stored.key)
            raise
        staged = StagedFile(name, ext, stored)
        self.files.append(staged)
        self.total += stored.size
        return staged

    async def discard(self) -> None:
        """Delete every stored file (safe to call twice)."""
        files, self.files, self.total = self.files, [], 0
        for staged in files:
            await self.storage.delete(staged.stored.key)

    def hand_over(self) -> list[StagedFile]:
        """The files, now owned by committed rows: a later ``discard`` must not touch them."""
        files, self.files, self.total = self.files, [], 0
        return files


@contextlib.asynccontextmanager
async def settled(files: Attachments | None) -> AsyncIterator[None]:
    """Around the transaction that writes the files' rows: on any failure the stored files are
    deleted; once it committed, they belong to their rows."""
    try:
        yield
    except BaseException:
        if files is not None:
            await files.discard()
        raise
    if files is not None:
        files.hand_over()


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A message as the viewer sees it: ``author`` is ``None`` for the help desk's messages
    shown to a sender (operators' names are for operators)."""

    message: TicketMessage
    author: str | None
    attachments: list[TicketAttachment]


@dataclass(frozen=True)
class Thread:
    ticket: Ticket
    sender_name: str
    sender_email: str
    entries: list[Entry]


@dataclass(frozen=True)
class QueueItem:
    ticket: Ticket
    sender_name: str
    sender_email: str


async def _ticket_for(
    session: AsyncSession, account: Account | None, ticket_id: uuid.UUID, *, lock: bool = False
) -> Ticket:
    """The ticket for its sender or an operator; ``NOT_FOUND`` for anyone else, never 403."""
    query = select(Ticket).where(Ticket.id == ticket_id)
    ticket = await session.scalar(query.with_for_update() if lock else query)
    if ticket is None or account is None:
        raise UserError(ErrorCode.NOT_FOUND)
    if ticket.account_id != account.id and not is_operator(account):
        raise UserError(ErrorCode.NOT_FOUND)
    return ticket


def _sender(ticket: Ticket, account: Account | None) -> tuple[str, str]:
    if account is not None:
        return account.full_name, account.email
    return ticket.contact_name or "", ticket.contact_email or ""


class HelpDesk:
    """Tickets: creating, following up, answering, closing, and reading them."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        storage: Storage,
        notifier: Notifier,
        secret: bytes,
        *,
        anonymous_per_hour: int = 5,
    ) -> None:
        self.db = db
        self.clock = clock
        self.storage = storage
        self.notifier = notifier
        self._secret = secret
        # Tickets one anonymous client address may open per hour (``core.quota``).
        self.anonymous = Quota("helpdesk", anonymous_per_hour, clock)

    @contextlib.asynccontextmanager
    async def attachments(self) -> AsyncIterator[Attachments]:
        """Files for one message; on any error inside the block they are all deleted."""
        batch = Attachments(self.storage)
        try:
            yield batch
        except BaseException:
            await batch.discard()
            raise

    # -- the hourly limit of anonymous senders ----------------------------------------------

    def client_key(self, address: str) -> str:
        """What is kept of a client address: a keyed hash, not the address."""
        return keyed_hash(self._secret, "helpdesk", address)

    async def check_rate(self, client_key: str) -> None:
        """``RATE_LIMITED`` once an address opened its tickets of this hour (read only, to
        refuse before the body is read: the ticket itself takes its use, ``do_create``)."""
        async with self.db.session() as session:
            await self.anonymous.check(session, client_key)

    # -- actions ----------------------------------------------------------------------------

    def _attach(
        self,
        session: AsyncSession,
        ticket: Ticket,
        message: TicketMessage,
        files: Attachments | None,
        now: datetime,
    ) -> None:
        for staged in files.files if files is not None else []:
            session.add(
                TicketAttachment(
                    id=new_id(),
                    ticket_id=ticket.id,
                    message_id=message.id,
                    storage_key=staged.stored.key,
                    name=staged.name,
                    extension=staged.extension,
                    size=staged.stored.size,
                    sha256=staged.stored.sha256,
                    added_at=now,
                )
            )

    async def _add_message(
        self,
        session: AsyncSession,
        ticket: Ticket,
        author: Account | None,
        body: str,
        files: Attachments | None,
        now: datetime,
        *,
        from_staff: bool,
    ) -> TicketMessage:
        message = TicketMessage(
            ticket_id=ticket.id,
            author_id=author.id if author is not None else None,
            from_staff=from_staff,
            body=body,
            created_at=now,
        )
        session.add(message)
        await session.flush()  # the message's id, for its attachments
        self._attach(session, ticket, message, files, now)
        return message

    async def do_create(
        self,
        account: Account | None,
        new: NewTicket,
        *,
        files: Attachments | None = None,
        client_key: str | None = None,
    ) -> Ticket:
        """Open a ticket with its first message (and files); operators are e-mailed. An
        anonymous sender (``account`` None) is held to the hourly limit of ``client_key``,
        whose use the ticket takes in its own transaction (parallel requests cannot share
        the last one). On any failure the files are deleted."""
        async with settled(files):
            if account is None and (new.email is None or new.name is None):
                raise FieldErrors({"email": [ErrorCode.REQUIRED]})
            now = self.clock.now()
            async with self.db.session() as session:
                if account is None and client_key is not None:
                    await self.anonymous.take(session, client_key)
                ticket = Ticket(
                    id=new_id(),
                    code=await next_ticket_code(session, now.year),
                    category=new.category,
                    subject=new.subject,
                    status=TicketStatus.OPEN,
                    account_id=account.id if account is not None else None,
                    contact_name=new.name if account is None else None,
                    contact_email=new.email if account is None else None,
                    contact_language=new.language if account is None else None,
                    created_at=now,
                    updated_at=now,
                )
                session.add(ticket)
                await session.flush()
                await self._add_message(
                    session, ticket, account, new.body, files, now, from_staff=False
                )
                await self._tell_operators(session, ticket, account)
                await session.commit()
        self.notifier.wake()
        return ticket

    async def _tell_operators(
        self, session: AsyncSession, ticket: Ticket, account: Account | None
    ) -> None:
        operators = await session.scalars(
            select(Account)
            .where(Account.role == Role.HELPDESK, Account.status == Status.ACTIVE)
            .order_by(Account.username)
        )
        sender, _email = _sender(ticket, account)
        for operator in operators:
            self.notifier.queue_for(
                session,
                operator,
                "helpdesk_new_ticket",
                code=ticket.code,
                category=CATEGORY_LABELS[Category(ticket.category)],
                subject=ticket.subject,
                sender=sender,
                link=f"{self.notifier.public_url}/helpdesk/tickets/{ticket.id}",
            )

    async def _writable(
        self, session: AsyncSession, account: Account, ticket_id: uuid.UUID, *, staff: bool
    ) -> Ticket:
        """The ticket if ``account`` may add to it now: the sender (``staff`` False) or an
        operator; ``NOT_FOUND`` for strangers, ``CONFLICT`` once closed."""
        ticket = await _ticket_for(session, account, ticket_id, lock=True)
        if staff and not is_operator(account):
            raise UserError(ErrorCode.FORBIDDEN)  # the sender cannot answer
        if not staff and ticket.account_id != account.id:
            raise UserError(ErrorCode.FORBIDDEN)  # an operator who is not the sender
        if ticket.status == TicketStatus.CLOSED:
            raise UserError(ErrorCode.CONFLICT, "the ticket is closed")
        return ticket

    async def check_writable(self, account: Account, ticket_id: uuid.UUID, *, staff: bool) -> None:
        """Refuse before any file is read what ``do_follow_up``/``do_answer`` would refuse."""
        async with self.db.session() as session:
            await self._writable(session, account, ticket_id, staff=staff)

    async def do_follow_up(
        self,
        account: Account,
        ticket_id: uuid.UUID,
        body: str,
        *,
        files: Attachments | None = None,
    ) -> TicketMessage:
        """The sender adds to an open or answered ticket, which waits for the desk again."""
        async with settled(files):
            text = check_body(body)
            now = self.clock.now()
            async with self.db.session() as session:
                ticket = await self._writable(session, account, ticket_id, staff=False)
                message = await self._add_message(
                    session, ticket, account, text, files, now, from_staff=False
                )
                ticket.status = TicketStatus.OPEN
                ticket.updated_at = now
                await session.commit()
        return message

    async def do_answer(
        self,
        operator: Account,
        ticket_id: uuid.UUID,
        body: str,
        *,
        files: Attachments | None = None,
    ) -> TicketMessage:
        """An operator answers; the sender is e-mailed the answer in the sender's language
        (with a link to the ticket when the sender has an account; never the files)."""
        async with settled(files):
            text = check_body(body)
            now = self.clock.now()
            async with self.db.session() as session:
                ticket = await self._writable(session, operator, ticket_id, staff=True)
                message = await self._add_message(
                    session, ticket, operator, text, files, now, from_staff=True
                )
                ticket.status = TicketStatus.ANSWERED
                ticket.updated_at = now
                await self._tell_sender(session, ticket, text)
                await session.commit()
        self.notifier.wake()
        return message

    async def _tell_sender(self, session: AsyncSession, ticket: Ticket, answer: str) -> None:
        context = {"code": ticket.code, "subject": ticket.subject, "answer": answer}
        if ticket.account_id is not None:
            sender = await session.get(Account, ticket.account_id)
            if sender is None or sender.status != Status.ACTIVE:
                return  # a disabled account is not written to
            self.notifier.queue_for(
                session,
                sender,
                "helpdesk_answer",
                link=f"{self.notifier.public_url}/helpdesk/tickets/{ticket.id}",
                **context,
            )
        elif ticket.contact_email:
            self.notifier.queue(
                session,
                to=ticket.contact_email,
                lang=ticket.contact_language or "it",
                template="helpdesk_answer",
                first_name=ticket.contact_name or "",
                link="",
                **context,
            )

    async def do_close(self, operator: Account, ticket_id: uuid.UUID) -> Ticket:
        """An operator closes the ticket (closing a closed ticket changes nothing)."""
        async with self.db.session() as session:
            ticket = await _ticket_for(session, operator, ticket_id, lock=True)
            if not is_operator(operator):
                raise UserError(ErrorCode.FORBIDDEN)
            if ticket.status != TicketStatus.CLOSED:
                ticket.status = TicketStatus.CLOSED
                ticket.updated_at = self.clock.now()
            await session.commit()
        return ticket

    # -- reading ----------------------------------------------------------------------------

    async def list_own(self, account: Account) -> list[Ticket]:
        """The tickets ``account`` sent, latest activity first."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Ticket)
                .where(Ticket.account_id == account.id)
                .order_by(Ticket.updated_at.desc(), Ticket.code.desc())
            )
            return list(rows)

    async def list_queue(
        self,
        operator: Account,
        *,
        status: str | None = None,
        category: str | None = None,
        limit: int = QUEUE_LIMIT,
    ) -> list[QueueItem]:
        """The operators' queue, latest activity first, optionally filtered."""
        if not is_operator(operator):
            raise UserError(ErrorCode.FORBIDDEN)
        if status is not None and status not in set(TicketStatus):
            raise UserError(ErrorCode.INVALID_CHOICE)
        if category is not None and category not in set(Category):
            raise UserError(ErrorCode.INVALID_CHOICE)
        query = (
            select(Ticket, Account)
            .outerjoin(Account, Account.id == Ticket.account_id)
            .order_by(Ticket.updated_at.desc(), Ticket.code.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(Ticket.status == status)
        if category is not None:
            query = query.where(Ticket.category == category)
        async with self.db.session() as session:
            rows = [(row[0], row[1]) for row in await session.execute(query)]
        return [QueueItem(ticket, *_sender(ticket, sender)) for ticket, sender in rows]

    async def get_thread(self, account: Account | None, ticket_id: uuid.UUID) -> Thread:
        """A ticket with its messages and files, for its sender or an operator."""
        async with self.db.session() as session:
            ticket = await _ticket_for(session, account, ticket_id)
            messages = list(
                await session.scalars(
                    select(TicketMessage)
                    .where(TicketMessage.ticket_id == ticket.id)
                    .order_by(TicketMessage.id)
                )
            )
            files = list(
                await session.scalars(
                    select(TicketAttachment)
                    .where(TicketAttachment.ticket_id == ticket.id)
                    .order_by(TicketAttachment.added_at, TicketAttachment.name)
                )
            )
            ids = {m.author_id for m in messages if m.author_id is not None}
            if ticket.account_id is not None:
                ids.add(ticket.account_id)
            people = {
                a.id: a for a in await session.scalars(select(Account).where(Account.id.in_(ids)))
            }
        sender_name, sender_email = _sender(
            ticket, people.get(ticket.account_id) if ticket.account_id else None
        )
        operator = is_operator(account)
        entries = []
        for message in messages:
            author: str | None
            if message.from_staff and not operator:
                author = None
            elif message.author_id is not None and message.author_id in people:
                author = people[message.author_id].full_name
            else:
                author = sender_name
            entries.append(Entry(message, author, [f for f in files if f.message_id == message.id]))
        return Thread(ticket, sender_name, sender_email, entries)

    async def get_attachment(
        self, account: Account | None, attachment_id: uuid.UUID
    ) -> TicketAttachment:
        """One file, for whoever may see its ticket; ``NOT_FOUND`` otherwise."""
        async with self.db.session() as session:
            attachment = await session.get(TicketAttachment, attachment_id)
            if attachment is None:
                raise UserError(ErrorCode.NOT_FOUND)
            await _ticket_for(session, account, attachment.ticket_id)
        return attachment

    async def storage_keys(self) -> set[str]:
        """The stored objects attachments point at (for the orphan sweep)."""
        async with self.db.session() as session:
            return set(await session.scalars(select(TicketAttachment.storage_key)))
