"""Case pages: the request form, the case file, lists with export, documents in and out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from cases.accounts import Account, Role, Status
from cases.casefile import Case, CaseFilter, list_cases
from cases.companies import Company, list_companies
from cases.documents import Document
from cases.filing import Review
from cases.lifecycle import OUTCOME_LABELS, STATUS_LABELS, Action, Actor, CaseStatus, possible
from cases.request import ALL_SLOTS, SECTIONS, SLOT_TIMES, WEEKDAYS, Section
from cases.supply import Sector
from cases.uploads import CONCILIATION_EXTENSIONS, CONCILIATION_MAX_FILE
from core.clock import ROME
from core.errors import ErrorCode, FieldErrors, UserError
from core.i18n import N_
from scheduling.bookings import EXTENDABLE
from web import labels
from web.context import ctx, render, require, safe_next, services
from web.exports import export_response, wanted
from web.forms import form_data, form_list
from web.streams import attachment, next_part, open_reader, parse_id, part_chunks, read_field

routes = web.RouteTableDef()
PAGE_SIZE = 50
EXPORT_MAX = 10_000
FIELD_MAX = 10_000  # bytes of a plain field in an upload form
PARTS_MAX = 20  # parts of an upload form (its few fields and the file)
UPLOAD_OVERHEAD = 64 * 1024  # multipart framing and the small fields around the file
# The steps people take from the case file page (the others belong to scheduling and rooms).
PAGE_ACTIONS = frozenset(
    {
        Action.ADMIT,
        Action.DECLARE_NOT_ADMISSIBLE,
        Action.REQUEST_INTEGRATION,
        Action.COMPLETE_INTEGRATION,
        Action.WITHDRAW,
    }
)


def case_id_of(request: web.Request) -> uuid.UUID:
    return parse_id(request.match_info["case_id"])


def local(moment: datetime | None) -> str:
    return moment.astimezone(ROME).strftime("%d/%m/%Y %H:%M") if moment else ""


def parse_filter(query: Mapping[str, str]) -> CaseFilter:
    """The list's filters from the query string; a value that is not one of ours is refused."""
    try:
        status = CaseStatus(query["status"]) if query.get("status") else None
        sector = Sector(query["sector"]) if query.get("sector") else None
        company = uuid.UUID(query["company"]) if query.get("company") else None
        start = date.fromisoformat(query["from"]) if query.get("from") else None
        end = date.fromisoformat(query["to"]) if query.get("to") else None
    except ValueError:
        raise UserError(ErrorCode.BAD_REQUEST) from None
    if any(d is not None and not 2000 <= d.year <= 2999 for d in (start, end)):
        raise UserError(ErrorCode.BAD_REQUEST, "dates from the year 2000 on")
    return CaseFilter(
        status=status,
        sector=sector,
        company_id=company,
        text=query.get("q", "").strip()[:40],
        submitted_from=datetime.combine(start, time(), ROME) if start else None,
        submitted_before=datetime.combine(end + timedelta(days=1), time(), ROME) if end else None,
    )


def page_number(query: Mapping[str, str]) -> int:
    value = query.get("page", "1")
    return int(value) if value.isdigit() and 0 < int(value) < 100_000 else 1


def export_rows(rows: list[Case], companies: dict[uuid.UUID, str], gettext: Any) -> list[list[str]]:
    return [
        [
            case.code or "",
            gettext(STATUS_LABELS[case.status]),
            gettext(OUTCOME_LABELS[case.outcome]) if case.outcome else "",
            case.customer_name or "",
            companies.get(case.company_id, "") if case.company_id else "",
            gettext(labels.SECTOR[Sector(case.sector)]) if case.sector else "",
            case.meeting_mode or "",
            local(case.submitted_at),
            local(case.closed_at),
        ]
        for case in rows
    ]


async def company_names(request: web.Request) -> dict[uuid.UUID, str]:
    return {c.id: c.name for c in await list_companies(services(request).db)}


