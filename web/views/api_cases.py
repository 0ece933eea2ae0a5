"""The JSON API for cases, their request form, documents and timeline (``/api/v1``).

The same domain operations as the pages, with the same rules: a case somebody has no part in
is ``not_found``, whatever the id; errors are ``{"error": {"code", "message"[, "fields"]}}``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from cases.alerts import CaseNotice
from cases.casefile import Case, CaseEvent, list_cases
from cases.documents import Document
from cases.filing import Review
from cases.lifecycle import Actor
from cases.request import Checked, Section
from core.errors import ErrorCode, UserError
from web.context import require, services
from web.forms import json_object
from web.streams import attachment, parse_id
from web.views.cases import (
    PAGE_SIZE,
    case_id_of,
    page_action,
    page_number,
    parse_filter,
    receive_document,
)

routes = web.RouteTableDef()
# What the company's side does not read of the applicant's answers.
APPLICANT_ONLY = frozenset(
    {"customer_tax_code", "customer_email", "customer_language", "notes", "mandate_to_settle"}
)


def when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def case_json(case: Case, actor: Actor | None = None) -> dict[str, Any]:
    answers = dict(case.answers or {})
    if actor == Actor.COMPANY:
        answers = {k: v for k, v in answers.items() if k not in APPLICANT_ONLY}
    return {
        "id": str(case.id),
        "code": case.code,
        "status": case.status,
        "outcome": case.outcome,
        "sector": case.sector,
        "company_id": str(case.company_id) if case.company_id else None,
        "customer_name": case.customer_name,
        "delegated": case.delegate_id is not None,
        "meeting_mode": case.meeting_mode,
        "availability": case.availability or [],
        "created_at": when(case.created_at),
        "submitted_at": when(case.submitted_at),
        "closed_at": when(case.closed_at),
        "integration_due_at": when(case.integration_due_at),
        "company_confirmed_at": when(case.company_confirmed_at),
        **({"answers": answers} if actor is not None else {}),
    }


def event_json(event: CaseEvent) -> dict[str, Any]:
    return {
        "at": when(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "note": event.note,
    }


def document_json(document: Document) -> dict[str, Any]:
    return {
        "id": str(document.id),
        "name": document.name,
        "size": document.size,
        "sha256": document.sha256,
        "category": document.category,
        "description": document.description,
        "visible_to_other_party": document.visible_to_other_party,
        "added_as": document.added_as,
        "added_at": when(document.added_at),
    }


def notice_json(notice: CaseNotice) -> dict[str, Any]:
    return {
        "at": when(notice.at),
        "audience": notice.audience,
        "email": notice.email,
        "kind": notice.kind,
        "subject": notice.subject,
    }


def checked_json(checked: Checked) -> dict[str, Any]:
    return {
        "complete": checked.ok,
        "errors": {k: [c.value for c in codes] for k, codes in checked.errors.items()},
    }


def review_json(review: Review) -> dict[str, Any]:
    return {
        "sections": {s.value: checked_json(c) for s, c in review.sections.items()},
        "required_documents": [
            {"category": c.value, "present": present} for c, present in review.required
        ],
        "ready": review.ready,
    }


@routes.get("/api/v1/cases")
async def api_cases(request: web.Request) -> web.StreamResponse:
    account = require(request)
    where = parse_filter(request.query)
    number = page_number(request.query)
    async with services(request).db.session() as session:
        rows, total = await list_cases(
            session, account, where, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
        )
    return web.json_response(
        {
            "cases": [case_json(c) for c in rows],
            "total": total,
            "page": number,
            "page_size": PAGE_SIZE,
        }
    )


@routes.post("/api/v1/cases")
async def api_case_start(request: web.Request) -> web.StreamResponse:
    account = require(request)
    body = await json_object(request)
    case, checked = await services(request).filing.do_start(account, body)
    return web.json_response(
        {"case": case_json(case, Actor.APPLICANT), "applicant": checked_json(checked)}, status=201
    )


@routes.get("/api/v1/cases/{case_id}")
async def api_case(request: web.Request) -> web.StreamResponse:
    account = require(request)
    case, actor = await services(request).files.get_for(account, case_id_of(request))
    return web.json_response(case_json(case, actor))


@routes.put("/api/v1/cases/{case_id}/request/{section}")
async def api_case_section(request: web.Request) -> web.StreamResponse:
    account = require(request)
    try:
        section = Section(request.match_info["section"])
    except ValueError:
        raise UserError(ErrorCode.NOT_FOUND) from None
    body = await json_object(request)
    _case, checked = await services(request).filing.do_save(
        account, case_id_of(request), section, body
    )
    return web.json_response({"section": section.value, **checked_json(checked)})


@routes.get("/api/v1/cases/{case_id}/review")
async def api_case_review(request: web.Request) -> web.StreamResponse:
    account = require(request)
    review = await services(request).filing.review(account, case_id_of(request))
    return web.json_response(review_json(review))


@routes.post("/api/v1/cases/{case_id}/submit")
async def api_case_submit(request: web.Request) -> web.StreamResponse:
    account = require(request)
    case = await services(request).filing.do_submit(account, case_id_of(request))
    return web.json_response(case_json(case, Actor.APPLICANT))


@routes.post("/api/v1/cases/{case_id}/steps/{action}")
async def api_case_step(request: web.Request) -> web.StreamResponse:
    account = require(request)
    action = page_action(request)
    body = await json_object(request) if request.content_length else {}
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise UserError(ErrorCode.BAD_REQUEST, "note must be a string")
    step = await services(request).files.do_step(
        account, case_id_of(request), action, (note or "").strip()[:2000] or None
    )
    _case, actor = await services(request).files.get_for(account, step.case.id)
    return web.json_response(case_json(step.case, actor))


@routes.post("/api/v1/cases/{case_id}/confirm")
async def api_case_confirm(request: web.Request) -> web.StreamResponse:
    account = require(request)
    case = await services(request).files.do_confirm_participation(account, case_id_of(request))
    return web.json_response(case_json(case, Actor.COMPANY))


@routes.get("/api/v1/cases/{case_id}/timeline")
async def api_case_timeline(request: web.Request) -> web.StreamResponse:
    account = require(request)
    svc = services(request)
    case, actor = await svc.files.get_for(account, case_id_of(request))
    events = await svc.files.timeline(case.id, actor)
    return web.json_response({"events": [event_json(e) for e in events]})


@routes.get("/api/v1/cases/{case_id}/notices")
async def api_case_notices(request: web.Request) -> web.StreamResponse:
    account = require(request)
    svc = services(request)
    case, actor = await svc.files.get_for(account, case_id_of(request))
    async with svc.db.session() as session:
        notices = await svc.alerts.notices(session, case.id)
    if actor in (Actor.APPLICANT, Actor.COMPANY):
        notices = [n for n in notices if n.audience == actor.value]
    return web.json_response({"notices": [notice_json(n) for n in notices]})


@routes.get("/api/v1/cases/{case_id}/documents")
async def api_case_documents(request: web.Request) -> web.StreamResponse:
    account = require(request)
    documents = await services(request).documents.list_for(account, case_id_of(request))
    return web.json_response({"documents": [document_json(d) for d in documents]})


@routes.post("/api/v1/cases/{case_id}/documents")
async def api_document_upload(request: web.Request) -> web.StreamResponse:
    account = require(request)
    document, replayed = await receive_document(request, account, case_id_of(request))
    if replayed:  # the same Idempotency-Key again: the first upload's document
        return web.json_response(document_json(document), headers={"Idempotent-Replayed": "true"})
    return web.json_response(document_json(document), status=201)


@routes.get("/api/v1/documents/{document_id}")
async def api_document(request: web.Request) -> web.StreamResponse:
    account = require(request)
    document_id: uuid.UUID = parse_id(request.match_info["document_id"])
    document = await services(request).documents.get_for(account, document_id)
    return web.json_response(document_json(document))


@routes.get("/api/v1/documents/{document_id}/content")
async def api_document_content(request: web.Request) -> web.StreamResponse:
    account = require(request)
    svc = services(request)
    document = await svc.documents.get_for(account, parse_id(request.match_info["document_id"]))
    return attachment(svc.storage.path(document.storage_key), document.name)
