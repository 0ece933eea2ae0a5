"""The meeting room's page (``GET /meetings/{id}/room``) and the case documents it offers to
share. The page is static HTML plus ``web/static/room.js``, which talks to the ``/meeting``
Socket.IO namespace (``docs/protocol.md``); every string the script shows, the room's error
messages included, comes in the page's JSON data block, in the reader's language."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from cases.accounts import Account
from cases.documents import Category, Document
from cases.lifecycle import OUTCOME_LABELS, Actor, CaseStatus
from cases.uploads import CONCILIATION_EXTENSIONS
from core.errors import ErrorCode
from core.i18n import N_
from rooms.models import RoomOutcome
from rooms.room import AGREEMENT_MAX, MESSAGE_MAX, NOTE_MAX
from scheduling.bookings import Meeting
from web import labels
from web.context import SIGNALING, ctx, render, require, services
from web.messages import IN_ROOM, message_for
from web.streams import parse_id
from web.views.cases import local
from web.views.meetings import CHECK_TEXT

routes = web.RouteTableDef()

WARN_MINUTES = 10  # the countdown warns this long before the slot's end (and cuts no one off)
CLOSE_NOTE_MAX = 2000

# The codes a room page may meet: refused handshakes, event acks, the upload of a document.
ROOM_ERRORS = (
    ErrorCode.BAD_REQUEST,
    ErrorCode.RATE_LIMITED,
    ErrorCode.UNAUTHENTICATED,
    ErrorCode.TOKEN_INVALID,
    ErrorCode.NOT_FOUND,
    ErrorCode.ACCOUNT_DISABLED,
    ErrorCode.INTERNAL,
    ErrorCode.UNAVAILABLE,
    ErrorCode.FORBIDDEN,
    ErrorCode.REQUIRED,
    ErrorCode.TOO_LONG,
    ErrorCode.INVALID_CHOICE,
    ErrorCode.CSRF_FAILED,
    ErrorCode.ROOM_CLOSED,
    ErrorCode.NOT_ADMITTED,
    ErrorCode.REMOVED,
    ErrorCode.MUTED,
    ErrorCode.SEPARATE_SESSION,
    ErrorCode.PROPOSAL_NOT_ASKED,
    ErrorCode.AGREEMENT_CHANGED,
    ErrorCode.ACCEPTANCE_MISSING,
    ErrorCode.NO_AGREEMENT_TEXT,
    ErrorCode.DOCUMENT_PRIVATE,
    ErrorCode.CODE_INVALID,
    ErrorCode.CODE_EXHAUSTED,
    ErrorCode.TRANSITION_REFUSED,
    ErrorCode.FILE_TYPE_NOT_ALLOWED,
    ErrorCode.FILE_CONTENT_MISMATCH,
    ErrorCode.FILE_ARCHIVE_TOO_BIG,
    ErrorCode.FILE_EMPTY,
    ErrorCode.FILE_TOO_LARGE,
)

# What room.js writes on the page (English message ids; ``%(name)s`` filled in by the script).
TEXT: dict[str, str] = {
    "connecting": N_("Connecting to the room…"),
    "connected": N_("Connected to the room."),
    "reconnecting": N_("Connection lost: reconnecting…"),
    "signed_out": N_("Your session has ended: sign in again, then come back to this page."),
    "not_participant": N_("You do not, or no longer, take part in this meeting."),
    "waiting": N_("You are in the waiting room: the conciliator will admit you shortly."),
    "waiting_unopened": N_(
        "You are in the waiting room. The conciliator has not arrived yet: please wait."
    ),
    "turned_away": N_("The conciliator has not admitted you for now."),
    "removed": N_("The conciliator removed you from this meeting."),
    "ended": N_("The meeting is closed. Outcome: %(outcome)s."),
    "ended_minutes": N_(
        "The minutes are drawn up and filed in the case file, where you will find them shortly."
    ),
    "someone_waiting": N_("%(name)s is waiting to be admitted."),
    "you": N_("(you)"),
    "online": N_("online"),
    "offline": N_("offline"),
    "state_waiting": N_("waiting to be admitted"),
    "state_turned_away": N_("not admitted"),
    "state_removed": N_("removed"),
    "muted": N_("muted"),
    "asked_proposal": N_("asked for a settlement proposal"),
    "accepted_version": N_("accepted version %(version)s"),
    "admit": N_("Admit"),
    "turn_away": N_("Turn away"),
    "turn_away_note": N_("Message for %(name)s (optional)"),
    "confirm_turn_away": N_("Turn %(name)s away from the meeting for now?"),
    "mute": N_("Mute"),
    "unmute": N_("Unmute"),
    "remove": N_("Remove"),
    "confirm_remove": N_(
        "Remove %(name)s from the meeting? They will not be able to come back to it."
    ),
    "actions_for": N_("Actions for %(name)s"),
    "notice_admitted": N_("%(name)s joined the meeting."),
    "notice_removed": N_("%(name)s was removed from the meeting."),
    "notice_accepted": N_("%(name)s accepted the agreement."),
    "notice_joint_session": N_("Everyone is back in the joint session."),
    "notice_separate_session_applicant": N_(
        "The conciliator began a separate session with the applicant."
    ),
    "notice_separate_session_company": N_(
        "The conciliator began a separate session with the company."
    ),
    "shared": N_("shared a document:"),
    "separate_tag": N_("separate session"),
    "typing_one": N_("%(name)s is writing…"),
    "typing_many": N_("%(names)s are writing…"),
    "not_sent": N_("Not sent: the connection is down. Press Send again to retry."),
    "banner_excluded": N_(
        "The conciliator is speaking with the other party in a separate session. Please wait:"
        " you will be back in the joint session shortly, and cannot write meanwhile."
    ),
    "banner_mine": N_("Separate session: only you and the conciliator read these messages."),
    "banner_chair_applicant": N_(
        "Separate session with the applicant: the company does not read these messages."
    ),
    "banner_chair_company": N_(
        "Separate session with the company: the applicant does not read these messages."
    ),
    "starts_in": N_("The meeting starts in %(time)s."),
    "time_left": N_("Time left in the slot: %(time)s"),
    "time_over": N_(
        "The slot's time is over: the meeting goes on until the conciliator closes it."
    ),
    "time_warning": N_(
        "%(minutes)s minutes left in the slot. Nobody will be cut off: the conciliator decides"
        " when to close the meeting."
    ),
    "no_agreement": N_("The conciliator has not written an agreement yet."),
    "agreement_version": N_("Version %(version)s"),
    "agreement_proposal": N_("Settlement proposal of the conciliator"),
    "agreement_draft": N_("Agreement text"),
    "agreement_changed_live": N_(
        "The text of the agreement changed (version %(version)s): read it again."
    ),
    "code_sent": N_("We sent a code to %(address)s: it is valid for ten minutes."),
    "you_accepted": N_("You accepted version %(version)s."),
    "you_asked": N_("You asked for a settlement proposal."),
    "draft_saved": N_("Version %(version)s is shown to the parties."),
    "confirm_close": N_("Close the meeting with the outcome “%(outcome)s”? It cannot be undone."),
    "lobby_note_saved": N_("The message for the waiting room is saved."),
    "no_shared": N_("No documents shared yet."),
    "no_documents": N_("The case file has no documents yet."),
    "private_document": N_("for the conciliator only"),
    "uploading": N_("Uploading…"),
    "uploaded": N_("The document is in the case file and shared in the room."),
    "shared_done": N_("Document shared."),
    "sides_applicant": N_("applicant"),
    "sides_company": N_("company"),
    "sides_conciliator": N_("conciliator"),
    # A video meeting's camera, microphone and connection (room-video.js).
    **{key: CHECK_TEXT[key] for key in ("media_denied", "media_missing", "media_busy")},
    "media_unavailable": CHECK_TEXT["media_unavailable"],
    "media_failed": N_("The camera or the microphone did not start (%(reason)s)."),
    "devices_partial": N_("You can still see and hear the others, and write in the chat."),
    "video_unsupported": N_(
        "This browser cannot take part in the video: update it or use another one. The chat"
        " works as usual."
    ),
    "video_off": N_("The video is off for you. Turn it on when you are ready."),
    "video_connecting": N_("Connecting the video…"),
    "video_connected": N_("The video is connected."),
    "video_failed": N_("The video connection failed."),
    "video_failed_chat": N_(
        "You are still in the meeting: go on in the chat while we try again, or use the button."
    ),
    "video_separate": N_(
        "During the separate session you neither see nor hear the others, and they do not see"
        " or hear you."
    ),
    "video_absent": N_("Not in the video, only in the chat: %(names)s."),
    "video_of": N_("Video of %(name)s"),
    "no_video_now": N_("no video"),
    "no_audio_now": N_("no audio"),
    "muted_by_conciliator": N_("microphone cut by the conciliator"),
    "camera_is_off": N_("camera off"),
    "mic_is_off": N_("microphone off"),
    "mic_turn_off": N_("Turn the microphone off"),
    "mic_turn_on": N_("Turn the microphone on"),
    "camera_turn_off": N_("Turn the camera off"),
    "camera_turn_on": N_("Turn the camera on"),
    "you_are_muted": N_("The conciliator cut your microphone: the others do not hear you."),
    "you_are_unmuted": N_("The conciliator gave you back the microphone."),
    "media_mute": N_("Cut the microphone"),
    "media_unmute": N_("Give back the microphone"),
}

OUTCOMES: dict[str, str] = {
    RoomOutcome.AGREEMENT: OUTCOME_LABELS["agreement"],
    RoomOutcome.NO_AGREEMENT: OUTCOME_LABELS["no_agreement"],
    RoomOutcome.ADJOURNMENT: N_("Adjourned to another meeting"),
    RoomOutcome.APPLICANT_ABSENT: OUTCOME_LABELS["applicant_absent"],
    RoomOutcome.COMPANY_ABSENT: OUTCOME_LABELS["company_absent"],
}
SIDE_AS = {
    Actor.APPLICANT: N_("You take part for the applicant."),
    Actor.COMPANY: N_("You take part for the company."),
    Actor.CONCILIATOR: N_("You run this meeting as its conciliator."),
}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def document_entry(
    document: Document, account: Account, gettext: Callable[[str], str]
) -> dict[str, Any]:
    """A case document as the room's picker lists it (plain data: the page shows it as text)."""
    return {
        "id": str(document.id),
        "name": document.name,
        "description": document.description,
        "category": gettext(labels.DOCUMENT[Category(document.category)]),
        "visible": document.visible_to_other_party,
        "mine": document.added_by_id == account.id,
        "side": document.added_as,
        "added_at": iso(document.added_at),
    }


