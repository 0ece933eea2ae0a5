"""Administration: accounts of every role, staff creation, company representatives, companies."""

from __future__ import annotations

import uuid

from aiohttp import web

from cases.accounts import STAFF_ROLES, Role, Status
from cases.companies import SECTORS, do_create_company, do_set_company_active, list_companies
from core.errors import ErrorCode, FieldErrors, UserError
from web.context import render, require, services
from web.exports import export_response, wanted
from web.forms import form_data, form_list, keep

routes = web.RouteTableDef()
ADMIN = (Role.ADMIN,)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UserError(ErrorCode.NOT_FOUND) from None


@routes.get("/admin")
async def admin_home(request: web.Request) -> web.StreamResponse:
    require(request, ADMIN)
    raise web.HTTPSeeOther("/admin/accounts")


@routes.get("/admin/accounts")
async def accounts_list(request: web.Request) -> web.StreamResponse:
    require(request, ADMIN)
    svc = services(request)
    role = request.query.get("role") or None
    status = request.query.get("status") or None
    if role is not None and role not in set(Role):
        raise UserError(ErrorCode.INVALID_CHOICE)
    if status is not None and status not in set(Status):
        raise UserError(ErrorCode.INVALID_CHOICE)
    rows = await svc.accounts.list(role=role, status=status)
    companies = {c.id: c.name for c in await list_companies(svc.db)}
    kind = wanted(request)
    if kind is not None:
        header = [
            "username",
            "first_name",
            "last_name",
            "email",
            "role",
            "status",
            "company",
            "created_at",
            "last_login_at",
        ]
        table = [
            [
                a.username,
                a.first_name,
                a.last_name,
                a.email,
                a.role,
                a.status,
                companies.get(a.company_id, "") if a.company_id else "",
                a.created_at.isoformat(),
                a.last_login_at.isoformat() if a.last_login_at else "",
            ]
            for a in rows
        ]
        return export_response(kind, "accounts", header, table)
    return render(
        request,
        "admin_accounts.html",
        rows=rows,
        companies=companies,
        roles=list(Role),
        statuses=list(Status),
        role_filter=role or "",
        status_filter=status or "",
    )


@routes.get("/admin/accounts/new")
async def staff_form(request: web.Request) -> web.StreamResponse:
    require(request, ADMIN)
    return render(
        request,
        "admin_account_new.html",
        form={"role": "conciliator"},
        errors={},
        roles=sorted(STAFF_ROLES),
    )


@routes.post("/admin/accounts/new")
async def staff_submit(request: web.Request) -> web.StreamResponse:
    require(request, ADMIN)
    form = await form_data(request)
    try:
        account, _link = await services(request).accounts.do_create_account(form)
    except FieldErrors as exc:
        return render(
            request,
            "admin_account_new.html",
            status=422,
            form=keep(form),
            errors=exc.fields,
            roles=sorted(STAFF_ROLES),
        )
    raise web.HTTPSeeOther(f"/admin/accounts?created={account.username}")


@routes.post("/admin/accounts/{id}/{action:activate|disable|enable}")
async def account_action(request: web.Request) -> web.StreamResponse:
    admin = require(request, ADMIN)
    account_id = _uuid(request.match_info["id"])
    action = request.match_info["action"]
    accounts = services(request).accounts
    if action == "activate":
        await accounts.do_activate(account_id)
    else:
        await accounts.do_set_disabled(account_id, action == "disable", actor_id=admin.id)
    raise web.HTTPSeeOther("/admin/accounts")


@routes.get("/admin/companies")
async def companies_page(request: web.Request) -> web.StreamResponse:
    require(request, ADMIN)
    rows = await list_companies(services(request).db)
    return render(
        request, "admin_companies.html", rows=rows, form={}, errors={}, sectors=SECTORS, chosen=[]
    )


@routes.post("/admin/companies")
async def companies_create(request: web.Request) -> web.StreamResponse:
    require(request, ADMIN)
    svc = services(request)
    form = await form_data(request)
    chosen = await form_list(request, "sectors")
    try:
        await do_create_company(
            svc.db,
            name=form.get("name"),
            vat=form.get("vat_number"),
            sectors=chosen,
            now=svc.clock.now(),
        )
    except FieldErrors as exc:
        rows = await list_companies(svc.db)
        return render(
            request,
            "admin_companies.html",
            status=422,
            rows=rows,
            form=keep(form),
            errors=exc.fields,
            sectors=SECTORS,
            chosen=chosen,
        )
    raise web.HTTPSeeOther("/admin/companies")


@routes.post("/admin/companies/{id}/{action:activate|deactivate}")
async def company_action(request: web.Request) -> web.StreamResponse:
    require(request, ADMIN)
    await do_set_company_active(
        services(request).db,
        _uuid(request.match_info["id"]),
        request.match_info["action"] == "activate",
    )
    raise web.HTTPSeeOther("/admin/companies")
