"""Scheduling resources on pages: the conciliators' working days, daily limits and absences and
the companies' parallel meetings (admins and schedulers), and a conciliator's own agenda."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from itertools import groupby
from typing import Any, Literal

from aiohttp import web

from cases.accounts import Role
from core.errors import ErrorCode, FieldErrors, UserError
from web import labels
from web.context import STATUS, ctx, render, require, services
from web.forms import form_data, form_list
from web.streams import parse_id
from web.views.cases import local

routes = web.RouteTableDef()
ARRANGERS = (Role.ADMIN, Role.SCHEDULER)
CONCILIATORS = (Role.CONCILIATOR,)
WEEKDAY_NAMES = list(labels.WEEKDAY.values())
AGENDA_WEEKS = 4
MAX_AGENDA_WEEKS = 12
# Refusals that are not about one field are shown next to the field they concern.
FIELD_OF = {
    ErrorCode.WEEKDAY_HAS_MEETINGS: "weekdays",
    ErrorCode.DAILY_LIMIT_BELOW_BOOKED: "max_per_day",
    ErrorCode.ABSENCE_TOO_LONG: "last_day",
    ErrorCode.ABSENCE_HAS_MEETINGS: "first_day",
    ErrorCode.ABSENCE_EXISTS: "first_day",
    ErrorCode.CAPACITY_BELOW_BOOKED: "per_slot",
}
# These are no form's business: the usual error page.
NOT_A_FORM_ERROR = frozenset({ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND})


def refusal(request: web.Request, exc: UserError, field: str) -> tuple[int, dict[str, list[str]]]:
    """The status and the messages by field of a refused form (``field`` when no other fits);
    forbidden and not found are raised again for the error page."""
    context = ctx(request)
    if isinstance(exc, FieldErrors):
        return 422, {
            name: [context.error_text(code) for code in codes] for name, codes in exc.fields.items()
        }
    if exc.code in NOT_A_FORM_ERROR:
        raise exc
    text = context.error_text(exc.code, **exc.params)
    return STATUS.get(exc.code, 422), {FIELD_OF.get(exc.code, field): [text]}


def day_in_path(request: web.Request) -> date:
    try:
        return date.fromisoformat(request.match_info["day"])
    except ValueError:
        raise UserError(ErrorCode.NOT_FOUND) from None


def absence_form(form: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "absence",
        "first_day": form.get("first_day", "")[:10],
        "last_day": form.get("last_day", "")[:10],
    }


async def _arranger_page(
    request: web.Request,
    page: Literal["conciliators", "capacities"],
    *,
    status: int = 200,
    target: uuid.UUID | None = None,
    form: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> web.Response:
    """The conciliators' or the companies' page; after a refusal, ``target`` is the row whose
    form was refused, ``form`` what was typed in it and ``errors`` the messages by field (the
    weekday names go to both: only the conciliators' page shows them)."""
    account = require(request, ARRANGERS)
    resources = services(request).resources
    if page == "conciliators":
        rows: Sequence[object] = await resources.conciliators(account)
    else:
        rows = await resources.capacities(account)
    return render(
        request,
        f"{page}.html",
        status=status,
        rows=rows,
        target=target,
        form=form or {},
        errors=errors or {},
        weekday_names=WEEKDAY_NAMES,
        saved=request.query.get("saved") == "1",
    )


# -- conciliators (admins and schedulers) ------------------------------------------------


@routes.get("/admin/conciliators")
async def conciliators_page(request: web.Request) -> web.StreamResponse:
    """Every conciliator's working days, daily limit, absences and meetings to come."""
    return await _arranger_page(request, "conciliators")


def _back(conciliator_id: uuid.UUID) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/admin/conciliators?saved=1#k-{conciliator_id}")


@routes.post("/admin/conciliators/{id}/profile")
async def conciliator_profile(request: web.Request) -> web.StreamResponse:
    account = require(request, ARRANGERS)
    target = parse_id(request.match_info["id"])
    form = await form_data(request)
    weekdays = await form_list(request, "weekdays")
    try:
        await services(request).resources.do_set_profile(
            account, target, weekdays, form.get("max_per_day", "")
        )
    except UserError as exc:
        status, errors = refusal(request, exc, "weekdays")
        kept = {
            "kind": "profile",
            "weekdays": weekdays[:7],
            "max_per_day": form.get("max_per_day", "")[:3],
        }
        return await _arranger_page(
            request, "conciliators", status=status, target=target, form=kept, errors=errors
        )
    raise _back(target)


@routes.post("/admin/conciliators/{id}/absences")
async def conciliator_absence_add(request: web.Request) -> web.StreamResponse:
    account = require(request, ARRANGERS)
    target = parse_id(request.match_info["id"])
    form = await form_data(request)
    try:
        await services(request).resources.do_add_absence(
            account, target, form.get("first_day"), form.get("last_day")
        )
    except UserError as exc:
        status, errors = refusal(request, exc, "first_day")
        return await _arranger_page(
            request,
            "conciliators",
            status=status,
            target=target,
            form=absence_form(form),
            errors=errors,
        )
    raise _back(target)


@routes.post("/admin/conciliators/{id}/absences/{day}/delete")
async def conciliator_absence_remove(request: web.Request) -> web.StreamResponse:
    account = require(request, ARRANGERS)
    target = parse_id(request.match_info["id"])
    day = day_in_path(request)
    try:
        await services(request).resources.do_remove_absence(account, target, day)
    except UserError as exc:
        status, errors = refusal(request, exc, "absences")
        return await _arranger_page(
            request, "conciliators", status=status, target=target, errors=errors
        )
    raise _back(target)


# -- companies' capacity (admins and schedulers) -----------------------------------------


@routes.get("/admin/capacities")
async def capacities_page(request: web.Request) -> web.StreamResponse:
    """How many meetings each company's representatives attend in parallel in one slot."""
    return await _arranger_page(request, "capacities")


@routes.post("/admin/capacities/{id}")
async def capacity_set(request: web.Request) -> web.StreamResponse:
    account = require(request, ARRANGERS)
    target = parse_id(request.match_info["id"])
    form = await form_data(request)
    try:
        await services(request).resources.do_set_capacity(account, target, form.get("per_slot", ""))
    except UserError as exc:
        status, errors = refusal(request, exc, "per_slot")
        kept = {"per_slot": form.get("per_slot", "")[:3]}
        return await _arranger_page(
            request, "capacities", status=status, target=target, form=kept, errors=errors
        )
    raise web.HTTPSeeOther(f"/admin/capacities?saved=1#c-{target}")


# -- a conciliator's own agenda ----------------------------------------------------------


def agenda_weeks(value: str | None) -> int:
    """``?weeks=`` (1 to 12; 4 when absent)."""
    if value is None or value == "":
        return AGENDA_WEEKS
    if not value.isdigit() or not 1 <= int(value) <= MAX_AGENDA_WEEKS:
        raise UserError(ErrorCode.BAD_REQUEST, "weeks: 1 to 12")
    return int(value)


async def _agenda(
    request: web.Request,
    *,
    status: int = 200,
    form: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> web.Response:
    account = require(request, CONCILIATORS)
    resources = services(request).resources
    weeks = agenda_weeks(request.query.get("weeks"))
    first = resources.today()
    last = first + timedelta(weeks=weeks) - timedelta(days=1)
    entries = await resources.agenda(account, first, last)
    me = await resources.conciliator(account, account.id)
    return render(
        request,
        "agenda.html",
        status=status,
        weeks=weeks,
        max_weeks=MAX_AGENDA_WEEKS,
        first=first,
        last=last,
        days=[(day, list(group)) for day, group in groupby(entries, key=lambda e: e.day)],
        me=me,
        form=form or {},
        errors=errors or {},
        weekday_names=WEEKDAY_NAMES,
        mode_labels=labels.MODE,
        local=local,
        saved=request.query.get("saved") == "1",
    )


@routes.get("/agenda")
async def agenda_page(request: web.Request) -> web.StreamResponse:
    """The signed-in conciliator's meetings from today, by day, and their absences."""
    return await _agenda(request)


@routes.post("/agenda/absences")
async def agenda_absence_add(request: web.Request) -> web.StreamResponse:
    account = require(request, CONCILIATORS)
    form = await form_data(request)
    try:
        await services(request).resources.do_add_absence(
            account, account.id, form.get("first_day"), form.get("last_day")
        )
    except UserError as exc:
        status, errors = refusal(request, exc, "first_day")
        return await _agenda(request, status=status, form=absence_form(form), errors=errors)
    raise web.HTTPSeeOther("/agenda?saved=1#absences")


@routes.post("/agenda/absences/{day}/delete")
async def agenda_absence_remove(request: web.Request) -> web.StreamResponse:
    account = require(request, CONCILIATORS)
    day = day_in_path(request)
    try:
        await services(request).resources.do_remove_absence(account, account.id, day)
    except UserError as exc:
        status, errors = refusal(request, exc, "absences")
        return await _agenda(request, status=status, errors=errors)
    raise web.HTTPSeeOther("/agenda?saved=1#absences")
