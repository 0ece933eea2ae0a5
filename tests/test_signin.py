"""Sign-in, sessions and two-step sign-in, through the pages."""

from __future__ import annotations

import re

import pyotp
from sqlalchemy import select

from cases.accounts import Account, Status
from tests.support import (
    GOOD_PASSWORD,
    Env,
    code_in,
    registered,
    sign_in,
    staff,
    staff_sign_in,
)
from web.context import SESSION_COOKIE


def _body(text: str, username: str) -> str:
    """The page without what differs per visitor: the CSRF token and the typed username."""
    main = text.split('<main id="main"', 1)[1].split("</main>", 1)[0]
    return re.sub(r'name="csrf_token" value="[^"]+"', "", main).replace(username, "USER")


async def test_same_answer_for_unknown_user_and_wrong_password(env: Env) -> None:
    await registered(env, "esistente")
    a = await sign_in(env.browser(), "esistente", "Sbagliata-123")
    b = await sign_in(await env.new_browser(), "nessuno", "Sbagliata-123")
    assert a.status == b.status == 401
    assert _body(a.text, "esistente") == _body(b.text, "nessuno")


async def test_session_id_changes_at_sign_in_and_sign_out_ends_it(env: Env) -> None:
    await registered(env, "rotazione")
    browser = env.browser()
    await sign_in(browser, "rotazione", GOOD_PASSWORD)
    first = browser.cookie(SESSION_COOKIE)
    assert first
    # Signing in again (e.g. someone planted a session) gives a new id and drops the old one.
    page = await browser.submit(
        "/login", {"username": "rotazione", "password": GOOD_PASSWORD}, form_page="/"
    )
    second = browser.cookie(SESSION_COOKIE)
    assert page.status == 303 and second and second != first
    assert await env.services.sessions.get(first) is None
    # Sign-out ends the session on the server, not only in the browser.
    page = await browser.submit("/logout", {}, form_page="/")
    assert page.status == 303
    assert await env.services.sessions.get(second) is None
    assert (await browser.get("/account")).status == 303


