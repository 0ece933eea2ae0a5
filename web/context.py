"""Per-request context: language, signed-in account, session, CSRF; rendering and guards."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from cases.accounts import Account, Role, Status
from cases.sessions import SessionData
from core.errors import (
    ConciliaError,
    ErrorCode,
    FieldErrors,
    ProtocolError,
    Throttled,
    UserError,
)
from core.i18n import LANGUAGE_NAMES, LANGUAGES, negotiate
from core.ids import keyed_hash, new_token, same
from core.outage import RETRY_AFTER_SECONDS, dependency_down
from signaling.server import Signaling
from web.messages import message_for
from web.services import Services

log = logging.getLogger(__name__)

SERVICES = web.AppKey("services", Services)
SIGNALING = web.AppKey("signaling", Signaling)  # the /meeting namespace (and its media)
SESSION_COOKIE = "concilia_session"
CSRF_COOKIE = "concilia_csrf"
LANG_COOKIE = "concilia_lang"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Ctx:
    """What every handler and template knows about the request."""

    services: Services
    lang: str
    account: Account | None = None
    session: SessionData | None = None
    session_token: str | None = None
    csrf_nonce: str | None = None
    new_nonce: bool = False
    cookies_to_set: dict[str, str | None] = field(default_factory=dict)

    def gettext(self, message: str) -> str:
        return self.services.i18n.gettext(self.lang)(message)

    @property
    def pending(self) -> bool:
        """Signed in with the password, the second step still to do."""
        return self.session is not None and self.session.mfa_pending

    @property
    def csrf_token(self) -> str:
        binding = self.session_token or self.csrf_nonce or ""
        return keyed_hash(self.services.secret, "csrf", binding)

    def error_text(self, code: ErrorCode, **params: object) -> str:
        text = self.gettext(message_for(code))
        return text % params if params else text


CTX_KEY = web.RequestKey("concilia_ctx", Ctx)
ROUTED = web.RequestKey("concilia_routed", bool)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def ctx(request: web.Request) -> Ctx:
    value = request[CTX_KEY]
    assert isinstance(value, Ctx)
    return value


def client_address(request: web.Request) -> str:
    """The client's address; X-Forwarded-For only when the proxy in front is trusted."""
    if services(request).settings.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.remote or "unknown"


