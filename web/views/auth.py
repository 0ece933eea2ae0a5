"""Registration, e-mail verification, sign-in in one or two steps, sign-out, recovery."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from cases.companies import list_companies
from cases.signin import effective_method
from cases.tokens import Purpose
from core.errors import ErrorCode, FieldErrors, Throttled, UserError
from core.i18n import LANGUAGES
from web.context import (
    client_address,
    ctx,
    end_session,
    render,
    safe_next,
    services,
    set_language,
    start_session,
)
from web.forms import form_data, keep

routes = web.RouteTableDef()


# -- registration ---------------------------------------------------------------------------


async def _register_page(
    request: web.Request,
    form: dict[str, str],
    errors: dict[str, list[ErrorCode]],
    status: int = 200,
    error: str | None = None,
) -> web.Response:
    companies = await list_companies(services(request).db, only_active=True)
    return render(
        request,
        "register.html",
        status=status,
        form=form,
        errors=errors,
        company_options=[(str(c.id), c.name) for c in companies],
        error=error,
    )


@routes.get("/register", name="register")
async def register_form(request: web.Request) -> web.StreamResponse:
    if ctx(request).account is not None:
        raise web.HTTPSeeOther("/")
    return await _register_page(request, {"kind": "customer", "language": ctx(request).lang}, {})


@routes.post("/register")
async def register_submit(request: web.Request) -> web.StreamResponse:
    form = await form_data(request)
    try:
        await services(request).accounts.do_register(form, client_address(request))
    except Throttled as exc:
        text = ctx(request).error_text(exc.code, seconds=exc.retry_after)
        response = await _register_page(request, keep(form), {}, status=429, error=text)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except FieldErrors as exc:
        return await _register_page(request, keep(form), exc.fields, status=422)
    raise web.HTTPSeeOther("/register/done")


@routes.get("/register/done")
async def register_done(request: web.Request) -> web.StreamResponse:
    return render(request, "register_done.html")


@routes.get("/verify/{token}")
async def verify_form(request: web.Request) -> web.StreamResponse:
    # A GET shows a button: mail scanners that open links must not use up the token.
    account = await services(request).accounts.peek_link(
        Purpose.VERIFY_EMAIL, request.match_info["token"]
    )
    if account is None:
        return render(request, "verify.html", status=410, invalid=True)
    return render(request, "verify.html", invalid=False, username=account.username)


@routes.post("/verify/{token}")
async def verify_submit(request: web.Request) -> web.StreamResponse:
    try:
        account = await services(request).accounts.do_verify_email(request.match_info["token"])
    except UserError:
        return render(request, "verify.html", status=410, invalid=True)
    return render(request, "verified.html", account_status=account.status)


# -- sign-in ----------------------------------------------------------------------------------


@routes.get("/login", name="login")
async def login_form(request: web.Request) -> web.StreamResponse:
    context = ctx(request)
    if context.account is not None:
        raise web.HTTPSeeOther("/")
    return render(
        request, "login.html", form={"next": safe_next(request.query.get("next"))}, error=None
    )


@routes.post("/login")
async def login_submit(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    form = await form_data(request)
    target = safe_next(form.get("next"))
    shown = {"username": form.get("username", "")[:60], "next": target}
    try:
        signed = await svc.signin.do_sign_in(
            form.get("username"), form.get("password"), client_address(request)
        )
    except Throttled as exc:
        svc.metrics.sign_ins.labels("throttled").inc()
        response = render(
            request,
            "login.html",
            status=429,
            form=shown,
            error=ctx(request).error_text(exc.code, seconds=exc.retry_after),
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except UserError as exc:
        svc.metrics.sign_ins.labels(exc.code.value).inc()
        status = 401 if exc.code == ErrorCode.LOGIN_FAILED else 403
        return render(
            request,
            "login.html",
            status=status,
            form=shown,
            error=ctx(request).error_text(exc.code),
        )
    # A new session id at sign-in: whatever session the browser had is gone.
    old = ctx(request).session_token
    if old:
        await svc.signin.do_sign_out(old)
    start_session(request, signed.token, signed.session)
    set_language(request, signed.account.language if signed.account.language in LANGUAGES else "it")
    if signed.mfa_pending:
        svc.metrics.sign_ins.labels("second_step").inc()
        raise web.HTTPSeeOther("/login/code?next=" + quote(target, safe="/"))
    svc.metrics.sign_ins.labels("ok").inc()
    raise web.HTTPSeeOther(target)


@routes.get("/login/code")
async def code_form(request: web.Request) -> web.StreamResponse:
    context = ctx(request)
    if not context.pending or context.session is None:
        raise web.HTTPSeeOther("/login")
    account = await services(request).accounts.get(context.session.account_id)
    if account is None:
        raise web.HTTPSeeOther("/login")
    return render(
        request,
        "login_code.html",
        method=effective_method(account).value,
        next=safe_next(request.query.get("next")),
        error=None,
        resent=request.query.get("resent") == "1",
    )


@routes.post("/login/code")
async def code_submit(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    context = ctx(request)
    if not context.pending or context.session is None or context.session_token is None:
        raise web.HTTPSeeOther("/login")
    form = await form_data(request)
    target = safe_next(form.get("next"))
    account = await svc.accounts.get(context.session.account_id)
    if account is None:
        raise web.HTTPSeeOther("/login")
    method = effective_method(account).value
    try:
        signed = await svc.signin.do_verify_code(
            context.session_token, context.session, form.get("code")
        )
    except Throttled as exc:
        return render(
            request,
            "login_code.html",
            status=429,
            method=method,
            next=target,
            resent=False,
            error=context.error_text(exc.code, seconds=exc.retry_after),
        )
    except UserError as exc:
        if exc.code == ErrorCode.CODE_EXHAUSTED:
            await svc.signin.do_sign_out(context.session_token)
            end_session(request)
            return render(
                request,
                "login.html",
                status=401,
                form={"next": target},
                error=context.error_text(exc.code),
            )
        return render(
            request,
            "login_code.html",
            status=401,
            method=method,
            next=target,
            resent=False,
            error=context.error_text(exc.code),
        )
    start_session(request, signed.token, signed.session)
    svc.metrics.sign_ins.labels("ok").inc()
    raise web.HTTPSeeOther(target)


@routes.post("/login/code/resend")
async def code_resend(request: web.Request) -> web.StreamResponse:
    context = ctx(request)
    if not context.pending or context.session is None:
        raise web.HTTPSeeOther("/login")
    try:
        await services(request).signin.do_resend_code(context.session)
    except Throttled as exc:
        response = render(
            request,
            "login_code.html",
            status=429,
            method="email",
            next="/",
            resent=False,
            error=context.error_text(exc.code, seconds=exc.retry_after),
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    raise web.HTTPSeeOther("/login/code?resent=1")


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.StreamResponse:
    token = ctx(request).session_token
    if token:
        await services(request).signin.do_sign_out(token)
    end_session(request)
    raise web.HTTPSeeOther("/")


# -- recovery -------------------------------------------------------------------------------


@routes.get("/recover/username")
async def recover_username_form(request: web.Request) -> web.StreamResponse:
    return render(request, "recover_username.html", form={}, errors={})


@routes.post("/recover/username")
async def recover_username_submit(request: web.Request) -> web.StreamResponse:
    form = await form_data(request)
    try:
        await services(request).recovery.do_recover_username(form.get("email"))
    except FieldErrors as exc:
        return render(
            request, "recover_username.html", status=422, form=keep(form), errors=exc.fields
        )
    return render(request, "recover_sent.html", what="username")


@routes.get("/recover/password")
async def recover_password_form(request: web.Request) -> web.StreamResponse:
    return render(request, "recover_password.html", form={}, errors={})


@routes.post("/recover/password")
async def recover_password_submit(request: web.Request) -> web.StreamResponse:
    form = await form_data(request)
    try:
        await services(request).recovery.do_request_reset(form.get("identifier"))
    except FieldErrors as exc:
        return render(
            request, "recover_password.html", status=422, form=keep(form), errors=exc.fields
        )
    return render(request, "recover_sent.html", what="password")


@routes.get("/reset/{token}")
async def reset_form(request: web.Request) -> web.StreamResponse:
    account = await services(request).accounts.peek_link(
        Purpose.RESET_PASSWORD, request.match_info["token"]
    )
    if account is None:
        return render(request, "reset.html", status=410, invalid=True, errors={}, username="")
    return render(request, "reset.html", invalid=False, errors={}, username=account.username)


@routes.post("/reset/{token}")
async def reset_submit(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    form = await form_data(request)
    token = request.match_info["token"]
    try:
        account = await svc.recovery.do_reset_password(token, form)
    except FieldErrors as exc:
        found = await svc.accounts.peek_link(Purpose.RESET_PASSWORD, token)
        return render(
            request,
            "reset.html",
            status=422,
            invalid=False,
            errors=exc.fields,
            username=found.username if found else "",
        )
    except UserError:
        return render(request, "reset.html", status=410, invalid=True, errors={}, username="")
    # The reset ended every session of the account, this browser's included.
    if ctx(request).session is not None and ctx(request).session.account_id == account.id:  # type: ignore[union-attr]
        end_session(request)
    return render(request, "reset_done.html")


# -- language --------------------------------------------------------------------------------


@routes.get("/lang/{code}")
async def switch_language(request: web.Request) -> web.StreamResponse:
    code = request.match_info["code"]
    if code not in LANGUAGES:
        raise UserError(ErrorCode.NOT_FOUND)
    set_language(request, code)
    raise web.HTTPSeeOther(safe_next(request.query.get("next")))
