"""What a meeting room keeps in the database, its system of record.

Everything a participant can see in the room is rebuilt from these rows, so a node can die,
Redis can be flushed, and a client can come back after a long absence without anything being
lost: the room's state (``rooms``), who takes part and how far they got (``room_members``,
with the conciliator's chat and audio mutes), the joint and separate sessions held
(``room_sessions``), who was connected when (``room_presence``), the chat with its per-room
sequence numbers (``room_messages``) and the one-time codes that confirm an acceptance
(``room_codes``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class Side(StrEnum):
    CONCILIATOR = "conciliator"
    APPLICANT = "applicant"  # the customer, or only the delegate on a delegated case
    COMPANY = "company"


PARTIES = (Side.APPLICANT, Side.COMPANY)


class MemberState(StrEnum):
    WAITING = "waiting"  # in the lobby
    ADMITTED = "admitted"
    TURNED_AWAY = "turned_away"  # may knock again
    REMOVED = "removed"  # may not come back to this meeting


class RoomOutcome(StrEnum):
    AGREEMENT = "agreement"
    NO_AGREEMENT = "no_agreement"
    ADJOURNMENT = "adjournment"
    APPLICANT_ABSENT = "applicant_absent"
    COMPANY_ABSENT = "company_absent"


class Room(Base):
    __tablename__ = "rooms"

    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # the last message's number
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lobby_note: Mapped[str] = mapped_column(String(300), default="")
    # The session in progress (joint or separate), if the room is open.
    session_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agreement_text: Mapped[str] = mapped_column(Text, default="")
    agreement_version: Mapped[int] = mapped_column(Integer, default=0)
    # The text is the conciliator's settlement proposal (offered because both parties asked).
    agreement_proposal: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str | None] = mapped_column(String(24), nullable=True)
    minutes_document_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)  # grows with every state change


class RoomMember(Base):
    __tablename__ = "room_members"

    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id"), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    side: Mapped[str] = mapped_column(String(12))
    state: Mapped[str] = mapped_column(String(12), default=MemberState.WAITING)
    muted: Mapped[bool] = mapped_column(Boolean, default=False)  # may not write in the chat
    # The conciliator cut the party's audio in a video meeting (on the server, for everyone).
    audio_muted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    knocked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The party asked the conciliator for a settlement proposal (both must, for one to come).
    proposal_asked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    accepted_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    accepted_email: Mapped[str | None] = mapped_column(String(320), nullable=True)


class SessionKind(StrEnum):
    JOINT = "joint"
    SEPARATE = "separate"


class RoomSession(Base):
    __tablename__ = "room_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    side: Mapped[str | None] = mapped_column(String(12), nullable=True)  # a separate one's party
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RoomPresence(Base):
    """One stretch of time a member was connected (for the minutes: who was present when)."""

    __tablename__ = "room_presence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id"), index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    connection: Mapped[str] = mapped_column(String(64), unique=True)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime())
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MessageKind(StrEnum):
    CHAT = "chat"
    DOCUMENT = "document"  # a document of the case file shared into the room
    NOTICE = "notice"  # the room's own lines: admitted, separate session started…


class RoomMessage(Base):
    __tablename__ = "room_messages"
    __table_args__ = (
        UniqueConstraint("meeting_id", "seq", name="uq_room_messages_seq"),
        # A resend with the same client id is stored once.
        UniqueConstraint("meeting_id", "author_id", "client_id", name="uq_room_messages_client"),
        Index("ix_room_messages_session", "meeting_id", "session_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id"))
    seq: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(10), default=MessageKind.CHAT)
    # The separate session it was said in (visible to its members only), or None: the joint one.
    session_id: Mapped[int | None] = mapped_column(ForeignKey("room_sessions.id"), nullable=True)
    # A separate session's party, copied here so visibility is one comparison.
    side: Mapped[str | None] = mapped_column(String(12), nullable=True)
    body: Mapped[str] = mapped_column(Text)
    document_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class RoomCode(Base):
    """A one-time code e-mailed to a party to confirm its acceptance of the agreement."""

    __tablename__ = "room_codes"

    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id"), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)  # the agreement text it confirms
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