def safe_next(value: object, default: str = "/") -> str:
    """A local path to go to after an action; anything else (other hosts) becomes ``default``."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value:
        return default
    return value


def _language(request: web.Request, account: Account | None) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    if account is not None and account.language in LANGUAGES:
        return account.language
    return negotiate(request.headers.get("Accept-Language")) or "it"


async def _load_session(
    request: web.Request, svc: Services
) -> tuple[str | None, SessionData | None, Account | None]:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        return None, None, None
    data = await svc.sessions.get(token)
    if data is None:
        return None, None, None
    account = await svc.accounts.get(data.account_id)
    if account is None or account.status != Status.ACTIVE:
        # A disabled or removed account loses its sessions at its next request at the latest.
        await svc.sessions.delete(token)
        return None, None, None
    return token, data, account


async def session_account(request: web.Request) -> Account | None:
    """The account signed in on ``request`` (two-step sign-in completed), if any."""
    _token, data, account = await _load_session(request, services(request))
    return account if data is not None and not data.mfa_pending else None


async def _csrf_ok(request: web.Request, context: Ctx) -> bool:
    """Whether an unsafe request carries this visitor's anti-forgery token.

    The token comes in the ``X-CSRF-Token`` header, or else in the body's ``csrf_token`` field
    of a url-encoded form. A ``multipart/form-data`` body (uploads) is never read here, since
    ``request.post()`` would consume the whole body before the handler could stream and check
    it: such a post carries the token in the header or in the ``csrf_token`` query parameter (a
    page's upload form puts it in its action URL). The query parameter counts for multipart
    posts only. Pages are sent with ``Referrer-Policy: same-origin`` and the access log records
    route patterns, not URLs, so the token in the URL goes nowhere else.
    """
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type == "multipart/form-data":
        sent = request.query.get("csrf_token")
    elif sent is None and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not (context.session_token or context.csrf_nonce):
        return False
    return same(sent, context.csrf_token)


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


STATUS = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CSRF_FAILED: 403,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.LOGIN_THROTTLED: 429,
    ErrorCode.CONFLICT: 409,
    ErrorCode.SLOT_TAKEN: 409,
    ErrorCode.PROPOSAL_STALE: 409,
    ErrorCode.ABSENCE_EXISTS: 409,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.FILES_TOO_LARGE: 413,
    ErrorCode.UNAVAILABLE: 503,
}


def error_response(
    request: web.Request,
    code: ErrorCode,
    *,
    status: int | None = None,
    params: dict[str, object] | None = None,
    fields: Mapping[str, list[ErrorCode]] | None = None,
    **more: object,
) -> web.Response:
    """An error as JSON (API) or as a page, in the request's language. ``fields`` (wrong form
    fields, each with its codes) goes into the JSON body as ``error.fields``, the message's
    parameters (a refusal's deadline, say) as ``error.params``."""
    status = status or STATUS.get(code, 400)
    context: Ctx | None = request.get(CTX_KEY)
    if context is None:
        context = Ctx(services(request), "it")
    text = context.error_text(code, **(params or {}), **more)
    if wants_json(request):
        body: dict[str, object] = {"code": code.value, "message": text}
        if fields:
            body["fields"] = {name: [c.value for c in codes] for name, codes in fields.items()}
        given = {**(params or {}), **more}
        if given:
            body["params"] = {
                name: value if isinstance(value, str | int | float | bool) else str(value)
                for name, value in given.items()
            }
        return web.json_response({"error": body}, status=status)
    if fields:
        text = " ".join(context.error_text(c) for codes in fields.values() for c in codes)
    return render(request, "error.html", status=status, code=code.value, message=text)


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Build the request context, enforce CSRF on unsafe methods, map errors at the edge."""
    svc = services(request)
    started = time.perf_counter()
    request[ROUTED] = True  # the access log may read the route
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    # Socket.IO (``/socket.io/``) authenticates its own way: session cookie plus room token.
    try:
        if request.path.startswith(("/static/", "/healthz", "/readyz", "/metrics", "/socket.io/")):
            response = await handler(request)
        else:
            response = await _handle(request, svc, handler)
    except Exception as exc:
        dependency = dependency_down(exc)
        if dependency is None:
            raise
        response = unavailable_response(request, dependency, exc)
    svc.metrics.requests.labels(request.method, route, str(response.status)).inc()
    svc.metrics.latency.labels(route).observe(time.perf_counter() - started)
    return response


def unavailable_response(
    request: web.Request, dependency: str, exc: BaseException
) -> web.StreamResponse:
    """A request that failed because ``dependency`` (database, Redis) is down: 503 with
    ``Retry-After``, as JSON (``error.code`` ``unavailable``, ``error.params.dependency``)
    for the API and whoever asks for JSON, as the error page for a browser. One log line,
    no traceback: the outage itself is logged by the node's dependency watch."""
    log.warning(
        "%s %s: %s unavailable (%s: %s)",
        request.method,
        request.path,
        dependency,
        type(exc).__name__,
        str(exc)[:200],
    )
    params: dict[str, object] = {"dependency": dependency}
    if request.get(CTX_KEY) is None:  # the failure came before the context was made
        request[CTX_KEY] = Ctx(services(request), _language(request, None))
    if wants_json(request) or "application/json" in request.headers.get("Accept", ""):
        text = request[CTX_KEY].error_text(ErrorCode.UNAVAILABLE)
        response: web.StreamResponse = web.json_response(
            {"error": {"code": ErrorCode.UNAVAILABLE.value, "message": text, "params": params}},
            status=503,
        )
    else:
        response = error_response(request, ErrorCode.UNAVAILABLE, params=params)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _handle(request: web.Request, svc: Services, handler: Handler) -> web.StreamResponse:
    token, data, account = await _load_session(request, svc)
    context = Ctx(svc, "it", session_token=token, session=data)
    context.account = account if data is not None and not data.mfa_pending else None
    context.lang = _language(request, account)
    nonce = request.cookies.get(CSRF_COOKIE)
    if nonce and _nonce_ok(svc.secret, nonce):
        context.csrf_nonce = nonce
    else:
        # Only nonces this server issued count: a cookie planted by someone else (another
        # subdomain, say) cannot be used to forge a sign-in form for a victim.
        context.csrf_nonce = _new_nonce(svc.secret)
        context.new_nonce = True
    request[CTX_KEY] = context
    if request.cookies.get(SESSION_COOKIE) and token is None:
        context.cookies_to_set[SESSION_COOKIE] = None  # forget a dead session cookie
    try:
        if request.method in UNSAFE and not await _csrf_ok(request, context):
            response: web.StreamResponse = error_response(request, ErrorCode.CSRF_FAILED)
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        if 300 <= exc.status < 400:
            response = web.Response(
                status=exc.status, headers={"Location": exc.headers["Location"]}
            )
        elif exc.status == 404:
            response = error_response(request, ErrorCode.NOT_FOUND)
        elif exc.status == 405:
            response = error_response(request, ErrorCode.BAD_REQUEST, status=405)
            # RFC 9110: a 405 names the methods the resource has.
            response.headers["Allow"] = exc.headers.get("Allow", "")
        elif exc.status == 413:
            response = error_response(request, ErrorCode.TOO_LONG, status=413)
        else:
            raise
    except Throttled as exc:
        response = error_response(request, exc.code, seconds=exc.retry_after)
        response.headers["Retry-After"] = str(exc.retry_after)
    except FieldErrors as exc:
        # Pages show these next to their fields; one that gets here is an API call's.
        response = error_response(request, exc.code, status=422, fields=exc.fields)
    except (UserError, ProtocolError) as exc:
        response = error_response(request, exc.code, params=exc.params)
    except ConciliaError as exc:  # pragma: no cover - every error is one of the two above
        response = error_response(request, exc.code)
    _apply_cookies(request, response, context)
    return response


def _new_nonce(secret: bytes) -> str:
    value = new_token(24)
    return value + "." + keyed_hash(secret, "csrf-nonce", value)[:32]


def _nonce_ok(secret: bytes, nonce: str) -> bool:
    value, _, signature = nonce.partition(".")
    if not 20 <= len(value) <= 64 or len(signature) != 32:
        return False
    return same(signature, keyed_hash(secret, "csrf-nonce", value)[:32])


def _apply_cookies(request: web.Request, response: web.StreamResponse, context: Ctx) -> None:
    secure = services(request).settings.secure_cookies
    if context.new_nonce and context.csrf_nonce and not response.prepared:
        response.set_cookie(
            CSRF_COOKIE, context.csrf_nonce, httponly=True, samesite="Lax", secure=secure, path="/"
        )
    for name, value in context.cookies_to_set.items():
        if response.prepared:
            break
        if value is None:
            response.del_cookie(name, path="/")
        else:
            response.set_cookie(name, value, httponly=True, samesite="Lax", secure=secure, path="/")


def start_session(request: web.Request, token: str, data: SessionData) -> None:
    """Make ``token`` the browser's session from this response on (the old one is gone)."""
    context = ctx(request)
    context.session_token = token
    context.session = data
    context.cookies_to_set[SESSION_COOKIE] = token


def end_session(request: web.Request) -> None:
    context = ctx(request)
    context.session_token = None
    context.session = None
    context.account = None
    context.cookies_to_set[SESSION_COOKIE] = None


def set_language(request: web.Request, lang: str) -> None:
    context = ctx(request)
    context.lang = lang
    context.cookies_to_set[LANG_COOKIE] = lang


def require(request: web.Request, roles: Iterable[Role] | None = None) -> Account:
    """The signed-in account, else a redirect to sign-in (pages) or 401 (API); 403 on role."""
    context = ctx(request)
    account = context.account
    if account is None:
        if wants_json(request):
            raise UserError(ErrorCode.UNAUTHENTICATED)
        if context.pending:
            raise web.HTTPSeeOther("/login/code")
        target = request.path_qs if request.method == "GET" else "/"
        raise web.HTTPSeeOther("/login?next=" + quote(target, safe="/"))
    if roles is not None and account.role not in set(roles):
        raise UserError(ErrorCode.FORBIDDEN)
    return account


def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    """Render an HTML page with the request's language, account and CSRF token."""
    context: Ctx = request[CTX_KEY]
    svc = context.services
    gettext = svc.i18n.gettext(context.lang)
    page = svc.templates.get_template(template).render(
        _=gettext,
        ngettext=svc.i18n.ngettext(context.lang),
        lang=context.lang,
        languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        account=context.account,
        pending=context.pending,
        csrf_token=context.csrf_token,
        current_path=request.path_qs,
        dev=svc.settings.dev,
        error_text=context.error_text,
        **values,
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def security_headers(
    settings_https: bool,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """A response hook adding the security headers to every response, static files included."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'none'",
        )
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()")
        if settings_https:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if not request.path.startswith("/static/"):
            headers.setdefault("Cache-Control", "no-store")

    return on_prepare