async def seat(request: web.Request) -> tuple[Account, Meeting, Any, Actor]:
    """The signed-in participant and the meeting (``NOT_FOUND`` for anyone else)."""
    account = require(request)
    meeting, case, actor = await services(request).bookings.participation(
        account, parse_id(request.match_info["meeting_id"])
    )
    return account, meeting, case, actor


def room_data(
    request: web.Request,
    account: Account,
    meeting: Meeting,
    case_id: uuid.UUID,
    actor: Actor,
    documents: list[Document],
) -> dict[str, Any]:
    context = ctx(request)
    gettext = context.gettext
    base = f"/meetings/{meeting.id}"
    upload = (
        f"/cases/{case_id}/documents?csrf_token={quote(context.csrf_token, safe='')}"
        f"&next={quote(base + '/documents', safe='')}"
    )
    return {
        "meeting": str(meeting.id),
        "me": str(account.id),
        "side": actor.value,
        "lang": context.lang,
        "starts_at": iso(meeting.starts_at),
        "ends_at": iso(meeting.ends_at),
        "server_time": iso(services(request).clock.now()),
        "warn_minutes": WARN_MINUTES,
        "urls": {
            "token": f"{base}/token",
            "documents": f"{base}/documents",
            "upload": upload,
            "case": f"/cases/{case_id}",
        },
        "documents": [document_entry(d, account, gettext) for d in documents],
        "mode": meeting.mode,
        "media": media_data(request, account, meeting),
        "errors": {
            code.value: gettext(IN_ROOM.get(code, message_for(code))) for code in ROOM_ERRORS
        },
        "text": {key: gettext(value) for key, value in TEXT.items()},
        "outcomes": {key: gettext(value) for key, value in OUTCOMES.items()},
    }


