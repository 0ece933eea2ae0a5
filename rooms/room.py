"""The rules of a meeting room, with no transport in sight.

Every call names the account acting (from its authenticated connection) and the meeting (from
its signed room token), never trusts anything else the client says about who it is, and checks
again, in the same transaction as the change, that the account still takes part: its account is
active, it is still the case's applicant (a delegation may have been revoked), the company's
representative or the meeting's conciliator, it was not removed, and the room is open.

State lives in the database (``rooms.models``); what others must learn is collected while the
transaction runs and handed to the ``Broadcaster`` only after the commit, so nothing is announced
that was not stored. Each event carries the whole new version of what it changed (a message, a
participant, the room, the agreement), so that a client's snapshot plus the events it received
equals a fresh snapshot.

Audiences: ``ALL`` (everyone connected, the lobby included), ``IN`` (the conciliator and the
admitted parties), ``CONCILIATOR``, a party's side (``side:applicant``/``side:company``, admitted
members only) and one account (``account:<id>``). What is said in a separate session goes to the
conciliator and that side only, now and in any history.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Table, bindparam, delete, insert, or_, select, tuple_, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Account, Role, Status
from cases.casefile import Case
from cases.documents import Document, Documents, may_see
from cases.lifecycle import Action, Actor
from cases.notifications import Notifier
from core.batch import Batcher
from core.clock import Clock
from core.db import Database
from core.errors import ErrorCode, ProtocolError, UserError
from core.ids import keyed_hash, same
from core.jobs import JobRunner, schedule_job
from core.text import strip_controls
from rooms.minutes import mask_email
from rooms.models import (
    PARTIES,
    MemberState,
    MessageKind,
    Room,
    RoomCode,
    RoomMember,
    RoomMessage,
    RoomOutcome,
    RoomPresence,
    RoomSession,
    SessionKind,
    Side,
)
from scheduling.bookings import Bookings, Meeting, MeetingStatus
from scheduling.planner import Planner

ALL = "all"
IN = "in"
CONCILIATOR = "conciliator"
VIDEO = "video"  # the meetings held by video (``Meeting.mode``; the others: chat only)
HISTORY_TAIL = 200  # messages in a snapshot at most (older ones through ``history``)
PAGE_MAX = 500  # messages in a resumed snapshot or a ``history`` answer at most
MESSAGE_MAX = 4000  # characters of one chat message
NOTE_MAX = 300
# Notices are keys the pages translate; their author is the person they are about.
NOTICE_ADMITTED = "admitted"
NOTICE_REMOVED = "removed"
NOTICE_JOINT = "joint_session"
NOTICE_SEPARATE = "separate_session"  # + "_applicant" or "_company"
NOTICE_ACCEPTED = "accepted"
AGREEMENT_MAX = 20000
CODE_TTL = timedelta(minutes=10)
CODE_RESEND = timedelta(seconds=60)  # a new code at most once a minute
CODE_ATTEMPTS = 5
MINUTES_JOB = "meeting_minutes"
ENDED_SWEEP_AFTER = timedelta(minutes=1)
ACTOR_OF = {
    Side.CONCILIATOR: Actor.CONCILIATOR,
    Side.APPLICANT: Actor.APPLICANT,
    Side.COMPANY: Actor.COMPANY,
}
CLOSING = {
    RoomOutcome.AGREEMENT: Action.RECORD_AGREEMENT,
    RoomOutcome.NO_AGREEMENT: Action.RECORD_NO_AGREEMENT,
    RoomOutcome.APPLICANT_ABSENT: Action.RECORD_APPLICANT_ABSENT,
    RoomOutcome.COMPANY_ABSENT: Action.RECORD_COMPANY_ABSENT,
}
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHAT_BATCH = 256  # messages stored in one transaction at most
CHAT_WRITERS = 2  # batches in flight at once (each on its own database connection)
# The tables as such, for the chat's hot path in SQLAlchemy Core (no ORM objects to build).
ACCOUNTS = cast(Table, Account.__table__)
CASES = cast(Table, Case.__table__)
MEETINGS = cast(Table, Meeting.__table__)
ROOMS = cast(Table, Room.__table__)
MEMBERS = cast(Table, RoomMember.__table__)
SESSIONS = cast(Table, RoomSession.__table__)
MESSAGES = cast(Table, RoomMessage.__table__)
T = TypeVar("T")
# The chat's statements, built once (built for each batch, their parts would be garbage the
# collector has to find): the batch's values go in as parameters.
CHAT_LOCK_SQLITE = (
    update(ROOMS)
    .where(ROOMS.c.meeting_id.in_(bindparam("meetings", expanding=True)))
    .values(version=ROOMS.c.version + 1)
)
CHAT_LOCK = (
    select(ROOMS.c.meeting_id, ROOMS.c.seq, ROOMS.c.opened_at, ROOMS.c.ended_at, ROOMS.c.session_id)
    .where(ROOMS.c.meeting_id.in_(bindparam("meetings", expanding=True)))
    .order_by(ROOMS.c.meeting_id)
    .with_for_update()
)
# Everyone in the batch's meetings with what the checks need: a few rows a meeting, where
# joining the accounts named in the batch to its meetings would make every pair of them.
CHAT_MEMBERS = (
    select(
        MEETINGS.c.id.label("meeting_id"),
        MEETINGS.c.status.label("meeting_status"),
        MEETINGS.c.conciliator_id,
        CASES.c.customer_id,
        CASES.c.delegate_id,
        CASES.c.company_id.label("case_company_id"),
        SESSIONS.c.kind.label("session_kind"),
        SESSIONS.c.side.label("session_side"),
        MEMBERS.c.account_id,
        MEMBERS.c.state,
        MEMBERS.c.muted,
        ACCOUNTS.c.role,
        ACCOUNTS.c.status.label("account_status"),
        ACCOUNTS.c.company_id,
        ACCOUNTS.c.first_name,
        ACCOUNTS.c.last_name,
    )
    .select_from(MEETINGS)
    .join(CASES, CASES.c.id == MEETINGS.c.case_id)
    .outerjoin(ROOMS, ROOMS.c.meeting_id == MEETINGS.c.id)
    .outerjoin(SESSIONS, SESSIONS.c.id == ROOMS.c.session_id)
    .outerjoin(MEMBERS, MEMBERS.c.meeting_id == MEETINGS.c.id)
    .outerjoin(ACCOUNTS, ACCOUNTS.c.id == MEMBERS.c.account_id)
    .where(MEETINGS.c.id.in_(bindparam("meetings", expanding=True)))
)
# Accounts that are no member of the meeting they write to (refused, but with the right code).
CHAT_OUTSIDERS = select(
    ACCOUNTS.c.id.label("account_id"),
    ACCOUNTS.c.role,
    ACCOUNTS.c.status.label("account_status"),
    ACCOUNTS.c.company_id,
    ACCOUNTS.c.first_name,
    ACCOUNTS.c.last_name,
).where(ACCOUNTS.c.id.in_(bindparam("accounts", expanding=True)))
CHAT_STORED = select(
    MESSAGES.c.meeting_id, MESSAGES.c.author_id, MESSAGES.c.client_id, MESSAGES.c.seq
).where(
    tuple_(MESSAGES.c.meeting_id, MESSAGES.c.author_id, MESSAGES.c.client_id).in_(
        bindparam("keys", expanding=True)
    )
)
CHAT_INSERT = insert(MESSAGES)
SWEEP_ACCOUNTS = select(
    ACCOUNTS.c.id, ACCOUNTS.c.role, ACCOUNTS.c.status, ACCOUNTS.c.company_id
).where(ACCOUNTS.c.id.in_(bindparam("accounts", expanding=True)))
SWEEP_MEETINGS = (
    select(
        MEETINGS.c.id,
        MEETINGS.c.conciliator_id,
        CASES.c.customer_id,
        CASES.c.delegate_id,
        CASES.c.company_id.label("case_company_id"),
        ROOMS.c.ended_at,
    )
    .join(CASES, CASES.c.id == MEETINGS.c.case_id)
    .outerjoin(ROOMS, ROOMS.c.meeting_id == MEETINGS.c.id)
    .where(MEETINGS.c.id.in_(bindparam("meetings", expanding=True)))
)
SWEEP_REMOVED = select(MEMBERS.c.account_id, MEMBERS.c.meeting_id).where(
    MEMBERS.c.meeting_id.in_(bindparam("meetings", expanding=True)),
    MEMBERS.c.state == MemberState.REMOVED.value,
)
CHAT_ADVANCE = (
    update(ROOMS)
    .where(ROOMS.c.meeting_id == bindparam("room"))
    .values(seq=bindparam("last"), version=ROOMS.c.version + 1)
)


def side_audience(side: str) -> str:
    return f"side:{side}"


def account_audience(account_id: uuid.UUID) -> str:
    return f"account:{account_id}"


@dataclass(frozen=True)
class Emit:
    audience: str
    event: str
    payload: dict[str, Any]


class Broadcaster(Protocol):
    """What the transport does for the room (``signaling`` implements it)."""

    async def emit(self, meeting_id: uuid.UUID, emits: Sequence[Emit]) -> None: ...

    async def refresh(self, meeting_id: uuid.UUID, account_id: uuid.UUID) -> None:
        """The account's audiences changed (admitted, removed…): recompute its connections'."""

    async def disconnect(self, meeting_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
        """Close the account's connections to the meeting (``None``: everyone's)."""

    async def online(self, meeting_id: uuid.UUID) -> set[uuid.UUID]:
        """The accounts connected to the meeting now, on any node."""


@dataclass
class Seat:
    """Who is acting, checked against the database for this one event."""

    meeting: Meeting
    case: Case
    account: Account
    side: Side
    member: RoomMember | None
    room: Room | None


@dataclass
class Changes:
    """What to announce once the transaction commits."""

    emits: list[Emit] = field(default_factory=list)
    refresh: list[uuid.UUID] = field(default_factory=list)
    disconnect: list[uuid.UUID] = field(default_factory=list)
    disconnect_all: bool = False

    def add(self, audience: str, event: str, payload: dict[str, Any]) -> None:
        self.emits.append(Emit(audience, event, payload))


@dataclass(frozen=True)
class MediaRouting:
    """What a meeting's media follows, from the database: the admitted members (account id →
    side), the party of a running separate session (``None``: joint) and the admitted
    members whose audio the conciliator cut."""

    members: dict[str, Side]
    separate: Side | None
    muted: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MediaSeat:
    """An admitted member of a running video meeting, and the routing of that meeting now."""

    side: Side
    routing: MediaRouting


def side_of(account: Account, meeting: Meeting, case: Case) -> Side | None:
    """The account's part in the meeting, from the server's records alone."""
    return side_for(
        account.role,
        account.id,
        account.company_id,
        meeting.conciliator_id,
        case.applicant_id,
        case.company_id,
    )


def side_for(
    role: str,
    account_id: uuid.UUID,
    account_company_id: uuid.UUID | None,
    conciliator_id: uuid.UUID,
    applicant_id: uuid.UUID | None,
    case_company_id: uuid.UUID | None,
) -> Side | None:
    """``side_of`` from the columns alone."""
    if role == Role.CONCILIATOR and account_id == conciliator_id:
        return Side.CONCILIATOR
    if account_id == applicant_id:
        return Side.APPLICANT
    if role == Role.COMPANY_REP and account_company_id == case_company_id:
        return Side.COMPANY
    return None


def padded(values: list[T]) -> list[T]:
    """``values`` repeated up to a power of two: an ``IN`` list of a few lengths only, so that
    the database keeps a few prepared statements instead of one per batch size."""
    size = 1
    while size < len(values):
        size *= 2
    return values + [values[0]] * (size - len(values))


@dataclass(frozen=True)
class Saying:
    """A chat message waiting to be stored."""

    account_id: uuid.UUID
    meeting_id: uuid.UUID
    client_id: str
    body: str


@dataclass(frozen=True)
class Said:
    """A chat message stored (or found stored: ``duplicate``), and whom to tell."""

    seq: int
    duplicate: bool
    view: dict[str, Any] | None = None
    audiences: tuple[str, ...] = ()


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def clean_text(value: object, limit: int, *, required: bool = True) -> str:
    """User text as typed (it is shown as text, never as HTML), within its limit."""
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "text expected")
    text = strip_controls(value).strip()
    if required and not text:
        raise UserError(ErrorCode.REQUIRED)
    if len(text) > limit:
        raise UserError(ErrorCode.TOO_LONG, limit=limit)
    return text


class Rooms:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        bookings: Bookings,
        documents: Documents,
        planner: Planner,
        secret: bytes,
        *,
        notifier: Notifier | None = None,
        jobs: JobRunner | None = None,
        broadcaster: Broadcaster | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.bookings = bookings
        self.documents = documents
        self.planner = planner
        self.secret = secret
        self.notifier = notifier
        self.jobs = jobs
        self.broadcaster = broadcaster
        self._background: set[asyncio.Task[int]] = set()
        self._chat: Batcher[Saying, Said] = Batcher(
            self._store_chat, limit=CHAT_BATCH, concurrency=CHAT_WRITERS
        )

    async def close_background(self) -> None:
        """Let the work started after answers finish (at shutdown)."""
        await asyncio.gather(*self._background, return_exceptions=True)

    # ---- who is acting ------------------------------------------------------------------

    async def _seat(
        self, session: AsyncSession, account_id: uuid.UUID, meeting_id: uuid.UUID
    ) -> Seat:
        # One statement, the member and the room outer-joined: every event and every join
        # reads a seat (several times for a join), and three round trips each were the largest
        # part of a join's cost under load (bench/load.py).
        row = (
            await session.execute(
                select(Meeting, Case, Account, RoomMember, Room)
                .join(Case, Case.id == Meeting.case_id)
                .join(Account, Account.id == account_id)
                .outerjoin(
                    RoomMember,
                    (RoomMember.meeting_id == Meeting.id) & (RoomMember.account_id == account_id),
                )
                .outerjoin(Room, Room.meeting_id == Meeting.id)
                .where(Meeting.id == meeting_id)
            )
        ).first()
        if row is None:
            raise UserError(ErrorCode.NOT_FOUND)
        meeting, case, account, member, room = row
        side = side_of(account, meeting, case)
        if side is None or meeting.status == MeetingStatus.CANCELLED:
            raise UserError(ErrorCode.NOT_FOUND)  # as for a meeting that does not exist
        if account.status != Status.ACTIVE:
            raise UserError(ErrorCode.ACCOUNT_DISABLED)
        return Seat(meeting, case, account, side, member, room)

    async def _locked(
        self, session: AsyncSession, account_id: uuid.UUID, meeting_id: uuid.UUID
    ) -> Seat:
        """The seat, with the room's row locked first (one change at a time per room)."""
        locked = await session.execute(
            update(Room)
            .where(Room.meeting_id == meeting_id)
            .values(version=Room.version + 1)
            .returning(Room.meeting_id)
        )
        if locked.first() is None:
            raise UserError(ErrorCode.ROOM_CLOSED)
        seat = await self._seat(session, account_id, meeting_id)
        if seat.room is not None:
            await session.refresh(seat.room)
        return seat

    @staticmethod
    async def _current(session: AsyncSession, room: Room) -> RoomSession | None:
        """The session in progress in ``room`` (joint or separate), if it is open."""
        return await session.get(RoomSession, room.session_id) if room.session_id else None

    def _open_window(self, meeting: Meeting, now: datetime) -> bool:
        return self.bookings.rules.room_open(meeting, now)

    def _may_enter(self, seat: Seat, now: datetime) -> None:
        """The room admits connections from 15 minutes before the slot until a grace time after
        it, or until the conciliator ends it; its conciliator may come back later to close it."""
        room = seat.room
        if room is not None and room.ended_at is not None:
            raise UserError(ErrorCode.ROOM_CLOSED)
        if self._open_window(seat.meeting, now):
            return
        if seat.side == Side.CONCILIATOR and room is not None and room.opened_at is not None:
            return
        raise UserError(ErrorCode.ROOM_CLOSED)

    def _present(self, seat: Seat) -> tuple[Room, RoomMember]:
        """The room must be running and the member admitted (or be its conciliator)."""
        room, member = seat.room, seat.member
        if member is not None and member.state == MemberState.REMOVED:
            raise UserError(ErrorCode.REMOVED)
        if member is None or member.state != MemberState.ADMITTED:
            raise UserError(ErrorCode.NOT_ADMITTED)
        if room is None or room.opened_at is None or room.ended_at is not None:
            raise UserError(ErrorCode.ROOM_CLOSED)
        return room, member

    def _chair(self, seat: Seat) -> tuple[Room, RoomMember]:
        room, member = self._present(seat)
        if seat.side != Side.CONCILIATOR:
            raise UserError(ErrorCode.FORBIDDEN)
        return room, member

    # ---- what people see -----------------------------------------------------------------

    @staticmethod
    def member_view(member: RoomMember, account: Account, online: bool) -> dict[str, Any]:
        return {
            "id": str(member.account_id),
            "name": f"{account.first_name} {account.last_name}",
            "side": member.side,
            "state": member.state,
            "muted": member.muted,
            "audio_muted": member.audio_muted,
            "online": online,
            "asked_proposal": member.proposal_asked_at is not None,
            "accepted_version": member.accepted_version,
        }

    @staticmethod
    def me_view(member: RoomMember, note: str = "") -> dict[str, Any]:
        """What the account itself learns of its own state (with the conciliator's note)."""
        return {
            "id": str(member.account_id),
            "side": member.side,
            "state": member.state,
            "muted": member.muted,
            "note": note,
        }

    @staticmethod
    def room_view(room: Room, session: RoomSession | None) -> dict[str, Any]:
        return {
            "opened": room.opened_at is not None,
            "ended": room.ended_at is not None,
            "outcome": room.outcome,
            "lobby_note": room.lobby_note,
            "session": (
                {"id": session.id, "kind": session.kind, "side": session.side}
                if session is not None
                else None
            ),
        }

    @staticmethod
    def agreement_view(room: Room) -> dict[str, Any]:
        return {
            "text": room.agreement_text,
            "version": room.agreement_version,
            "proposal": room.agreement_proposal,
        }

    @staticmethod
    def message_view(message: RoomMessage, names: dict[uuid.UUID, str]) -> dict[str, Any]:
        return {
            "seq": message.seq,
            "kind": message.kind,
            "author": str(message.author_id) if message.author_id else None,
            "author_name": names.get(message.author_id, "") if message.author_id else "",
            "client_id": message.client_id,
            "session": message.session_id,
            "side": message.side,
            "text": message.body,
            "document": str(message.document_id) if message.document_id else None,
            "at": iso(message.at),
        }

    @staticmethod
    def sees_all(side: Side) -> bool:
        return side == Side.CONCILIATOR

    def _visible(self, side: Side) -> Any:
        """The messages ``side`` may read: the joint session's, and its own separate ones."""
        if self.sees_all(side):
            return True
        return or_(RoomMessage.side.is_(None), RoomMessage.side == side.value)

    async def _names(self, session: AsyncSession, meeting_id: uuid.UUID) -> dict[uuid.UUID, str]:
        rows = await session.execute(
            select(Account.id, Account.first_name, Account.last_name)
            .join(RoomMember, RoomMember.account_id == Account.id)
            .where(RoomMember.meeting_id == meeting_id)
        )
        return {i: f"{f} {last}" for i, f, last in rows.all()}

    async def _messages(
        self,
        session: AsyncSession,
        seat: Seat,
        *,
        after: int = 0,
        limit: int = HISTORY_TAIL,
        newest: bool = False,
    ) -> list[dict[str, Any]]:
        """The first ``limit`` messages after ``after`` the seat may read, in order — so that
        a client pages on from the last one it got — or, ``newest``, the last ``limit`` (the
        tail a first join shows)."""
        order = RoomMessage.seq.desc() if newest else RoomMessage.seq
        rows = list(
            await session.scalars(
                select(RoomMessage)
                .where(
                    RoomMessage.meeting_id == seat.meeting.id,
                    RoomMessage.seq > after,
                    self._visible(seat.side),
                )
                .order_by(order)
                .limit(limit)
            )
        )
        if newest:
            rows.reverse()
        names = await self._names(session, seat.meeting.id)
        return [self.message_view(m, names) for m in rows]

    async def _snapshot(
        self, session: AsyncSession, seat: Seat, after: int | None = None
    ) -> dict[str, Any]:
        """What the account sees on (re)joining: everything, or only the lobby's view."""
        meeting, room, member = seat.meeting, seat.room, seat.member
        assert room is not None and member is not None
        current = await self._current(session, room)
        snapshot: dict[str, Any] = {
            "meeting": {
                "id": str(meeting.id),
                "case": seat.case.code,
                "starts_at": iso(meeting.starts_at),
                "ends_at": iso(meeting.ends_at),
                "mode": meeting.mode,
            },
            "server_time": iso(self.clock.now()),
            "me": {
                "id": str(seat.account.id),
                "side": seat.side.value,
                "state": member.state,
                "muted": member.muted,
            },
            "room": self.room_view(room, current),
            "seq": room.seq,
        }
        if member.state != MemberState.ADMITTED:
            return snapshot
        online = await self.broadcaster.online(meeting.id) if self.broadcaster else set()
        members = await session.execute(
            select(RoomMember, Account)
            .join(Account, Account.id == RoomMember.account_id)
            .where(RoomMember.meeting_id == meeting.id)
            .order_by(RoomMember.knocked_at)
        )
        everyone = members.all()
        snapshot["participants"] = [
            self.member_view(m, a, a.id in online)
            for m, a in everyone
            if self.sees_all(seat.side) or m.state == MemberState.ADMITTED
        ]
        if meeting.mode == VIDEO:
            cut = [m for m, _a in everyone if m.state == MemberState.ADMITTED and m.audio_muted]
            snapshot["media"] = {"muted": sorted(str(m.account_id) for m in cut)}
        if after:  # a resync: the first of what the client lacks, then `history` pages on
            snapshot["messages"] = await self._messages(session, seat, after=after, limit=PAGE_MAX)
        else:
            snapshot["messages"] = await self._messages(session, seat, newest=True)
        snapshot["agreement"] = self.agreement_view(room)
        return snapshot

    # ---- joining and leaving -----------------------------------------------------------------

    async def enter(self, account_id: uuid.UUID, meeting_id: uuid.UUID, connection: str) -> None:
        """A connection joins the room: the lobby for a party until admitted, the room itself
        for its conciliator (who opens it on arrival). The snapshot comes after, once the
        connection listens to its audiences, so that nothing falls in between."""
        changes = Changes()
        now = self.clock.now()
        async with self.db.session() as session:
            seat = await self._seat(session, account_id, meeting_id)
            self._may_enter(seat, now)
            if seat.room is None:
                try:
                    async with session.begin_nested():
                        session.add(Room(meeting_id=meeting_id, seq=0, version=0, lobby_note=""))
                        await session.flush()
                except IntegrityError:
                    pass  # created meanwhile by someone else
            seat = await self._locked(session, account_id, meeting_id)
            room = seat.room
            assert room is not None
            self._may_enter(seat, now)
            member = seat.member
            if member is not None and member.state == MemberState.REMOVED:
                raise UserError(ErrorCode.REMOVED)
            chairing = seat.side == Side.CONCILIATOR
            if member is None:
                member = RoomMember(
                    meeting_id=meeting_id,
                    account_id=account_id,
                    side=seat.side,
                    state=MemberState.ADMITTED if chairing else MemberState.WAITING,
                    muted=False,
                    knocked_at=now,
                )
                session.add(member)
                seat.member = member
            elif member.state == MemberState.TURNED_AWAY:
                member.state = MemberState.WAITING  # knocking again
                member.knocked_at = now
            if chairing and room.opened_at is None:
                await self._open(session, seat, changes)
            session.add(
                RoomPresence(
                    meeting_id=meeting_id,
                    account_id=account_id,
                    connection=connection,
                    joined_at=now,
                )
            )
            await session.flush()
            if member.state == MemberState.WAITING:
                changes.add(
                    CONCILIATOR, "participant", self.member_view(member, seat.account, True)
                )
            await session.commit()
        await self._announce(meeting_id, changes)

    async def knock(self, account_id: uuid.UUID, meeting_id: uuid.UUID) -> None:
        """A party that was turned away asks to come in again (back to the lobby)."""
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            member = seat.member
            if member is None or member.state != MemberState.TURNED_AWAY:
                return
            member.state = MemberState.WAITING
            member.knocked_at = self.clock.now()
            changes.add(CONCILIATOR, "participant", self.member_view(member, seat.account, True))
            await session.commit()
        await self._announce(meeting_id, changes)

    async def snapshot(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, after: int | None = None
    ) -> dict[str, Any]:
        """What the account sees now (``after``: only the messages it does not hold yet)."""
        async with self.db.session() as session:
            seat = await self._seat(session, account_id, meeting_id)
            if seat.room is None or seat.member is None:
                raise UserError(ErrorCode.ROOM_CLOSED)
            if seat.member.state == MemberState.REMOVED:
                raise UserError(ErrorCode.REMOVED)
            return await self._snapshot(session, seat, after)

    async def _open(self, session: AsyncSession, seat: Seat, changes: Changes) -> None:
        """The conciliator arrives: the meeting is held from now, the joint session begins."""
        room = seat.room
        assert room is not None
        now = self.clock.now()
        await self.bookings.hold_in(session, seat.account, seat.meeting)
        room.opened_at = now
        joint = RoomSession(meeting_id=room.meeting_id, kind=SessionKind.JOINT, started_at=now)
        session.add(joint)
        await session.flush()
        room.session_id = joint.id
        changes.add(ALL, "room", self.room_view(room, joint))

    async def presence_changed(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, online: bool
    ) -> None:
        """Tell the room someone came online or went away (after the transport knows)."""
        async with self.db.session() as session:
            member = await session.get(RoomMember, (meeting_id, account_id))
            account = await session.get(Account, account_id)
        if member is None or account is None:
            return
        audience = IN if member.state == MemberState.ADMITTED else CONCILIATOR
        await self._announce(
            meeting_id,
            Changes(
                emits=[Emit(audience, "participant", self.member_view(member, account, online))]
            ),
        )

    async def leave(self, connection: str, at: datetime | None = None) -> None:
        """A connection went away (``at``, default now): its stretch of presence ends."""
        async with self.db.session() as session:
            await session.execute(
                update(RoomPresence)
                .where(RoomPresence.connection == connection, RoomPresence.left_at.is_(None))
                .values(left_at=at or self.clock.now())
            )
            await session.commit()

    async def audiences(self, account_id: uuid.UUID, meeting_id: uuid.UUID) -> list[str]:
        """The audiences a connection of the account belongs to, from the server's records."""
        async with self.db.session() as session:
            seat = await self._seat(session, account_id, meeting_id)
        found = [ALL, account_audience(account_id)]
        member = seat.member
        if member is not None and member.state == MemberState.REMOVED:
            raise UserError(ErrorCode.REMOVED)
        self._may_enter(seat, self.clock.now())
        if member is None or member.state != MemberState.ADMITTED:
            return found
        found.append(IN)
        if seat.side == Side.CONCILIATOR:
            found.append(CONCILIATOR)
        else:
            found.append(side_audience(seat.side))
        return found

    async def revoked(
        self, pairs: Sequence[tuple[uuid.UUID, uuid.UUID]]
    ) -> set[tuple[uuid.UUID, uuid.UUID]]:
        """Which (account, meeting) connections may no longer stay: the account was disabled,
        its delegation revoked (no longer the applicant), it was removed, or the room ended.
        Three queries whatever the number of connections (the signaling sweeps with it)."""
        if not pairs:
            return set()
        params = {
            "accounts": padded(sorted({a for a, _m in pairs})),
            "meetings": padded(sorted({m for _a, m in pairs})),
        }
        # Columns, not ORM objects: the sweep runs every few seconds over every connection,
        # and building an object for each would hold the event loop up for a while.
        async with self.db.session() as session:
            people = {row.id: row for row in await session.execute(SWEEP_ACCOUNTS, params)}
            found = {row.id: row for row in await session.execute(SWEEP_MEETINGS, params)}
            removed = set((await session.execute(SWEEP_REMOVED, params)).all())
        gone = set()
        now = self.clock.now()
        for account_id, meeting_id in pairs:
            account = people.get(account_id)
            meeting = found.get(meeting_id)
            if (
                account is None
                or meeting is None
                or account.status != Status.ACTIVE
                or side_for(
                    account.role,
                    account.id,
                    account.company_id,
                    meeting.conciliator_id,
                    meeting.delegate_id or meeting.customer_id,
                    meeting.case_company_id,
                )
                is None
                # An ended room's connections are closed by the closing itself, a second after
                # its last answers; the sweep only catches what that missed, a minute later.
                or (meeting.ended_at is not None and now - meeting.ended_at > ENDED_SWEEP_AFTER)
                or (account_id, meeting_id) in removed
            ):
                gone.add((account_id, meeting_id))
        return gone

    # ---- the chat ----------------------------------------------------------------------------

    def _speech_audience(self, room_session: RoomSession | None) -> list[str]:
        if room_session is not None and room_session.kind == SessionKind.SEPARATE:
            assert room_session.side is not None
            return [CONCILIATOR, side_audience(room_session.side)]
        return [IN]

    async def say(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, client_id: object, text: object
    ) -> dict[str, Any]:
        """Store a chat message once (a resend with the same ``client_id`` returns the first),
        then announce it; the answer, sent after the commit, gives its sequence number.

        Messages arriving while others are being stored are stored together, in one
        transaction (``_store_chat``): each checked as if alone, each answered only once the
        transaction that stored it committed."""
        if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "client_id")
        body = clean_text(text, MESSAGE_MAX)
        said = await self._chat.submit(Saying(account_id, meeting_id, client_id, body))
        if said.view is not None:
            view = said.view
            await self._announce(
                meeting_id, Changes(emits=[Emit(a, "message", view) for a in said.audiences])
            )
        return {"seq": said.seq, "duplicate": said.duplicate}

    async def _store_chat(self, batch: Sequence[Saying]) -> list[Said | BaseException]:
        """Store a batch of messages; if the database refuses the batch as a whole (a deadlock
        with another node, say), each message on its own."""
        try:
            return await self._chat_batch(batch)
        except DBAPIError:
            if len(batch) == 1:
                raise
        results: list[Said | BaseException] = []
        for one in batch:
            try:
                results.extend(await self._chat_batch([one]))
            except DBAPIError as exc:
                results.append(exc)
        return results

    async def _chat_batch(self, batch: Sequence[Saying]) -> list[Said | BaseException]:
        """One transaction for the whole batch, with a few statements whatever its size: the
        rooms are locked first (in one order, so two nodes' batches cannot deadlock), then
        everything the checks need is read after the locks, so that it includes whatever a
        change that held a lock committed (a mute, a removal, a separate session, the same
        message sent again)."""
        now = self.clock.now()
        meetings = padded(sorted({s.meeting_id for s in batch}))
        async with self.db.session() as session:
            if self.db.dialect == "sqlite":  # a write first: SQLite's lock for the transaction
                await session.execute(CHAT_LOCK_SQLITE, {"meetings": meetings})
            rooms = {
                row.meeting_id: row
                for row in await session.execute(CHAT_LOCK, {"meetings": meetings})
            }
            meetings_found: dict[uuid.UUID, Any] = {}
            members: dict[tuple[uuid.UUID, uuid.UUID], Any] = {}
            for row in await session.execute(CHAT_MEMBERS, {"meetings": meetings}):
                meetings_found[row.meeting_id] = row
                if row.account_id is not None:
                    members[(row.meeting_id, row.account_id)] = row
            strangers = sorted(
                {s.account_id for s in batch if (s.meeting_id, s.account_id) not in members}
            )
            outsiders: dict[uuid.UUID, Any] = {}
            if strangers:
                outsiders = {
                    row.account_id: row
                    for row in await session.execute(
                        CHAT_OUTSIDERS, {"accounts": padded(strangers)}
                    )
                }
            keys = padded(sorted({(s.meeting_id, s.account_id, s.client_id) for s in batch}))
            stored: dict[tuple[uuid.UUID, uuid.UUID, str], int] = {
                (m, a, c): seq
                for m, a, c, seq in await session.execute(CHAT_STORED, {"keys": keys})
            }
            seqs = {m: row.seq for m, row in rooms.items()}
            rows: list[dict[str, Any]] = []
            results: list[Said | BaseException] = []
            for saying in batch:
                try:
                    said = self._chat_one(
                        saying, rooms, meetings_found, members, outsiders, stored, seqs, now
                    )
                except UserError as exc:
                    results.append(exc)
                    continue
                results.append(said)
                if said.view is not None:
                    view = said.view
                    rows.append(
                        {
                            "meeting_id": saying.meeting_id,
                            "seq": view["seq"],
                            "author_id": saying.account_id,
                            "client_id": saying.client_id,
                            "kind": MessageKind.CHAT.value,
                            "session_id": view["session"],
                            "side": view["side"],
                            "body": saying.body,
                            "document_id": None,
                            "at": now,
                        }
                    )
            if not rows:
                return results
            await session.execute(CHAT_INSERT, rows)
            await session.execute(
                CHAT_ADVANCE,
                [{"room": m, "last": last} for m, last in seqs.items() if last != rooms[m].seq],
            )
            await session.commit()
        return results

    @staticmethod
    def _chat_one(
        saying: Saying,
        rooms: dict[uuid.UUID, Any],
        meetings: dict[uuid.UUID, Any],
        members: dict[tuple[uuid.UUID, uuid.UUID], Any],
        outsiders: dict[uuid.UUID, Any],
        stored: dict[tuple[uuid.UUID, uuid.UUID, str], int],
        seqs: dict[uuid.UUID, int],
        now: datetime,
    ) -> Said:
        """The checks of one message of a batch, in the order and with the answers of the
        other events (``_locked``, ``_seat``, ``_present``), then its number."""
        room = rooms.get(saying.meeting_id)
        if room is None:
            raise UserError(ErrorCode.ROOM_CLOSED)
        meeting = meetings.get(saying.meeting_id)
        member = members.get((saying.meeting_id, saying.account_id))
        person = member if member is not None else outsiders.get(saying.account_id)
        if meeting is None or person is None:
            raise UserError(ErrorCode.NOT_FOUND)
        side = side_for(
            person.role,
            saying.account_id,
            person.company_id,
            meeting.conciliator_id,
            meeting.delegate_id or meeting.customer_id,
            meeting.case_company_id,
        )
        if side is None or meeting.meeting_status == MeetingStatus.CANCELLED:
            raise UserError(ErrorCode.NOT_FOUND)
        if person.account_status != Status.ACTIVE:
            raise UserError(ErrorCode.ACCOUNT_DISABLED)
        if member is not None and member.state == MemberState.REMOVED:
            raise UserError(ErrorCode.REMOVED)
        if member is None or member.state != MemberState.ADMITTED:
            raise UserError(ErrorCode.NOT_ADMITTED)
        if room.opened_at is None or room.ended_at is not None:
            raise UserError(ErrorCode.ROOM_CLOSED)
        key = (saying.meeting_id, saying.account_id, saying.client_id)
        earlier = stored.get(key)
        if earlier is not None:
            return Said(earlier, duplicate=True)
        if member.muted:
            raise UserError(ErrorCode.MUTED)
        separate = meeting.session_kind == SessionKind.SEPARATE
        if separate and side not in (Side.CONCILIATOR, meeting.session_side):
            raise UserError(ErrorCode.SEPARATE_SESSION)
        seq = seqs[saying.meeting_id] + 1
        seqs[saying.meeting_id] = seq
        stored[key] = seq  # the same message twice in one batch is stored once
        view = {
            "seq": seq,
            "kind": MessageKind.CHAT.value,
            "author": str(saying.account_id),
            "author_name": f"{member.first_name} {member.last_name}",
            "client_id": saying.client_id,
            "session": room.session_id if separate else None,
            "side": meeting.session_side if separate else None,
            "text": saying.body,
            "document": None,
            "at": iso(now),
        }
        audiences = (CONCILIATOR, side_audience(meeting.session_side)) if separate else (IN,)
        return Said(seq, duplicate=False, view=view, audiences=audiences)

    @staticmethod
    def _name(account: Account) -> str:
        return f"{account.first_name} {account.last_name}"

    def _add_message(
        self,
        session: AsyncSession,
        room: Room,
        current: RoomSession | None,
        kind: MessageKind,
        body: str,
        *,
        author: uuid.UUID | None = None,
        client_id: str | None = None,
        document_id: uuid.UUID | None = None,
        joint: bool = False,
    ) -> RoomMessage:
        separate = current is not None and current.kind == SessionKind.SEPARATE and not joint
        room.seq += 1
        message = RoomMessage(
            meeting_id=room.meeting_id,
            seq=room.seq,
            author_id=author,
            client_id=client_id,
            kind=kind,
            session_id=current.id if separate and current is not None else None,
            side=current.side if separate and current is not None else None,
            body=body,
            document_id=document_id,
            at=self.clock.now(),
        )
        session.add(message)
        return message

    async def history(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, after: object, limit: object = 200
    ) -> list[dict[str, Any]]:
        """The first ``limit`` messages after ``after`` that the account may read, in order
        (a resync pages on from the last seq it got, until an answer holds fewer)."""
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "after")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= PAGE_MAX:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "limit")
        async with self.db.session() as session:
            seat = await self._seat(session, account_id, meeting_id)
            self._present(seat)
            messages = await self._messages(session, seat, after=after, limit=limit)
        return messages

    async def typing(self, account_id: uuid.UUID, meeting_id: uuid.UUID, on: object) -> None:
        if not isinstance(on, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "on")
        async with self.db.session() as session:
            seat = await self._seat(session, account_id, meeting_id)
            room, member = self._present(seat)
            if member.muted:
                raise UserError(ErrorCode.MUTED)
            current = await self._current(session, room)
        if (
            current is not None
            and current.kind == SessionKind.SEPARATE
            and seat.side
            not in (
                Side.CONCILIATOR,
                current.side,
            )
        ):
            raise UserError(ErrorCode.SEPARATE_SESSION)
        payload = {"id": str(account_id), "on": on}
        await self._announce(
            meeting_id,
            Changes(emits=[Emit(a, "typing", payload) for a in self._speech_audience(current)]),
        )

    # ---- video -------------------------------------------------------------------------------

    async def _media_routing(self, session: AsyncSession, room: Room) -> MediaRouting:
        rows = (
            await session.execute(
                select(RoomMember.account_id, RoomMember.side, RoomMember.audio_muted).where(
                    RoomMember.meeting_id == room.meeting_id,
                    RoomMember.state == MemberState.ADMITTED,
                )
            )
        ).all()
        members = {str(account): Side(side) for account, side, _cut in rows}
        muted = frozenset(str(account) for account, _side, cut in rows if cut)
        current = await self._current(session, room)
        separate = None
        if current is not None and current.kind == SessionKind.SEPARATE and current.side:
            separate = Side(current.side)
        return MediaRouting(members, separate, muted)

    async def media_seat(self, account_id: uuid.UUID, meeting_id: uuid.UUID) -> MediaSeat:
        """The account may take part in the meeting's video now: an admitted member (or its
        conciliator) of a running room of a video meeting. Refused otherwise, as the chat is."""
        async with self.db.session() as session:
            seat = await self._seat(session, account_id, meeting_id)
            room, _ = self._present(seat)
            if seat.meeting.mode != VIDEO:
                raise UserError(ErrorCode.FORBIDDEN)
            return MediaSeat(seat.side, await self._media_routing(session, room))

    async def media_routing(self, meeting_id: uuid.UUID) -> MediaRouting | None:
        """The meeting's media routing now, or ``None`` when it has no video running (the
        room is not open, has ended, or the meeting is not a video one)."""
        async with self.db.session() as session:
            meeting = await session.get(Meeting, meeting_id)
            room = await session.get(Room, meeting_id)
            if meeting is None or meeting.mode != VIDEO or room is None:
                return None
            if room.opened_at is None or room.ended_at is not None:
                return None
            return await self._media_routing(session, room)

    # ---- the conciliator's controls ----------------------------------------------------------

    async def _target(
        self, session: AsyncSession, meeting_id: uuid.UUID, account_id: object
    ) -> tuple[RoomMember, Account]:
        """A party of this meeting named by the conciliator; ids of anyone else are refused."""
        try:
            target_id = uuid.UUID(str(account_id))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "account") from None
        member = await session.get(RoomMember, (meeting_id, target_id))
        account = await session.get(Account, target_id)
        if member is None or account is None or member.side == Side.CONCILIATOR:
            raise UserError(ErrorCode.NOT_FOUND)
        return member, account

    async def admit(
        self,
        account_id: uuid.UUID,
        meeting_id: uuid.UUID,
        target: object,
        *,
        admit: bool = True,
        note: object = "",
    ) -> None:
        """Let a waiting party in, or turn it away (with an optional message)."""
        text = clean_text(note, NOTE_MAX, required=False)
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, _ = self._chair(seat)
            member, account = await self._target(session, meeting_id, target)
            if member.state == MemberState.REMOVED:
                raise UserError(ErrorCode.REMOVED)
            if member.state == MemberState.ADMITTED and admit:
                return
            current = await self._current(session, room)
            member.state = MemberState.ADMITTED if admit else MemberState.TURNED_AWAY
            online = await self._online(meeting_id)
            view = self.member_view(member, account, account.id in online)
            if admit:
                notice = self._add_message(
                    session,
                    room,
                    current,
                    MessageKind.NOTICE,
                    NOTICE_ADMITTED,
                    author=account.id,
                    joint=True,
                )
                await session.flush()
                changes.add(IN, "participant", view)
                changes.add(
                    IN, "message", self.message_view(notice, {account.id: self._name(account)})
                )
            else:
                changes.add(CONCILIATOR, "participant", view)
            changes.add(account_audience(account.id), "me", self.me_view(member, text))
            changes.refresh.append(account.id)
            await session.commit()
        await self._announce(meeting_id, changes)

    async def _online(self, meeting_id: uuid.UUID) -> set[uuid.UUID]:
        return await self.broadcaster.online(meeting_id) if self.broadcaster else set()

    async def set_lobby_note(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, note: object
    ) -> None:
        text = clean_text(note, NOTE_MAX, required=False)
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, _ = self._chair(seat)
            room.lobby_note = text
            current = await self._current(session, room)
            changes.add(ALL, "room", self.room_view(room, current))
            await session.commit()
        await self._announce(meeting_id, changes)

    async def separate(self, account_id: uuid.UUID, meeting_id: uuid.UUID, side: object) -> None:
        """Begin a separate session with one party (``side``), or with ``None`` go back to the
        joint session. Who was present when follows from the sessions and presence rows."""
        if side is not None and side not in [s.value for s in PARTIES]:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "side")
        changes = Changes()
        now = self.clock.now()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, _ = self._chair(seat)
            current = await self._current(session, room)
            wanted_kind = SessionKind.JOINT if side is None else SessionKind.SEPARATE
            if current is not None and current.kind == wanted_kind and current.side == side:
                return
            if current is not None:
                current.ended_at = now
            following = RoomSession(
                meeting_id=meeting_id, kind=wanted_kind, side=side, started_at=now
            )
            session.add(following)
            await session.flush()
            room.session_id = following.id
            label = NOTICE_JOINT if side is None else f"{NOTICE_SEPARATE}_{side}"
            notice = self._add_message(
                session, room, following, MessageKind.NOTICE, label, joint=True
            )
            await session.flush()
            changes.add(ALL, "room", self.room_view(room, following))
            changes.add(IN, "message", self.message_view(notice, {}))
            await session.commit()
        await self._announce(meeting_id, changes)

    async def mute(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, target: object, muted: object
    ) -> None:
        if not isinstance(muted, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "muted")
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            self._chair(seat)
            member, account = await self._target(session, meeting_id, target)
            member.muted = muted
            view = self.member_view(member, account, account.id in await self._online(meeting_id))
            changes.add(
                IN if member.state == MemberState.ADMITTED else CONCILIATOR, "participant", view
            )
            changes.add(account_audience(account.id), "me", self.me_view(member))
            await session.commit()
        await self._announce(meeting_id, changes)

    async def media_mute(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, target: object, muted: object
    ) -> None:
        """The conciliator cuts (or gives back) an admitted party's audio in a video meeting,
        for everyone, on the server. Stored on the party's membership, so that it outlives the
        node hosting the media and every node's snapshot lists it; told to the room as
        ``participant`` and ``media_muted``, which the hosting node follows (``media_routing``).
        Not the chat's ``mute``: the party may still write."""
        if not isinstance(muted, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "muted")
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            self._chair(seat)
            if seat.meeting.mode != VIDEO:
                raise UserError(ErrorCode.FORBIDDEN)
            member, account = await self._target(session, meeting_id, target)
            if member.state != MemberState.ADMITTED:
                raise UserError(ErrorCode.NOT_FOUND)
            member.audio_muted = muted
            view = self.member_view(member, account, account.id in await self._online(meeting_id))
            changes.add(IN, "participant", view)
            changes.add(IN, "media_muted", {"account": str(account.id), "muted": muted})
            await session.commit()
        await self._announce(meeting_id, changes)

    async def remove(self, account_id: uuid.UUID, meeting_id: uuid.UUID, target: object) -> None:
        """Remove a party: its connections are closed at once and it may not come back."""
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, _ = self._chair(seat)
            member, account = await self._target(session, meeting_id, target)
            if member.state == MemberState.REMOVED:
                return
            member.state = MemberState.REMOVED
            current = await self._current(session, room)
            notice = self._add_message(
                session,
                room,
                current,
                MessageKind.NOTICE,
                NOTICE_REMOVED,
                author=account.id,
                joint=True,
            )
            await session.flush()
            changes.add(IN, "participant", self.member_view(member, account, False))
            changes.add(IN, "message", self.message_view(notice, {account.id: self._name(account)}))
            changes.add(account_audience(account.id), "me", self.me_view(member))
            changes.disconnect.append(account.id)
            await session.commit()
        await self._announce(meeting_id, changes)

    # ---- documents ---------------------------------------------------------------------------

    async def share(
        self,
        account_id: uuid.UUID,
        meeting_id: uuid.UUID,
        document: object,
        client_id: object = None,
    ) -> dict[str, Any]:
        """Share a document of the case file into the room. Only where everyone who will see
        it may see it in the case file: in the joint session, a document both parties may see;
        in a separate session, one that session's party may see. With a ``client_id``, a
        share sent again (its answer was lost) is answered with the first one's ``seq``
        (``duplicate``), as ``say``."""
        try:
            document_id = uuid.UUID(str(document))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "document") from None
        if client_id is not None and (
            not isinstance(client_id, str) or not CLIENT_ID.match(client_id)
        ):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "client_id")
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, member = self._present(seat)
            if client_id is not None:
                first = await session.scalar(
                    select(RoomMessage.seq).where(
                        RoomMessage.meeting_id == meeting_id,
                        RoomMessage.author_id == account_id,
                        RoomMessage.client_id == client_id,
                    )
                )
                if first is not None:
                    return {"seq": first, "duplicate": True}
            if member.muted:
                raise UserError(ErrorCode.MUTED)
            found = await session.get(Document, document_id)
            actor = ACTOR_OF[seat.side]
            if found is None or found.case_id != seat.case.id or not may_see(found, actor):
                raise UserError(ErrorCode.NOT_FOUND)
            current = await self._current(session, room)
            separate = current is not None and current.kind == SessionKind.SEPARATE
            if separate and seat.side not in (Side.CONCILIATOR, current.side if current else None):
                raise UserError(ErrorCode.SEPARATE_SESSION)
            readers = [Side(current.side)] if separate and current and current.side else PARTIES
            if not all(may_see(found, ACTOR_OF[side]) for side in readers):
                raise UserError(ErrorCode.DOCUMENT_PRIVATE)
            message = self._add_message(
                session,
                room,
                current,
                MessageKind.DOCUMENT,
                found.name,
                author=account_id,
                client_id=client_id,
                document_id=found.id,
            )
            await session.flush()
            view = self.message_view(message, {account_id: self._name(seat.account)})
            for audience in self._speech_audience(current):
                changes.add(audience, "message", view)
            await session.commit()
        await self._announce(meeting_id, changes)
        return {"seq": message.seq, "duplicate": False}

    # ---- the outcome ---------------------------------------------------------------------------

    async def ask_proposal(self, account_id: uuid.UUID, meeting_id: uuid.UUID) -> None:
        """A party asks the conciliator for a settlement proposal (recorded with its time)."""
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            _room, member = self._present(seat)
            if seat.side == Side.CONCILIATOR:
                raise UserError(ErrorCode.FORBIDDEN)
            if member.proposal_asked_at is None:
                member.proposal_asked_at = self.clock.now()
            online = await self._online(meeting_id)
            changes.add(
                IN, "participant", self.member_view(member, seat.account, account_id in online)
            )
            await session.commit()
        await self._announce(meeting_id, changes)

    async def _parties(
        self, session: AsyncSession, meeting_id: uuid.UUID
    ) -> list[tuple[RoomMember, Account]]:
        rows = await session.execute(
            select(RoomMember, Account)
            .join(Account, Account.id == RoomMember.account_id)
            .where(RoomMember.meeting_id == meeting_id, RoomMember.side != Side.CONCILIATOR)
        )
        return [(m, a) for m, a in rows.all()]

    async def draft(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, text: object, proposal: object
    ) -> dict[str, Any]:
        """The conciliator writes (or rewrites) the agreement's text; each change is a new
        version that the parties must accept again. A settlement proposal of the conciliator
        is allowed only once both parties asked for one."""
        body = clean_text(text, AGREEMENT_MAX)
        if not isinstance(proposal, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "proposal")
        changes = Changes()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, _ = self._chair(seat)
            if proposal:
                asked = {
                    m.side
                    for m, _a in await self._parties(session, meeting_id)
                    if m.proposal_asked_at is not None
                }
                if not {Side.APPLICANT.value, Side.COMPANY.value} <= asked:
                    raise UserError(ErrorCode.PROPOSAL_NOT_ASKED)
            room.agreement_text = body
            room.agreement_version += 1
            room.agreement_proposal = proposal
            await session.execute(delete(RoomCode).where(RoomCode.meeting_id == meeting_id))
            changes.add(IN, "agreement", self.agreement_view(room))
            version = room.agreement_version
            await session.commit()
        await self._announce(meeting_id, changes)
        return {"version": version}

    async def send_code(self, account_id: uuid.UUID, meeting_id: uuid.UUID) -> dict[str, Any]:
        """E-mail the party a one-time code to confirm its acceptance of the current text."""
        now = self.clock.now()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, _member = self._present(seat)
            if seat.side == Side.CONCILIATOR:
                raise UserError(ErrorCode.FORBIDDEN)
            if not room.agreement_text:
                raise UserError(ErrorCode.NO_AGREEMENT_TEXT)
            earlier = await session.get(RoomCode, (meeting_id, account_id))
            if earlier is not None and earlier.expires_at - CODE_TTL + CODE_RESEND > now:
                raise UserError(ErrorCode.RATE_LIMITED)
            code = f"{secrets.randbelow(10**6):06d}"
            if earlier is not None:
                await session.delete(earlier)
                await session.flush()
            session.add(
                RoomCode(
                    meeting_id=meeting_id,
                    account_id=account_id,
                    code_hash=self._code_hash(meeting_id, account_id, code),
                    version=room.agreement_version,
                    expires_at=now + CODE_TTL,
                    attempts=0,
                )
            )
            if self.notifier is not None:
                self.notifier.queue_for(
                    session,
                    seat.account,
                    "agreement_code",
                    code=code,
                    case_code=seat.case.code or "",
                    minutes=int(CODE_TTL.total_seconds() // 60),
                )
            await session.commit()
        if self.notifier is not None:
            self.notifier.wake()
        return {"sent_to": mask_email(seat.account.email)}

    def _code_hash(self, meeting_id: uuid.UUID, account_id: uuid.UUID, code: str) -> str:
        return keyed_hash(self.secret, "agreement-code", str(meeting_id), str(account_id), code)

    async def accept(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, code: object, version: object
    ) -> None:
        """The party accepts this version of the agreement, confirmed by its one-time code."""
        if not isinstance(code, str) or not re.fullmatch(r"[0-9]{6}", code):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "code")
        changes = Changes()
        now = self.clock.now()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, member = self._present(seat)
            if seat.side == Side.CONCILIATOR:
                raise UserError(ErrorCode.FORBIDDEN)
            if version != room.agreement_version or not room.agreement_text:
                raise UserError(ErrorCode.AGREEMENT_CHANGED)
            stored = await session.get(RoomCode, (meeting_id, account_id))
            if stored is None or stored.version != version or stored.expires_at <= now:
                raise UserError(ErrorCode.CODE_INVALID)
            if stored.attempts >= CODE_ATTEMPTS:
                raise UserError(ErrorCode.CODE_EXHAUSTED)
            if not same(stored.code_hash, self._code_hash(meeting_id, account_id, code)):
                stored.attempts += 1
                await session.commit()
                raise UserError(
                    ErrorCode.CODE_EXHAUSTED
                    if stored.attempts >= CODE_ATTEMPTS
                    else ErrorCode.CODE_INVALID
                )
            await session.delete(stored)
            member.accepted_version = room.agreement_version
            member.accepted_at = now
            member.accepted_email = seat.account.email
            current = await self._current(session, room)
            notice = self._add_message(
                session,
                room,
                current,
                MessageKind.NOTICE,
                NOTICE_ACCEPTED,
                author=account_id,
                joint=True,
            )
            await session.flush()
            online = await self._online(meeting_id)
            changes.add(
                IN, "participant", self.member_view(member, seat.account, account_id in online)
            )
            changes.add(
                IN, "message", self.message_view(notice, {account_id: self._name(seat.account)})
            )
            await session.commit()
        await self._announce(meeting_id, changes)

    async def close(
        self, account_id: uuid.UUID, meeting_id: uuid.UUID, outcome: object, note: object = ""
    ) -> None:
        """The conciliator records the outcome and ends the meeting: the case follows (closed,
        or adjourned to a new slot), everyone is disconnected, and the minutes are drawn up,
        sealed and filed by a job (done at once, retried if it fails)."""
        try:
            chosen = RoomOutcome(str(outcome))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "outcome") from None
        text = clean_text(note, 2000, required=False)
        changes = Changes()
        now = self.clock.now()
        async with self.db.session() as session:
            seat = await self._locked(session, account_id, meeting_id)
            room, _ = self._chair(seat)
            if chosen == RoomOutcome.AGREEMENT:
                if not room.agreement_text:
                    raise UserError(ErrorCode.NO_AGREEMENT_TEXT)
                accepted = {
                    m.side
                    for m, _a in await self._parties(session, meeting_id)
                    if m.accepted_version == room.agreement_version
                }
                if not {Side.APPLICANT.value, Side.COMPANY.value} <= accepted:
                    raise UserError(ErrorCode.ACCEPTANCE_MISSING)
            if chosen == RoomOutcome.ADJOURNMENT:
                await self.planner.adjourn_in(
                    session, seat.account, seat.case.id, note=text or None
                )
            else:
                await self.bookings.files.step_in(
                    session,
                    seat.case,
                    Actor.CONCILIATOR,
                    seat.account,
                    CLOSING[chosen],
                    text or None,
                )
            current = await self._current(session, room)
            if current is not None:
                current.ended_at = now
            room.session_id = None
            room.ended_at = now
            room.outcome = chosen
            await session.execute(
                update(RoomPresence)
                .where(RoomPresence.meeting_id == meeting_id, RoomPresence.left_at.is_(None))
                .values(left_at=now)
            )
            schedule_job(
                session,
                kind=MINUTES_JOB,
                ref=f"minutes:{meeting_id}",
                due_at=now,
                now=now,
                payload={"meeting": str(meeting_id)},
            )
            changes.add(ALL, "room", self.room_view(room, None))
            changes.disconnect_all = True
            await session.commit()
        self.bookings.files.wake_mail()
        await self._announce(meeting_id, changes)
        if self.jobs is not None:
            # The minutes are drawn up and sealed now, but after this answer: rendering and
            # sealing take CPU the conciliator should not wait for (the job runner retries it).
            task = asyncio.create_task(self.jobs.run_due(), name=f"minutes-{meeting_id}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # ---- after the commit --------------------------------------------------------------------

    async def _announce(self, meeting_id: uuid.UUID, changes: Changes) -> None:
        if self.broadcaster is None:
            return
        if changes.emits:
            await self.broadcaster.emit(meeting_id, changes.emits)
        for account_id in changes.refresh:
            await self.broadcaster.refresh(meeting_id, account_id)
        for account_id in changes.disconnect:
            await self.broadcaster.disconnect(meeting_id, account_id)
        if changes.disconnect_all:
            await self.broadcaster.disconnect(meeting_id, None)
