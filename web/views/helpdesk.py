"""The help desk over HTTP: its page and form, the sender's tickets, the operators' queue,
attachment downloads, and the JSON API under ``/api/v1/helpdesk``.

Uploads are never held in memory: the multipart body is read part by part
(``request.multipart()``, which ``client_max_size`` does not limit), text fields first and each
at most ``FIELD_MAX`` bytes, then every file streamed into storage as it arrives with what is
left of the 15 MB budget as its limit. A body announcing more than the budget plus
``FORM_OVERHEAD`` is refused before any byte is read. Text fields must come before the files
(browsers send a form in document order): they are checked when the first file arrives, so a
wrong form is refused before its files are stored. The CSRF token of a multipart post travels in
the ``X-CSRF-Token`` header or the ``csrf_token`` query parameter (see ``web.context``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from cases.accounts import Account
from cases.casefile import rome_time
from cases.helpdesk import (
    BODY_MAX,
    CATEGORY_LABELS,
    OPERATORS,
    STATUS_LABELS,
    SUBJECT_MAX,
    Attachments,
    Category,
    FilesTooLarge,
    NewTicket,
    QueueItem,
    Thread,
    Ticket,
    TicketAttachment,
    TicketStatus,
    check_body,
    check_ticket,
    is_operator,
)
from cases.uploads import HELPDESK_EXTENSIONS, HELPDESK_MAX_TOTAL
from core.errors import ErrorCode, FieldErrors, UserError
from core.i18n import N_
from web.context import client_address, ctx, render, require, services
from web.exports import export_response, wanted
from web.forms import json_object, keep
from web.streams import (
    attachment,
    next_part,
    open_reader,
    parse_id,
    part_chunks,
    read_field,
)

routes = web.RouteTableDef()

FORM_OVERHEAD = 64 * 1024  # what the text fields and part headers of an upload may add
FIELD_MAX = 32 * 1024  # bytes of one text field (a 5000-character message fits)
PARTS_MAX = 30
CHUNK = 64 * 1024
OPERATOR_ROLES = tuple(OPERATORS)
ACCEPT = ",".join(sorted(HELPDESK_EXTENSIONS))

FormCheck = Callable[[dict[str, str]], None]


QUEUE_COLUMNS = (
    N_("Code"),
    N_("Subject"),
    N_("Category"),
    N_("Sender"),
    N_("E-mail"),
    N_("Status"),
    N_("Sent on"),
    N_("Last activity"),
)


def path_id(request: web.Request) -> uuid.UUID:
    """The ticket or attachment named in the URL."""
    return parse_id(request.match_info["id"])


async def stream_form(
    request: web.Request, batch: Attachments, fields: dict[str, str], check: FormCheck
) -> None:
    """Read a multipart form: its text fields into ``fields``, its ``files`` parts into
    ``batch``. ``check`` sees the fields before the first file (or at the end when none)."""
    length = request.content_length
    if length is not None and length > HELPDESK_MAX_TOTAL + FORM_OVERHEAD:
        raise FilesTooLarge()
    checked = False
    reader = await open_reader(request)
    for _count in range(PARTS_MAX + 1):
        part = await next_part(reader)
        if part is None:
            break
        if part.filename is None:
            if checked:
                raise UserError(ErrorCode.BAD_REQUEST, "text fields come before the files")
            fields[part.name or ""] = await read_field(part, FIELD_MAX)
            continue
        if part.name != "files":
            raise UserError(ErrorCode.BAD_REQUEST, "files go in the 'files' field")
        if not checked:
            checked = True
            check(fields)
        if part.filename:  # a file input left empty sends a part without a name
            await batch.add(part.filename, part_chunks(part))
    else:
        raise UserError(ErrorCode.BAD_REQUEST, "too many parts")
    if not checked:
        check(fields)


# -- the actions, shared by pages and API ---------------------------------------------------


async def _create(request: web.Request, fields: dict[str, str]) -> Ticket:
    """A new ticket from a multipart form (with files) or, for the API, a JSON object."""
    context = ctx(request)
    account = context.account
    desk = services(request).helpdesk
    key: str | None = None
    if account is None:
        key = desk.client_key(client_address(request))
        await desk.check_rate(key)  # before a byte of the body is read

    def check(form: dict[str, str] | dict[str, Any]) -> NewTicket:
        return check_ticket(form, signed_in=account is not None, language=context.lang)

    if request.content_type == "application/json" and request.path.startswith("/api/"):
        return await desk.do_create(account, check(await json_object(request)), client_key=key)
    checked: list[NewTicket] = []
    async with desk.attachments() as batch:
        await stream_form(request, batch, fields, lambda form: checked.append(check(form)))
        return await desk.do_create(account, checked[0], files=batch, client_key=key)


async def _add_message(
    request: web.Request,
    account: Account,
    ticket_id: uuid.UUID,
    fields: dict[str, str],
    *,
    staff: bool,
) -> None:
    """A follow-up by the sender or (``staff``) an operator's answer, from multipart or JSON."""
    desk = services(request).helpdesk
    await desk.check_writable(account, ticket_id, staff=staff)  # before reading the body
    do = desk.do_answer if staff else desk.do_follow_up
    if request.content_type == "application/json" and request.path.startswith("/api/"):
        data = await json_object(request)
        await do(account, ticket_id, check_body(data.get("message")))
        return
    texts: list[str] = []
    async with desk.attachments() as batch:
        await stream_form(
            request, batch, fields, lambda form: texts.append(check_body(form.get("message")))
        )
        await do(account, ticket_id, texts[0], files=batch)


