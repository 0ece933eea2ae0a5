"""CSRF, security headers, redirects, text-only rendering, role checks, error bodies."""

from __future__ import annotations

import pytest

from tests.support import (
    GOOD_PASSWORD,
    Env,
    change_password,
    registered,
    sign_in,
    staff,
    staff_sign_in,
)


async def test_post_without_csrf_token_is_rejected(env: Env) -> None:
    browser = env.browser()
    await browser.get("/login")  # has the anti-forgery cookie, but sends no token
    page = await browser.post("/login", {"username": "x", "password": "y"})
    assert page.status == 403 and 'data-error-code="csrf_failed"' in page.text


async def test_post_with_wrong_csrf_token_is_rejected(env: Env) -> None:
    await registered(env, "vittima")
    browser = env.browser()
    await sign_in(browser, "vittima", GOOD_PASSWORD)
    page = await browser.post(
        "/account/password",
        {
            "current_password": GOOD_PASSWORD,
            "password": "Nuova-Chiave-9",
            "password_confirm": "Nuova-Chiave-9",
        },
        csrf="0" * 64,
    )
    assert page.status == 403
    # A token of another visitor does not work either.
    other = await env.new_browser()
    foreign = (await other.get("/login")).csrf
    page = await browser.post("/logout", {}, csrf=foreign)
    assert page.status == 403
    assert (await browser.get("/account")).status == 200


async def test_csrf_token_from_before_sign_in_is_dead_after_it(env: Env) -> None:
    await registered(env, "fissato")
    browser = env.browser()
    before = (await browser.get("/login")).csrf
    await browser.post("/login", {"username": "fissato", "password": GOOD_PASSWORD}, csrf=before)
    page = await browser.post("/logout", {}, csrf=before)
    assert page.status == 403


async def test_api_requires_csrf_header_for_unsafe_methods(env: Env) -> None:
    async with env.client.post("/api/v1/me", json={}) as resp:
        assert resp.status == 403
        body = await resp.json()
        assert body["error"]["code"] == "csrf_failed"


async def test_security_headers_everywhere(env: Env) -> None:
    for path in ("/", "/login", "/static/app/app.css", "/nope"):
        async with env.client.get(path) as resp:
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "same-origin"


async def test_no_inline_scripts_in_pages(env: Env) -> None:
    for path in ("/", "/login", "/register", "/recover/password"):
        text = (await env.browser().get(path)).text
        for chunk in text.split("<script")[1:]:
            assert chunk.lstrip().startswith("src="), path
        assert " onclick=" not in text and " onload=" not in text


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"],
)
async def test_no_open_redirect_after_sign_in(env: Env, target: str) -> None:
    await registered(env, "reindirizzo")
    browser = env.browser()
    page = await browser.submit(
        "/login", {"username": "reindirizzo", "password": GOOD_PASSWORD, "next": target}
    )
    assert page.status == 303 and page.headers["Location"] == "/"
    page = await browser.get("/lang/en?next=" + target)
    assert page.headers["Location"] == "/"


async def test_user_input_is_shown_as_text(env: Env) -> None:
    browser = env.browser()
    page = await browser.submit(
        "/register",
        {"first_name": "<script>alert(1)</script>", "username": "<img src=x onerror=alert(1)>"},
    )
    assert page.status == 422
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text


async def test_pages_behind_sign_in_redirect_and_api_answers_401(env: Env) -> None:
    page = await env.browser().get("/account")
    assert page.status == 303 and page.headers["Location"] == "/login?next=/account"
    async with env.client.get("/api/v1/me") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthenticated"


async def test_admin_pages_refuse_other_roles(env: Env) -> None:
    await registered(env, "curioso")
    browser = env.browser()
    await sign_in(browser, "curioso", GOOD_PASSWORD)
    for path in ("/admin/accounts", "/admin/companies", "/admin/accounts/new"):
        page = await browser.get(path)
        assert page.status == 403, path
    await staff(env, "concil", role="conciliator")
    other = await env.new_browser()
    await staff_sign_in(env, other, "concil")
    assert (await other.get("/admin/accounts")).status == 403
    target = await env.services.accounts.by_username("curioso")
    assert target is not None
    page = await other.submit(f"/admin/accounts/{target.id}/disable", {}, form_page="/")
    assert page.status == 403
    account = await env.services.accounts.by_username("curioso")
    assert account is not None and account.status == "active"


async def test_unknown_page_is_a_clear_404(env: Env) -> None:
    page = await env.browser().get("/non/esiste")
    assert page.status == 404 and 'data-error-code="not_found"' in page.text
    async with env.client.get("/api/v1/nothing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_oversized_form_is_refused(env: Env) -> None:
    browser = env.browser()
    token = (await browser.get("/register")).csrf
    page = await browser.post("/register", {"first_name": "x" * (2 * 1024 * 1024)}, csrf=token)
    assert page.status == 413


async def test_secure_cookie_when_public_url_is_https(
    db_url: str, tmp_path: object, aiohttp_client: object
) -> None:
    from pathlib import Path

    from tests.conftest import make_settings
    from web.app import create_app

    settings = make_settings(db_url, Path(str(tmp_path)), public_url="https://concilia.example")
    client = await aiohttp_client(create_app(settings))  # type: ignore[operator]
    async with client.get("/login") as resp:
        assert "Secure" in resp.headers["Set-Cookie"]
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_planted_csrf_cookie_is_replaced(env: Env) -> None:
    browser = env.browser()
    browser.client.session.cookie_jar.update_cookies({"concilia_csrf": "a" * 30})
    page = await browser.get("/login")
    issued = page.headers.get("Set-Cookie", "")
    assert issued.startswith("concilia_csrf=") and "a" * 30 + ";" not in issued
    # A token computed from the planted value is useless.
    from core.ids import keyed_hash

    forged = keyed_hash(env.services.secret, "csrf", "a" * 30)
    browser.client.session.cookie_jar.update_cookies({"concilia_csrf": "a" * 30})
    page = await browser.post("/login", {"username": "x", "password": "y"}, csrf=forged)
    assert page.status == 403


async def test_current_password_guessing_is_throttled(env: Env) -> None:
    await registered(env, "sessione.rubata")
    browser = env.browser()
    await sign_in(browser, "sessione.rubata", GOOD_PASSWORD)
    for _ in range(5):
        page = await change_password(browser, "Tentativo-1", "Nuova-Chiave-9")
        assert page.status == 422
    page = await change_password(browser, GOOD_PASSWORD, "Nuova-Chiave-9")
    assert page.status == 429


async def test_a_method_the_resource_lacks_is_405_with_its_allow_header(env: Env) -> None:
    """RFC 9110: the answer names the methods the resource has (found by schemathesis)."""
    async with env.client.request("TRACE", "/api/v1/cases") as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
        assert (await resp.json())["error"]["code"] == "bad_request"