async def test_cookie_flags(env: Env) -> None:
    await registered(env, "biscotto")
    browser = env.browser()
    page = await sign_in(browser, "biscotto", GOOD_PASSWORD)
    cookie = page.headers.getall("Set-Cookie")
    session_cookie = next(c for c in cookie if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
    assert "Secure" not in session_cookie  # served over http in this test


async def test_idle_timeout(env: Env) -> None:
    await registered(env, "pigro")
    browser = env.browser()
    await sign_in(browser, "pigro", GOOD_PASSWORD)
    env.advance(minutes=29)
    assert (await browser.get("/account")).status == 200
    env.advance(minutes=29)  # active 29 minutes ago: still alive
    assert (await browser.get("/account")).status == 200
    env.advance(minutes=31)
    page = await browser.get("/account")
    assert page.status == 303 and page.headers["Location"].startswith("/login")


async def test_absolute_timeout(env: Env) -> None:
    await registered(env, "costante")
    browser = env.browser()
    await sign_in(browser, "costante", GOOD_PASSWORD)
    for _ in range(47):  # busy every 15 minutes for 11 h 45 min: never idle
        env.advance(minutes=15)
        assert (await browser.get("/account")).status == 200
    env.advance(minutes=16)  # 12 h 01 min after sign-in
    page = await browser.get("/account")
    assert page.status == 303


async def test_throttling_engages_and_lifts(env: Env) -> None:
    await registered(env, "bersaglio")
    browser = env.browser()
    for _ in range(5):
        assert (await sign_in(browser, "bersaglio", "Sbagliata-123")).status == 401
    # The sixth try must wait, even with the right password.
    page = await sign_in(browser, "bersaglio", GOOD_PASSWORD)
    assert page.status == 429 and page.headers["Retry-After"] == "1"
    env.advance(seconds=2)
    assert (await sign_in(browser, "bersaglio", "Sbagliata-123")).status == 401
    page = await sign_in(browser, "bersaglio", GOOD_PASSWORD)
    assert page.status == 429 and page.headers["Retry-After"] == "2"
    # Never a permanent lock-out: after the window the right password works.
    env.advance(minutes=16)
    assert (await sign_in(browser, "bersaglio", GOOD_PASSWORD)).status == 303


async def test_throttling_is_the_same_for_unknown_users(env: Env) -> None:
    browser = env.browser()
    for _ in range(5):
        assert (await sign_in(browser, "fantasma", "Sbagliata-123")).status == 401
    assert (await sign_in(browser, "fantasma", "Sbagliata-123")).status == 429


async def test_throttling_per_client_address(env: Env) -> None:
    await registered(env, "vittima")
    browser = env.browser()
    # One address trying many different usernames is slowed down as well.
    for n in range(5):
        assert (await sign_in(browser, f"utente{n}", "Sbagliata-123")).status == 401
    assert (await sign_in(browser, "vittima", GOOD_PASSWORD)).status == 429


async def test_staff_sign_in_needs_emailed_code(env: Env) -> None:
    await staff(env, "conciliatore1")
    browser = env.browser()
    page = await sign_in(browser, "conciliatore1", GOOD_PASSWORD)
    assert page.headers["Location"].startswith("/login/code")
    pending_cookie = browser.cookie(SESSION_COOKIE)
    # Half signed-in: no page behind sign-in opens yet.
    page = await browser.get("/account")
    assert page.status == 303 and page.headers["Location"] == "/login/code"
    mail = await env.last_mail("conciliatore1@example.org")
    code = code_in(mail.body_text)
    wrong = "000000" if code != "000000" else "111111"
    page = await browser.submit("/login/code", {"code": wrong, "next": "/"})
    assert page.status == 401
    page = await browser.submit("/login/code", {"code": code, "next": "/account"})
    assert page.status == 303 and page.headers["Location"] == "/account"
    # Completing the second step rotates the session id again.
    assert browser.cookie(SESSION_COOKIE) != pending_cookie
    assert (await browser.get("/account")).status == 200
    # A code works once.
    other = await env.new_browser()
    await sign_in(other, "conciliatore1", GOOD_PASSWORD)
    page = await other.submit("/login/code", {"code": code, "next": "/"})
    assert page.status == 401


async def test_emailed_code_attempts_are_limited(env: Env) -> None:
    await staff(env, "conciliatore2")
    browser = env.browser()
    await sign_in(browser, "conciliatore2", GOOD_PASSWORD)
    code = code_in((await env.last_mail("conciliatore2@example.org")).body_text)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(4):
        assert (await browser.submit("/login/code", {"code": wrong})).status == 401
    page = await browser.submit("/login/code", {"code": wrong})
    # The fifth wrong code spends it: back to the password.
    assert page.status == 401 and 'action="/login"' in page.text
    assert (await browser.get("/login/code")).status == 303
    page = await browser.submit("/login/code", {"code": code}, form_page="/login")
    assert page.status == 303 and page.headers["Location"] == "/login"


async def test_expired_code_refused(env: Env) -> None:
    await staff(env, "conciliatore3")
    browser = env.browser()
    await sign_in(browser, "conciliatore3", GOOD_PASSWORD)
    code = code_in((await env.last_mail("conciliatore3@example.org")).body_text)
    env.advance(minutes=11)
    page = await browser.submit("/login/code", {"code": code})
    assert page.status == 401


async def test_totp_enrolment_and_sign_in(env: Env) -> None:
    await registered(env, "app.user")
    browser = env.browser()
    await sign_in(browser, "app.user", GOOD_PASSWORD)
    page = await browser.submit("/account/security/totp", {}, form_page="/account/security")
    assert page.status == 303
    page = await browser.get("/account/security")
    assert 'src="data:image/svg+xml' in page.text
    account = await env.services.accounts.by_username("app.user")
    assert account is not None and account.totp_pending_secret
    totp = pyotp.TOTP(account.totp_pending_secret)
    now = env.clock.now().timestamp()
    page = await browser.submit(
        "/account/security/totp/confirm",
        {"code": "123456" if totp.at(now) != "123456" else "654321"},
        form_page="/account/security",
    )
    assert page.status == 422
    page = await browser.submit(
        "/account/security/totp/confirm", {"code": totp.at(now)}, form_page="/account/security"
    )
    assert page.status == 303
    # From now on, sign-in asks for the app's code; the same code cannot be replayed.
    env.advance(seconds=30)
    other = await env.new_browser()
    page = await sign_in(other, "app.user", GOOD_PASSWORD)
    assert page.headers["Location"].startswith("/login/code")
    replay = await other.submit("/login/code", {"code": totp.at(now)})
    assert replay.status == 401
    page = await other.submit("/login/code", {"code": totp.at(env.clock.now().timestamp())})
    assert page.status == 303


async def test_staff_cannot_turn_two_step_off(env: Env) -> None:
    await staff(env, "pianificatore1", role="scheduler")
    browser = env.browser()
    assert (await staff_sign_in(env, browser, "pianificatore1")).status == 303
    page = await browser.submit(
        "/account/security/method", {"method": "none"}, form_page="/account/security"
    )
    assert page.status == 400
    account = await env.services.accounts.by_username("pianificatore1")
    assert account is not None and account.mfa_method == "email"


async def test_customer_can_turn_emailed_codes_on(env: Env) -> None:
    await registered(env, "prudente")
    browser = env.browser()
    await sign_in(browser, "prudente", GOOD_PASSWORD)
    page = await browser.submit(
        "/account/security/method", {"method": "email"}, form_page="/account/security"
    )
    assert page.status == 303
    other = await env.new_browser()
    page = await sign_in(other, "prudente", GOOD_PASSWORD)
    assert page.headers["Location"].startswith("/login/code")


async def test_unused_account_is_disabled_and_reset_reenables(env: Env) -> None:
    await registered(env, "dormiente")
    browser = env.browser()
    assert (await sign_in(browser, "dormiente", GOOD_PASSWORD)).status == 303
    env.advance(days=184)
    page = await sign_in(await env.new_browser(), "dormiente", GOOD_PASSWORD)
    assert page.status == 403
    async with env.services.db.session() as session:
        account = await session.scalar(select(Account).where(Account.username == "dormiente"))
        assert account is not None and account.status == Status.DISABLED
        assert account.disabled_reason == "inactivity"
    # The reset flow re-enables it.
    reset = env.browser()
    await reset.submit("/recover/password", {"identifier": "dormiente"})
    from tests.support import link_in

    link = link_in((await env.last_mail("dormiente@example.org", "/reset/")).body_text, "/reset/")
    page = await reset.submit(
        link, {"password": "Sveglia-Presto-5", "password_confirm": "Sveglia-Presto-5"}
    )
    assert page.status == 200
    assert (await sign_in(reset, "dormiente", "Sveglia-Presto-5")).status == 303


async def test_maintenance_disables_inactive_accounts(env: Env) -> None:
    await registered(env, "assente")
    env.advance(days=200)
    assert await env.services.accounts.do_disable_inactive() == 1
    account = await env.services.accounts.by_username("assente")
    assert account is not None and account.status == Status.DISABLED


async def test_resending_codes_is_throttled(env: Env) -> None:
    await staff(env, "conciliatore4")
    browser = env.browser()
    await sign_in(browser, "conciliatore4", GOOD_PASSWORD)
    for _ in range(5):
        page = await browser.submit("/login/code/resend", {}, form_page="/login/code")
        assert page.status == 303 and page.headers["Location"] == "/login/code?resent=1"
    page = await browser.submit("/login/code/resend", {}, form_page="/login/code")
    assert page.status == 429 and "Retry-After" in page.headers
    codes = await env.mails("conciliatore4@example.org")
    assert len(codes) == 6  # the first code and five resends
    # The newest code works; older ones were revoked by it.
    first, newest = code_in(codes[0].body_text), code_in(codes[-1].body_text)
    if first != newest:
        assert (await browser.submit("/login/code", {"code": first})).status == 401
    assert (await browser.submit("/login/code", {"code": newest})).status == 303