def _errors_of(exc: FieldErrors | FilesTooLarge) -> tuple[dict[str, list[ErrorCode]], int]:
    if isinstance(exc, FieldErrors):
        return exc.fields, 422
    return {"files": [exc.code]}, 413


async def _download(request: web.Request) -> web.StreamResponse:
    account = require(request)
    svc = services(request)
    found = await svc.helpdesk.get_attachment(account, path_id(request))
    return attachment(svc.storage.path(found.storage_key), found.name)


# -- pages ----------------------------------------------------------------------------------


def human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} B"


def _labels(request: web.Request) -> dict[str, Any]:
    gettext = ctx(request).gettext
    return {
        "category_labels": CATEGORY_LABELS,
        "status_labels": STATUS_LABELS,
        "category_options": [(c.value, gettext(label)) for c, label in CATEGORY_LABELS.items()],
        "status_options": [(s.value, gettext(label)) for s, label in STATUS_LABELS.items()],
        "when": rome_time,
        "human_size": human_size,
        "accept": ACCEPT,
        "extensions": " ".join(sorted(HELPDESK_EXTENSIONS)),
        "body_max": BODY_MAX,
        "subject_max": SUBJECT_MAX,
        "operator": is_operator(ctx(request).account),
    }


def _helpdesk_page(
    request: web.Request,
    form: dict[str, str],
    errors: dict[str, list[ErrorCode]],
    status: int = 200,
) -> web.Response:
    settings = services(request).settings
    return render(
        request,
        "helpdesk.html",
        status=status,
        form=form,
        errors=errors,
        helpdesk_email=settings.helpdesk_email,
        helpdesk_phone=settings.helpdesk_phone,
        **_labels(request),
    )


@routes.get("/helpdesk")
async def helpdesk(request: web.Request) -> web.StreamResponse:
    """Information, Reports, Support: how to reach the desk, and the form to write to it."""
    return _helpdesk_page(request, {}, {})


