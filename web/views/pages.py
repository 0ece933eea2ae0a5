"""The landing page, the home page of each role, and the service's information pages."""

from __future__ import annotations

from aiohttp import web

from cases.accounts import Role
from cases.companies import get_company
from cases.signin import effective_method
from web.context import ctx, render, require, services

routes = web.RouteTableDef()


@routes.get("/", name="home")
async def home(request: web.Request) -> web.StreamResponse:
    context = ctx(request)
    account = context.account
    if account is None:
        if context.pending:
            raise web.HTTPSeeOther("/login/code")
        return render(request, "index.html")
    company = None
    if account.company_id is not None:
        async with services(request).db.session() as session:
            company = await get_company(session, account.company_id)
    return render(
        request,
        "home.html",
        role=account.role,
        company=company,
        method=effective_method(account).value,
    )


@routes.get("/conciliation")
async def conciliation(request: web.Request) -> web.StreamResponse:
    """The welcome page of the conciliation service: how it works and what a meeting needs."""
    require(request, (Role.CUSTOMER, Role.DELEGATE, Role.COMPANY_REP))
    return render(request, "conciliation.html")


@routes.get("/privacy")
async def privacy(request: web.Request) -> web.StreamResponse:
    return render(request, "privacy.html")
