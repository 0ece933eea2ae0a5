"""Documents of a case file: who added what, when, of which category, and who may see it.

Adding a document streams it to storage first, checks its content, and only then writes the
row, in the same transaction as the timeline line: a row never points at a missing file, and a
refused or failed upload leaves neither. Objects no row points at (a crash between the two)
are removed by ``sweep_orphans``, which must hear of every other owner of the storage.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account
from cases.alerts import Alerts, Audience
from cases.casefile import Case, CaseEvent, case_for, record
from cases.identity import clean
from cases.lifecycle import Actor, CaseStatus
from cases.storage import KeyOwner, Storage, sweep_orphans
from cases.uploads import (
    CONCILIATION_EXTENSIONS,
    CONCILIATION_MAX_FILE,
    check_content,
    check_extension,
    extension,
    sanitize_name,
)
from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, FieldErrors, UserError
from core.ids import new_id

DESCRIPTION_MAX = 300
UPLOAD_KEY_MAX = 64
UPLOAD_KEY = re.compile(rf"[A-Za-z0-9_-]{{1,{UPLOAD_KEY_MAX}}}")


class Category(StrEnum):
    COMPLAINT = "complaint"
    COMPANY_ANSWER = "company_answer"
    IDENTITY = "identity"
    DELEGATION = "delegation"
    CHAMBER_CERTIFICATE = "chamber_certificate"  # visura camerale
    BILL = "bill"
    CONTRACT = "contract"
    CORRESPONDENCE = "correspondence"
    COMPANY_DOCUMENT = "company_document"
    MINUTES = "minutes"  # the meeting's minutes (verbale), filed by the service
    OTHER = "other"


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("added_by_id", "upload_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"), index=True)
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(160))
    extension: Mapped[str] = mapped_column(String(10))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(DESCRIPTION_MAX))
    # False: for the conciliator (and staff) only, never shown to the other party.
    visible_to_other_party: Mapped[bool] = mapped_column(Boolean)
    added_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    added_as: Mapped[str] = mapped_column(String(16))  # the actor: applicant, company, desk…
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The uploader's key for this upload (``Documents.add_once``): a retry adds nothing.
    upload_key: Mapped[str | None] = mapped_column(String(UPLOAD_KEY_MAX), default=None)


PARTIES = (Actor.APPLICANT, Actor.COMPANY)


def may_see(document: Document, actor: Actor) -> bool:
    """Staff see everything; a party sees its own documents and the other's shared ones."""
    if actor not in PARTIES:
        return True
    return document.added_as == actor or document.visible_to_other_party


def check_document_fields(
    category: object, description: object, visible: object
) -> tuple[Category, str, bool]:
    errors: dict[str, list[ErrorCode]] = {}
    try:
        chosen = Category(category if isinstance(category, str) else "")
        if chosen == Category.MINUTES:
            raise ValueError("the minutes are filed by the service only")
    except ValueError:
        errors["category"] = [ErrorCode.REQUIRED if not category else ErrorCode.INVALID_CHOICE]
        chosen = Category.OTHER
    text = clean(description, DESCRIPTION_MAX)
    if not text:
        errors["description"] = [ErrorCode.REQUIRED]
    elif len(text) > DESCRIPTION_MAX:
        errors["description"] = [ErrorCode.TOO_LONG]
    if errors:
        raise FieldErrors(errors)
    return chosen, text, visible in (True, "on", "1", "true")