@routes.get("/cases", name="cases")
async def cases_list(request: web.Request) -> web.StreamResponse:
    account = require(request)
    where = parse_filter(request.query)
    kind = wanted(request)
    names = await company_names(request)
    async with services(request).db.session() as session:
        if kind is not None:
            rows, _total = await list_cases(session, account, where, limit=EXPORT_MAX)
            gettext = ctx(request).gettext
            header = [gettext(h) for h in EXPORT_HEADERS]
            return export_response(kind, "cases", header, export_rows(rows, names, gettext))
        number = page_number(request.query)
        rows, total = await list_cases(
            session, account, where, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
        )
    query = {k: v for k, v in request.query.items() if k not in ("page", "format")}
    return render(
        request,
        "cases.html",
        rows=rows,
        total=total,
        page=number,
        pages=max(1, -(-total // PAGE_SIZE)),
        query=query,
        query_string="&".join(f"{quote(k)}={quote(v)}" for k, v in query.items()),
        companies=names,
        statuses=[(s.value, STATUS_LABELS[s]) for s in CaseStatus],
        sectors=[(s.value, labels.SECTOR[s]) for s in Sector],
        status_labels=STATUS_LABELS,
        outcome_labels=OUTCOME_LABELS,
        sector_labels=labels.SECTOR,
        local=local,
        may_file=account.role in (Role.CUSTOMER, Role.DELEGATE, Role.HELPDESK, Role.ADMIN),
    )


EXPORT_HEADERS = (
    N_("Code"),
    N_("Status"),
    N_("Outcome"),
    N_("Customer"),
    N_("Company"),
    N_("Sector"),
    N_("Meeting mode"),
    N_("Submitted"),
    N_("Closed"),
)


# ---- the request form ------------------------------------------------------------------


def section_of(request: web.Request) -> Section:
    try:
        return Section(request.match_info["section"])
    except ValueError:
        raise UserError(ErrorCode.NOT_FOUND) from None


async def section_page(
    request: web.Request,
    section: Section,
    case: Case | None,
    answers: Mapping[str, Any],
    errors: Mapping[str, list[ErrorCode]],
    params: Mapping[str, Mapping[str, str]],
    *,
    status: int = 200,
    saved: bool = False,
) -> web.Response:
    account = require(request)
    companies = await list_companies(services(request).db, only_active=True)
    gettext = ctx(request).gettext

    def translated(pairs: Mapping[Any, str]) -> list[tuple[str, str]]:
        return [(str(key), gettext(text)) for key, text in pairs.items()]

    form = {k: v for k, v in answers.items() if isinstance(v, str)}
    chosen = answers.get("availability")
    return render(
        request,
        "request_section.html",
        status=status,
        section=section.value,
        sections=[(s.value, labels.SECTION[s]) for s in SECTIONS],
        case=case,
        form=form,
        chosen_slots=chosen if isinstance(chosen, list) else [],
        errors=errors,
        error_params=params,
        saved=saved,
        filer_role=account.role,
        customer_kinds=translated(labels.CUSTOMER_KIND),
        acting_options=translated(labels.ACTING_AS),
        sectors=translated(labels.SECTOR),
        companies=[(str(c.id), c.name) for c in companies],
        disputes=translated(labels.DISPUTE),
        modes=translated(labels.MODE),
        weekdays=[(d, labels.WEEKDAY[d]) for d in WEEKDAYS],
        slot_times=SLOT_TIMES,
    )


def sent_answers(form: dict[str, str], slots: list[str]) -> dict[str, object]:
    sent: dict[str, object] = dict(form)
    sent["availability"] = [s for s in slots if s in ALL_SLOTS] + [
        s for s in slots if s not in ALL_SLOTS
    ]
    return sent


def next_section(section: Section) -> str:
    index = SECTIONS.index(section)
    return SECTIONS[index + 1].value if index + 1 < len(SECTIONS) else "summary"


@routes.get("/cases/new")
async def request_new(request: web.Request) -> web.StreamResponse:
    account = require(request, (Role.CUSTOMER, Role.DELEGATE, Role.HELPDESK, Role.ADMIN))
    start: dict[str, str] = {}
    if account.role == Role.DELEGATE:
        start = {"acting_as": "delegate"}
    elif account.role == Role.CUSTOMER:
        start = {"customer_kind": "person", "acting_as": "self"}
    else:
        start = {"customer_kind": "person", "acting_as": "self", "customer_language": "it"}
    return await section_page(request, Section.APPLICANT, None, start, {}, {})


@routes.post("/cases/new")
async def request_start(request: web.Request) -> web.StreamResponse:
    account = require(request, (Role.CUSTOMER, Role.DELEGATE, Role.HELPDESK, Role.ADMIN))
    form = await form_data(request)
    case, checked = await services(request).filing.do_start(account, form)
    return after_save(request, case, Section.APPLICANT, checked.ok, form.get("go"))


def after_save(
    request: web.Request, case: Case, section: Section, ok: bool, go: str | None
) -> web.StreamResponse:
    if ok and go != "stay":
        raise web.HTTPSeeOther(f"/cases/{case.id}/request/{next_section(section)}")
    raise web.HTTPSeeOther(f"/cases/{case.id}/request/{section.value}?saved=1")


@routes.get("/cases/{case_id}/request/summary")
async def request_summary(request: web.Request) -> web.StreamResponse:
    account = require(request)
    review = await services(request).filing.review(account, case_id_of(request))
    return await summary_page(request, review)


async def summary_page(
    request: web.Request,
    review: Review,
    *,
    status: int = 200,
    error: ErrorCode | None = None,
    error_params: Mapping[str, object] | None = None,
) -> web.Response:
    account = require(request)
    svc = services(request)
    documents = await svc.documents.list_for(account, review.case.id)
    answers = review.case.answers or {}
    company = None
    if answers.get("company_id"):
        names = await company_names(request)
        try:
            company = names.get(uuid.UUID(str(answers["company_id"])))
        except ValueError:
            company = None
    return render(
        request,
        "request_summary.html",
        status=status,
        case=review.case,
        review=review,
        answers=answers,
        company=company,
        sections=[(s.value, labels.SECTION[s]) for s in SECTIONS],
        documents=documents,
        document_labels=labels.DOCUMENT,
        categories=labels.UPLOAD_CATEGORIES,
        extensions=" ".join(sorted(CONCILIATION_EXTENSIONS)),
        error=error,
        error_message_params=error_params or {},
        local=local,
        labels=labels,
        weekdays=dict(labels.WEEKDAY),
    )


@routes.get("/cases/{case_id}/request/{section}")
async def request_section(request: web.Request) -> web.StreamResponse:
    account = require(request)
    section = section_of(request)
    review = await services(request).filing.review(account, case_id_of(request))
    if review.case.status != CaseStatus.DRAFT:
        raise web.HTTPSeeOther(f"/cases/{review.case.id}")
    checked = review.sections[section]
    saved = request.query.get("saved") == "1"
    # A fresh visit shows no errors for what was never filled in; a saved one shows them all.
    errors = checked.errors if saved else {}
    return await section_page(
        request,
        section,
        review.case,
        review.case.answers or {},
        errors,
        checked.params,
        saved=saved,
    )


@routes.post("/cases/{case_id}/request/{section}")
async def request_save(request: web.Request) -> web.StreamResponse:
    account = require(request)
    section = section_of(request)
    form = await form_data(request)
    slots = await form_list(request, "availability")
    case, checked = await services(request).filing.do_save(
        account, case_id_of(request), section, sent_answers(form, slots)
    )
    if not checked.ok and form.get("go") != "stay":
        return await section_page(
            request,
            section,
            case,
            case.answers or {},
            checked.errors,
            checked.params,
            status=422,
        )
    return after_save(request, case, section, checked.ok, form.get("go"))


@routes.post("/cases/{case_id}/submit")
async def request_submit(request: web.Request) -> web.StreamResponse:
    account = require(request)
    svc = services(request)
    case_id = case_id_of(request)
    try:
        case = await svc.filing.do_submit(account, case_id)
    except FieldErrors:
        raise
    except UserError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            raise
        review = await svc.filing.review(account, case_id)
        return await summary_page(
            request, review, status=422, error=exc.code, error_params=exc.params
        )
    raise web.HTTPSeeOther(f"/cases/{case.id}?submitted=1")


# ---- the case file ---------------------------------------------------------------------


async def case_view(request: web.Request, account: Account, case_id: uuid.UUID) -> dict[str, Any]:
    """Everything the case file shows to ``account`` (parties, timeline, documents, mails)."""
    svc = services(request)
    case, actor = await svc.files.get_for(account, case_id)
    documents = await svc.documents.list_for(account, case_id)
    events = await svc.files.timeline(case_id, actor)
    async with svc.db.session() as session:
        notices = await svc.alerts.notices(session, case_id)
        people_ids = {e.account_id for e in events if e.account_id} | {
            d.added_by_id for d in documents
        }
        for one in (case.customer_id, case.delegate_id):
            if one:
                people_ids.add(one)
        found = await session.scalars(select(Account).where(Account.id.in_(people_ids)))
        people = {a.id: a for a in found}
        company = await session.get(Company, case.company_id) if case.company_id else None
        meeting = await svc.bookings.meeting_of(session, case.id)
        held = (
            await svc.bookings.held_meeting(session, case.id)
            if case.status == CaseStatus.MEETING_HELD
            else None
        )
        window = (
            await svc.bookings.window(session, case, await svc.bookings.calendar(session))
            if case.status in EXTENDABLE
            else None
        )
        conciliators: list[Account] = []
        if actor in (Actor.SCHEDULER, Actor.CONCILIATOR):
            conciliators = list(
                await session.scalars(
                    select(Account)
                    .where(Account.role == Role.CONCILIATOR, Account.status == Status.ACTIVE)
                    .order_by(Account.last_name, Account.first_name)
                )
            )
        for one_meeting in (meeting, held):
            if one_meeting is not None and one_meeting.conciliator_id not in people:
                people.update(
                    {a.id: a for a in [await session.get(Account, one_meeting.conciliator_id)] if a}
                )
    now = svc.clock.now()
    rules = svc.bookings.rules
    if actor in (Actor.APPLICANT, Actor.COMPANY):
        notices = [n for n in notices if n.audience == actor.value]
    return {
        "case": case,
        "actor": actor,
        "documents": documents,
        "events": events,
        "notices": notices,
        "people": people,
        "company": company,
        "meeting": meeting,
        "held": held,
        "window": window,
        "conciliators": conciliators,
        # The "join" button: for the meeting's participants, from when its room opens.
        "joins": meeting is not None
        and (
            actor in (Actor.APPLICANT, Actor.COMPANY)
            or (actor == Actor.CONCILIATOR and meeting.conciliator_id == account.id)
        ),
        "room_open": meeting is not None and rules.room_open(meeting, now),
        # Once the conciliator opened the room the meeting counts as held: its participants
        # still find their way back to the room while it admits connections.
        "rejoins": held is not None
        and rules.room_open(held, now)
        and (
            actor in (Actor.APPLICANT, Actor.COMPANY)
            or (actor == Actor.CONCILIATOR and held.conciliator_id == account.id)
        ),
        "room_opens": rules.room_opens(meeting) if meeting is not None else None,
        "room_opens_minutes": rules.room_opens_minutes,
        "extension_days": rules.extension_days,
        "slots": SLOT_TIMES,
    }


def person_name(people: Mapping[uuid.UUID, Any], account_id: uuid.UUID | None) -> str:
    person = people.get(account_id) if account_id else None
    return f"{person.first_name} {person.last_name}" if person else ""


@routes.get("/cases/{case_id}", name="case")
async def case_page(request: web.Request) -> web.StreamResponse:
    account = require(request)
    view = await case_view(request, account, case_id_of(request))
    case: Case = view["case"]
    if case.status == CaseStatus.DRAFT:
        raise web.HTTPSeeOther(f"/cases/{case.id}/request/summary")
    actions = [a for a in possible(CaseStatus(case.status), view["actor"]) if a in PAGE_ACTIONS]
    return render(
        request,
        "case.html",
        **view,
        actions=actions,
        may_confirm=view["actor"] == Actor.COMPANY
        and case.status in (CaseStatus.ADMITTED, CaseStatus.SCHEDULED)
        and case.company_confirmed_at is None,
        may_upload=case.status != CaseStatus.CLOSED,
        submitted=request.query.get("submitted") == "1",
        person_name=person_name,
        local=local,
        labels=labels,
        status_labels=STATUS_LABELS,
        outcome_labels=OUTCOME_LABELS,
        categories=labels.UPLOAD_CATEGORIES,
        document_labels=labels.DOCUMENT,
        extensions=" ".join(sorted(CONCILIATION_EXTENSIONS)),
        weekdays=dict(labels.WEEKDAY),
    )


def page_action(request: web.Request) -> Action:
    """The step named in the URL, if it is one people take from the case file."""
    try:
        action = Action(request.match_info["action"])
    except ValueError:
        raise UserError(ErrorCode.NOT_FOUND) from None
    if action not in PAGE_ACTIONS:
        raise UserError(ErrorCode.NOT_FOUND)
    return action


@routes.post("/cases/{case_id}/steps/{action}")
async def case_step(request: web.Request) -> web.StreamResponse:
    account = require(request)
    action = page_action(request)
    form = await form_data(request)
    note = form.get("note", "").strip()[:2000] or None
    case_id = case_id_of(request)
    await services(request).files.do_step(account, case_id, action, note)
    raise web.HTTPSeeOther(f"/cases/{case_id}")


@routes.post("/cases/{case_id}/confirm")
async def case_confirm(request: web.Request) -> web.StreamResponse:
    account = require(request)
    case_id = case_id_of(request)
    await services(request).files.do_confirm_participation(account, case_id)
    raise web.HTTPSeeOther(f"/cases/{case_id}")


# ---- documents in and out --------------------------------------------------------------


async def receive_document(
    request: web.Request, account: Account, case_id: uuid.UUID
) -> tuple[Document, bool]:
    """Stream a multipart upload straight into storage: the fields come first, then the file.

    Nothing is buffered: a file over the limit is cut off while it arrives (413). With an
    idempotency key (the ``Idempotency-Key`` header, or the form's ``upload_key`` field) a
    retry gets the first upload's document back instead of adding it again (``True``)."""
    length = request.content_length
    if length is not None and length > CONCILIATION_MAX_FILE + UPLOAD_OVERHEAD:
        raise UserError(ErrorCode.FILE_TOO_LARGE)
    reader = await open_reader(request)
    fields: dict[str, str] = {}
    for _count in range(PARTS_MAX):
        part = await next_part(reader)
        if part is None:
            break
        if part.filename is None:
            if part.name:
                fields[part.name] = await read_field(part, FIELD_MAX)
            continue
        if part.name != "file":
            raise UserError(ErrorCode.BAD_REQUEST)
        return await services(request).documents.add_once(
            account,
            case_id,
            request.headers.get("Idempotency-Key", fields.get("upload_key") or None),
            filename=part.filename,
            chunks=part_chunks(part),
            category=fields.get("category"),
            description=fields.get("description"),
            visible_to_other_party=fields.get("visible_to_other_party", ""),
        )
    else:
        raise UserError(ErrorCode.BAD_REQUEST, "too many parts")
    raise FieldErrors({"file": [ErrorCode.REQUIRED]})


@routes.post("/cases/{case_id}/documents")
async def document_upload(request: web.Request) -> web.StreamResponse:
    account = require(request)
    case_id = case_id_of(request)
    back = safe_next(request.query.get("next"), f"/cases/{case_id}")
    await receive_document(request, account, case_id)
    raise web.HTTPSeeOther(back)


@routes.get("/documents/{document_id}")
async def document_download(request: web.Request) -> web.StreamResponse:
    account = require(request)
    svc = services(request)
    document = await svc.documents.get_for(account, parse_id(request.match_info["document_id"]))
    return attachment(svc.storage.path(document.storage_key), document.name)