@routes.post("/helpdesk")
async def helpdesk_submit(request: web.Request) -> web.StreamResponse:
    fields: dict[str, str] = {}
    try:
        ticket = await _create(request, fields)
    except (FieldErrors, FilesTooLarge) as exc:
        errors, status = _errors_of(exc)
        return _helpdesk_page(request, keep(fields), errors, status)
    if ctx(request).account is not None:
        raise web.HTTPSeeOther(f"/helpdesk/tickets/{ticket.id}?sent=1")
    # Signed out there is no page to come back to: the code is shown here, at once.
    return render(request, "helpdesk_sent.html", ticket=ticket)


@routes.get("/helpdesk/tickets")
async def own_tickets(request: web.Request) -> web.StreamResponse:
    account = require(request)
    tickets = await services(request).helpdesk.list_own(account)
    return render(request, "helpdesk_tickets.html", tickets=tickets, **_labels(request))


def _ticket_page(
    request: web.Request,
    thread: Thread,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, list[ErrorCode]] | None = None,
    status: int = 200,
) -> web.Response:
    account = ctx(request).account
    assert account is not None
    owner = thread.ticket.account_id == account.id
    open_ = thread.ticket.status != TicketStatus.CLOSED
    return render(
        request,
        "helpdesk_ticket.html",
        status=status,
        thread=thread,
        ticket=thread.ticket,
        form=form or {},
        errors=errors or {},
        sent=request.query.get("sent") == "1",
        can_follow_up=owner and open_,
        can_answer=open_ and not owner and is_operator(account),
        can_close=open_ and is_operator(account),
        **_labels(request),
    )


@routes.get("/helpdesk/tickets/{id}")
async def ticket_page(request: web.Request) -> web.StreamResponse:
    account = require(request)
    thread = await services(request).helpdesk.get_thread(account, path_id(request))
    return _ticket_page(request, thread)


async def _message_page(request: web.Request, *, staff: bool) -> web.StreamResponse:
    account = require(request)
    ticket_id = path_id(request)
    fields: dict[str, str] = {}
    try:
        await _add_message(request, account, ticket_id, fields, staff=staff)
    except (FieldErrors, FilesTooLarge) as exc:
        errors, status = _errors_of(exc)
        thread = await services(request).helpdesk.get_thread(account, ticket_id)
        return _ticket_page(request, thread, form=keep(fields), errors=errors, status=status)
    raise web.HTTPSeeOther(f"/helpdesk/tickets/{ticket_id}#last")


@routes.post("/helpdesk/tickets/{id}/messages")
async def follow_up_submit(request: web.Request) -> web.StreamResponse:
    return await _message_page(request, staff=False)


@routes.post("/helpdesk/tickets/{id}/answer")
async def answer_submit(request: web.Request) -> web.StreamResponse:
    return await _message_page(request, staff=True)


@routes.post("/helpdesk/tickets/{id}/close")
async def close_submit(request: web.Request) -> web.StreamResponse:
    account = require(request)
    ticket = await services(request).helpdesk.do_close(account, path_id(request))
    raise web.HTTPSeeOther(f"/helpdesk/tickets/{ticket.id}")


@routes.get("/helpdesk/attachments/{id}")
async def download(request: web.Request) -> web.StreamResponse:
    return await _download(request)


def _filters(request: web.Request) -> tuple[str | None, str | None]:
    return request.query.get("status") or None, request.query.get("category") or None


@routes.get("/desk/helpdesk")
async def queue_page(request: web.Request) -> web.StreamResponse:
    """The operators' queue, filtered by status and category."""
    account = require(request, OPERATOR_ROLES)
    status, category = _filters(request)
    items = await services(request).helpdesk.list_queue(account, status=status, category=category)
    kind = wanted(request)
    if kind is not None:
        gettext = ctx(request).gettext
        header = [gettext(h) for h in QUEUE_COLUMNS]
        table = [
            [
                item.ticket.code,
                item.ticket.subject,
                gettext(CATEGORY_LABELS[Category(item.ticket.category)]),
                item.sender_name,
                item.sender_email,
                gettext(STATUS_LABELS[TicketStatus(item.ticket.status)]),
                rome_time(item.ticket.created_at),
                rome_time(item.ticket.updated_at),
            ]
            for item in items
        ]
        return export_response(kind, "helpdesk", header, table)
    return render(
        request,
        "helpdesk_queue.html",
        items=items,
        status_filter=status or "",
        category_filter=category or "",
        **_labels(request),
    )