class Documents:
    def __init__(
        self, db: Database, clock: Clock, storage: Storage, alerts: Alerts | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.storage = storage
        self.alerts = alerts

    async def do_add(
        self,
        account: Account,
        case_id: uuid.UUID,
        *,
        filename: str,
        chunks: AsyncIterator[bytes],
        category: object,
        description: object,
        visible_to_other_party: object,
        key: str | None = None,
    ) -> Document:
        """Add a document to a case the person takes part in (fields checked before the bytes)."""
        chosen, text, visible = check_document_fields(category, description, visible_to_other_party)
        name = sanitize_name(filename)
        verdict = check_extension(name, CONCILIATION_EXTENSIONS)
        if not verdict.ok:
            raise FieldErrors({"file": [verdict.code or ErrorCode.FILE_TYPE_NOT_ALLOWED]})
        async with self.db.session() as session:
            case, actor = await case_for(session, account, case_id)
        if case.status == CaseStatus.CLOSED:
            raise UserError(ErrorCode.TRANSITION_REFUSED, "the case is closed")
        stored = await self.storage.put(chunks, max_bytes=CONCILIATION_MAX_FILE)
        try:
            content = await asyncio.to_thread(
                check_content, self.storage.path(stored.key), extension(name)
            )
            if not content.ok:
                raise FieldErrors({"file": [content.code or ErrorCode.FILE_CONTENT_MISMATCH]})
            now = self.clock.now()
            document = Document(
                id=new_id(),
                case_id=case_id,
                storage_key=stored.key,
                name=name,
                extension=extension(name),
                size=stored.size,
                sha256=stored.sha256,
                category=chosen,
                description=text,
                visible_to_other_party=visible,
                added_by_id=account.id,
                added_as=actor,
                added_at=now,
                upload_key=key,
            )
            async with self.db.session() as session:
                session.add(document)
                session.add(
                    CaseEvent(
                        case_id=case_id,
                        at=now,
                        account_id=account.id,
                        actor=actor,
                        kind="document_added",
                        from_status=case.status,
                        to_status=case.status,
                        note=name,
                        restricted_to=None if visible else actor,
                    )
                )
                await self._alert(session, case, actor, account, visible)
                await session.commit()
        except BaseException:
            await self.storage.delete(stored.key)
            raise
        if self.alerts is not None:
            self.alerts.notifier.wake()
        return document

    async def add_once(
        self,
        account: Account,
        case_id: uuid.UUID,
        key: str | None,
        *,
        filename: str,
        chunks: AsyncIterator[bytes],
        category: object,
        description: object,
        visible_to_other_party: object,
    ) -> tuple[Document, bool]:
        """``do_add`` under the uploader's ``key`` (an idempotency key): the first request
        with it adds the document; a retry (the answer was lost, the form sent twice) gets
        that document back without adding another (``True``: this is a replay), even while
        the first is still arriving. A key its account used for another case, or for a file
        of another name, is refused (409).
        Without a key, ``do_add``."""
        if key is not None:
            if not UPLOAD_KEY.fullmatch(key):
                raise UserError(ErrorCode.BAD_REQUEST, "upload key")
            async with self.db.session() as session:
                await case_for(session, account, case_id)
                first = await self._uploaded(session, account, case_id, key, filename)
            if first is not None:
                return first, True
        try:
            added = await self.do_add(
                account,
                case_id,
                filename=filename,
                chunks=chunks,
                category=category,
                description=description,
                visible_to_other_party=visible_to_other_party,
                key=key,
            )
        except IntegrityError:
            if key is None:
                raise
            # The same key committed by a request running beside this one.
            async with self.db.session() as session:
                first = await self._uploaded(session, account, case_id, key, filename)
            if first is None:
                raise
            return first, True
        return added, False

    @staticmethod
    async def _uploaded(
        session: AsyncSession, account: Account, case_id: uuid.UUID, key: str, filename: str
    ) -> Document | None:
        """The document the account added under ``key``, if any: a key used for another case
        or another file (by its name) is refused rather than answered with that one."""
        first = await session.scalar(
            select(Document).where(Document.added_by_id == account.id, Document.upload_key == key)
        )
        if first is not None and first.case_id != case_id:
            raise UserError(ErrorCode.CONFLICT, "the upload key was used for another case")
        if first is not None and first.name != sanitize_name(filename):
            raise UserError(ErrorCode.CONFLICT, "the upload key was used for another file")
        return first

    async def file_generated(
        self,
        session: AsyncSession,
        case: Case,
        author: Account,
        actor: Actor,
        *,
        name: str,
        content: bytes,
        category: Category,
        description: str,
    ) -> Document:
        """File a document the service produced (the minutes), visible to both parties, in the
        caller's transaction, even on a closed case; both sides are told."""

        async def chunks() -> AsyncIterator[bytes]:
            yield content

        stored = await self.storage.put(chunks(), max_bytes=len(content) + 1)
        now = self.clock.now()
        document = Document(
            id=new_id(),
            case_id=case.id,
            storage_key=stored.key,
            name=sanitize_name(name),
            extension=extension(name),
            size=stored.size,
            sha256=stored.sha256,
            category=category,
            description=description[:DESCRIPTION_MAX],
            visible_to_other_party=True,
            added_by_id=author.id,
            added_as=actor,
            added_at=now,
        )
        session.add(document)
        record(
            session,
            case,
            at=now,
            account_id=author.id,
            actor=actor,
            kind="document_added",
            note=document.name,
        )
        if self.alerts is not None:
            await self.alerts.send(
                session, case, (Audience.APPLICANT, Audience.COMPANY), "case_document"
            )
        return document

    async def _alert(
        self, session: AsyncSession, case: Case, actor: Actor, account: Account, visible: bool
    ) -> None:
        """New documentation: the other party hears of it when it may see it; the applicant
        also of what staff add. Nobody hears of a draft's attachments."""
        if self.alerts is None or case.status == CaseStatus.DRAFT:
            return
        audiences: list[Audience] = []
        if actor != Actor.APPLICANT and (visible or actor != Actor.COMPANY):
            audiences.append(Audience.APPLICANT)
        company_involved = case.status not in (
            CaseStatus.SUBMITTED,
            CaseStatus.INTEGRATION_REQUESTED,
        )
        if actor != Actor.COMPANY and company_involved and (visible or actor not in PARTIES):
            audiences.append(Audience.COMPANY)
        await self.alerts.send(session, case, tuple(audiences), "case_document", skip=account.id)

    async def list_for(self, account: Account, case_id: uuid.UUID) -> list[Document]:
        """The case's documents the person may see, oldest first; ``NOT_FOUND`` if unrelated."""
        async with self.db.session() as session:
            _case, actor = await case_for(session, account, case_id)
            rows = await session.scalars(
                select(Document)
                .where(Document.case_id == case_id)
                .order_by(Document.added_at, Document.id)
            )
            return [d for d in rows if may_see(d, actor)]

    async def get_for(self, account: Account, document_id: uuid.UUID) -> Document:
        """One document, only for those who may see it (``NOT_FOUND`` otherwise, never 403)."""
        async with self.db.session() as session:
            document = await session.get(Document, document_id)
            if document is None:
                raise UserError(ErrorCode.NOT_FOUND)
            _case, actor = await case_for(session, account, document.case_id)
        if not may_see(document, actor):
            raise UserError(ErrorCode.NOT_FOUND)
        return document

    async def storage_keys(self) -> set[str]:
        """The stored objects documents point at (for the orphan sweep)."""
        async with self.db.session() as session:
            return set(await session.scalars(select(Document.storage_key)))

    async def sweep_orphans(
        self, older_than: timedelta = timedelta(hours=1), *, others: Sequence[KeyOwner] = ()
    ) -> int:
        """Delete stored objects no document (nor any of ``others``, the other services keeping
        objects in the same storage) points at, left by a crash mid-upload."""
        return await sweep_orphans(self.storage, (self, *others), older_than)