def media_data(request: web.Request, account: Account, meeting: Meeting) -> dict[str, Any] | None:
    """A video meeting's STUN/TURN servers, for the page's first ``RTCPeerConnection`` (each
    ``media_offer`` answer brings them again, TURN credentials renewed)."""
    media = request.app[SIGNALING].media
    if meeting.mode != "video" or media is None:
        return None
    return {"ice_servers": media.ice_servers(str(account.id), time.time())}


@routes.get("/meetings/{meeting_id}/room")
async def room_page(request: web.Request) -> web.StreamResponse:
    account, meeting, case, actor = await seat(request)
    svc = services(request)
    documents = await svc.documents.list_for(account, case.id)
    upload_back = quote(f"/meetings/{meeting.id}/room", safe="")
    return render(
        request,
        "meeting_room.html",
        meeting=meeting,
        case=case,
        actor=actor.value,
        side_as=SIDE_AS[actor],
        labels=labels,
        local=local,
        data=room_data(request, account, meeting, case.id, actor, documents),
        outcomes=OUTCOMES,
        categories=labels.UPLOAD_CATEGORIES,
        extensions=" ".join(sorted(CONCILIATION_EXTENSIONS)),
        may_upload=case.status != CaseStatus.CLOSED,
        upload_back=upload_back,
        message_max=MESSAGE_MAX,
        note_max=NOTE_MAX,
        agreement_max=AGREEMENT_MAX,
        close_note_max=CLOSE_NOTE_MAX,
    )


@routes.get("/meetings/{meeting_id}/documents")
async def room_documents(request: web.Request) -> web.StreamResponse:
    """The case documents the participant may see, for the room's "share" picker (JSON; an
    upload from the room comes back here to learn the new document's id)."""
    account, _meeting, case, _actor = await seat(request)
    documents = await services(request).documents.list_for(account, case.id)
    gettext = ctx(request).gettext
    return web.json_response(
        {"documents": [document_entry(d, account, gettext) for d in documents]},
        headers={"Cache-Control": "no-store"},
    )