# -- JSON API -------------------------------------------------------------------------------


def ticket_json(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": str(ticket.id),
        "code": ticket.code,
        "category": ticket.category,
        "subject": ticket.subject,
        "status": ticket.status,
        "anonymous": ticket.anonymous,
        "created_at": ticket.created_at.isoformat(),
        "updated_at": ticket.updated_at.isoformat(),
    }


def _attachment_json(attachment: TicketAttachment) -> dict[str, Any]:
    return {
        "id": str(attachment.id),
        "name": attachment.name,
        "size": attachment.size,
        "download": f"/api/v1/helpdesk/attachments/{attachment.id}",
    }


def _queue_json(item: QueueItem) -> dict[str, Any]:
    return {
        **ticket_json(item.ticket),
        "sender": {"name": item.sender_name, "email": item.sender_email},
    }


def thread_json(thread: Thread) -> dict[str, Any]:
    return {
        **ticket_json(thread.ticket),
        "sender": {"name": thread.sender_name, "email": thread.sender_email},
        "messages": [
            {
                "id": entry.message.id,
                "from_staff": entry.message.from_staff,
                "author": entry.author,
                "body": entry.message.body,
                "created_at": entry.message.created_at.isoformat(),
                "attachments": [_attachment_json(a) for a in entry.attachments],
            }
            for entry in thread.entries
        ],
    }


@routes.post("/api/v1/helpdesk/tickets")
async def api_create(request: web.Request) -> web.StreamResponse:
    ticket = await _create(request, {})
    return web.json_response(ticket_json(ticket), status=201)


@routes.get("/api/v1/helpdesk/tickets")
async def api_own(request: web.Request) -> web.StreamResponse:
    account = require(request)
    tickets = await services(request).helpdesk.list_own(account)
    return web.json_response({"tickets": [ticket_json(t) for t in tickets]})


@routes.get("/api/v1/helpdesk/queue")
async def api_queue(request: web.Request) -> web.StreamResponse:
    account = require(request, OPERATOR_ROLES)
    status, category = _filters(request)
    items = await services(request).helpdesk.list_queue(account, status=status, category=category)
    return web.json_response({"tickets": [_queue_json(i) for i in items]})


@routes.get("/api/v1/helpdesk/tickets/{id}")
async def api_ticket(request: web.Request) -> web.StreamResponse:
    account = require(request)
    thread = await services(request).helpdesk.get_thread(account, path_id(request))
    return web.json_response(thread_json(thread))


async def _api_message(request: web.Request, *, staff: bool) -> web.StreamResponse:
    account = require(request)
    ticket_id = path_id(request)
    await _add_message(request, account, ticket_id, {}, staff=staff)
    thread = await services(request).helpdesk.get_thread(account, ticket_id)
    return web.json_response(thread_json(thread), status=201)


@routes.post("/api/v1/helpdesk/tickets/{id}/messages")
async def api_follow_up(request: web.Request) -> web.StreamResponse:
    return await _api_message(request, staff=False)


@routes.post("/api/v1/helpdesk/tickets/{id}/answer")
async def api_answer(request: web.Request) -> web.StreamResponse:
    return await _api_message(request, staff=True)


@routes.post("/api/v1/helpdesk/tickets/{id}/close")
async def api_close(request: web.Request) -> web.StreamResponse:
    account = require(request)
    desk = services(request).helpdesk
    ticket = await desk.do_close(account, path_id(request))
    return web.json_response(thread_json(await desk.get_thread(account, ticket.id)))


@routes.get("/api/v1/helpdesk/attachments/{id}")
async def api_download(request: web.Request) -> web.StreamResponse:
    return await _download(request)
