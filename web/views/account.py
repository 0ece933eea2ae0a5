"""The signed-in person's own account: profile, password, two-step sign-in."""

from __future__ import annotations

import segno
from aiohttp import web

from cases.companies import get_company
from cases.signin import effective_method
from cases.tokens import Purpose
from core.errors import ErrorCode, FieldErrors, UserError
from web.context import ctx, render, require, services, set_language
from web.forms import form_data, keep

routes = web.RouteTableDef()


async def _profile_page(
    request: web.Request,
    form: dict[str, str] | None,
    errors: dict[str, list[ErrorCode]],
    status: int = 200,
    saved: bool = False,
) -> web.Response:
    account = require(request)
    svc = services(request)
    company = None
    if account.company_id is not None:
        async with svc.db.session() as session:
            company = await get_company(session, account.company_id)
    values = form or {
        "email": account.email,
        "mobile": account.mobile,
        "language": account.language,
        "association_name": account.association_name or "",
    }
    return render(
        request,
        "account.html",
        status=status,
        form=values,
        errors=errors,
        saved=saved,
        company=company,
        method=effective_method(account).value,
    )


@routes.get("/account", name="account")
async def profile(request: web.Request) -> web.StreamResponse:
    return await _profile_page(request, None, {}, saved=request.query.get("saved") == "1")


@routes.post("/account")
async def profile_submit(request: web.Request) -> web.StreamResponse:
    account = require(request)
    form = await form_data(request)
    try:
        updated = await services(request).accounts.do_update_profile(account.id, form)
    except FieldErrors as exc:
        return await _profile_page(request, keep(form), exc.fields, status=422)
    set_language(request, updated.language)
    raise web.HTTPSeeOther("/account?saved=1")


@routes.get("/account/email/{token}")
async def email_confirm_form(request: web.Request) -> web.StreamResponse:
    found = await services(request).accounts.peek_link(
        Purpose.CHANGE_EMAIL, request.match_info["token"]
    )
    return render(
        request,
        "email_confirm.html",
        status=200 if found else 410,
        invalid=found is None,
        done=False,
    )


@routes.post("/account/email/{token}")
async def email_confirm_submit(request: web.Request) -> web.StreamResponse:
    try:
        await services(request).accounts.do_confirm_email_change(request.match_info["token"])
    except UserError:
        return render(request, "email_confirm.html", status=410, invalid=True, done=False)
    return render(request, "email_confirm.html", invalid=False, done=True)


@routes.get("/account/password")
async def password_form(request: web.Request) -> web.StreamResponse:
    require(request)
    return render(
        request, "account_password.html", errors={}, done=request.query.get("done") == "1"
    )


@routes.post("/account/password")
async def password_submit(request: web.Request) -> web.StreamResponse:
    account = require(request)
    context = ctx(request)
    form = await form_data(request)
    assert context.session_token is not None
    try:
        await services(request).accounts.do_change_password(
            account.id, form, keep_session=context.session_token
        )
    except FieldErrors as exc:
        return render(request, "account_password.html", status=422, errors=exc.fields, done=False)
    raise web.HTTPSeeOther("/account/password?done=1")


def _qr_svg(uri: str) -> str:
    """The otpauth URI as a QR code, in a data: URI for an <img> (no markup in the page)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=4))


@routes.get("/account/security")
async def security(request: web.Request) -> web.StreamResponse:
    account = require(request)
    pending = await services(request).signin.pending_totp(account.id)
    return render(
        request,
        "account_security.html",
        method=effective_method(account).value,
        totp_secret=pending[0] if pending else None,
        totp_qr=_qr_svg(pending[1]) if pending else None,
        error=None,
        saved=request.query.get("saved") == "1",
    )


@routes.post("/account/security/method")
async def security_method(request: web.Request) -> web.StreamResponse:
    account = require(request)
    form = await form_data(request)
    await services(request).signin.do_set_method(account.id, form.get("method"))
    raise web.HTTPSeeOther("/account/security?saved=1")


@routes.post("/account/security/totp")
async def security_totp_begin(request: web.Request) -> web.StreamResponse:
    account = require(request)
    await services(request).signin.do_begin_totp(account.id)
    raise web.HTTPSeeOther("/account/security#totp")


@routes.post("/account/security/totp/confirm")
async def security_totp_confirm(request: web.Request) -> web.StreamResponse:
    account = require(request)
    form = await form_data(request)
    svc = services(request)
    try:
        await svc.signin.do_confirm_totp(account.id, form.get("code"))
    except UserError as exc:
        pending = await svc.signin.pending_totp(account.id)
        return render(
            request,
            "account_security.html",
            status=422,
            method=effective_method(account).value,
            totp_secret=pending[0] if pending else None,
            totp_qr=_qr_svg(pending[1]) if pending else None,
            error=ctx(request).error_text(exc.code),
            saved=False,
        )
    raise web.HTTPSeeOther("/account/security?saved=1")
