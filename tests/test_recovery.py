"""Username recovery and password reset by e-mailed link."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

import cases.recovery as recovery_module
from cases.tokens import AccountToken, Purpose
from core.jobs import Job, JobStatus
from tests.support import GOOD_PASSWORD, Env, change_password, link_in, registered, sign_in
from web.context import SESSION_COOKIE

NEW = "Nuovo-Inizio-2026"


def _main(text: str) -> str:
    main = text.split('<main id="main"', 1)[1].split("</main>", 1)[0]
    return re.sub(r'name="csrf_token" value="[^"]+"', "", main)


async def _ask_reset(env: Env, identifier: str) -> str:
    browser = await env.new_browser()
    page = await browser.submit("/recover/password", {"identifier": identifier})
    assert page.status == 200
    mail = await env.last_mail(f"{identifier}@example.org", "/reset/")
    return link_in(mail.body_text, "/reset/")


async def test_reset_link_works_once(env: Env) -> None:
    await registered(env, "smemorato")
    link = await _ask_reset(env, "smemorato")
    assert link.startswith("/reset/") and len(link.rsplit("/", 1)[1]) >= 22  # >= 128 bits
    browser = env.browser()
    page = await browser.submit(link, {"password": NEW, "password_confirm": NEW})
    assert page.status == 200
    page = await browser.get(link)
    assert page.status == 410
    page = await browser.post(
        link,
        {"password": "Altro-Tentativo-9", "password_confirm": "Altro-Tentativo-9"},
        csrf=(await browser.get("/login")).csrf,
    )
    assert page.status == 410
    assert (await sign_in(browser, "smemorato", NEW)).status == 303


async def test_only_the_hash_of_the_token_is_stored(env: Env) -> None:
    await registered(env, "custode")
    link = await _ask_reset(env, "custode")
    token = link.rsplit("/", 1)[1]
    async with env.services.db.session() as session:
        rows = list(await session.scalars(select(AccountToken)))
    assert rows and all(token not in (r.token_hash, r.payload) for r in rows)


async def test_reset_link_expires_after_30_minutes(env: Env) -> None:
    await registered(env, "lento")
    link = await _ask_reset(env, "lento")
    env.advance(minutes=31)
    browser = env.browser()
    assert (await browser.get(link)).status == 410
    page = await browser.post(
        link, {"password": NEW, "password_confirm": NEW}, csrf=(await browser.get("/login")).csrf
    )
    assert page.status == 410
    assert (await sign_in(browser, "lento", GOOD_PASSWORD)).status == 303


async def test_new_request_revokes_older_link(env: Env) -> None:
    await registered(env, "doppio")
    first = await _ask_reset(env, "doppio")
    env.advance(seconds=5)
    second = await _ask_reset(env, "doppio")
    assert first != second
    browser = env.browser()
    assert (await browser.get(first)).status == 410
    assert (await browser.submit(second, {"password": NEW, "password_confirm": NEW})).status == 200


async def test_password_change_revokes_open_reset_link(env: Env) -> None:
    await registered(env, "cauto")
    link = await _ask_reset(env, "cauto")
    browser = env.browser()
    await sign_in(browser, "cauto", GOOD_PASSWORD)
    page = await change_password(browser, GOOD_PASSWORD, NEW)
    assert page.status == 303
    assert (await (await env.new_browser()).get(link)).status == 410


async def test_reset_ends_every_session(env: Env) -> None:
    await registered(env, "rubato")
    thief = env.browser()
    await sign_in(thief, "rubato", GOOD_PASSWORD)
    assert (await thief.get("/account")).status == 200
    link = await _ask_reset(env, "rubato")
    owner = await env.new_browser()
    assert (await owner.submit(link, {"password": NEW, "password_confirm": NEW})).status == 200
    assert (await thief.get("/account")).status == 303
    account = await env.services.accounts.by_username("rubato")
    assert account is not None
    assert await env.services.sessions.count_for_account(account.id) == 0


async def test_reset_applies_the_policy_and_history(env: Env) -> None:
    await registered(env, "ripetitivo")
    link = await _ask_reset(env, "ripetitivo")
    browser = env.browser()
    page = await browser.submit(
        link, {"password": GOOD_PASSWORD, "password_confirm": GOOD_PASSWORD}
    )
    assert page.status == 422 and 'id="e-password"' in page.text
    page = await browser.submit(link, {"password": "corta", "password_confirm": "corta"})
    assert page.status == 422
    # The link survives a refused attempt.
    assert (await browser.submit(link, {"password": NEW, "password_confirm": NEW})).status == 200


async def test_reset_answers_identically_for_unknown_accounts(env: Env) -> None:
    await registered(env, "reale")
    known = await env.browser().submit("/recover/password", {"identifier": "reale"})
    unknown = await (await env.new_browser()).submit(
        "/recover/password", {"identifier": "immaginario"}
    )
    assert known.status == unknown.status == 200
    assert _main(known.text) == _main(unknown.text)
    by_mail = await (await env.new_browser()).submit(
        "/recover/password", {"identifier": "nessuno@example.org"}
    )
    assert _main(by_mail.text) == _main(known.text)


async def test_reset_link_uses_configured_public_url_not_host_header(env: Env) -> None:
    await registered(env, "ospite")
    browser = env.browser()
    page = await browser.get("/recover/password")
    async with env.client.post(
        "/recover/password",
        data={"identifier": "ospite", "csrf_token": page.csrf},
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 200
    mail = await env.last_mail("ospite@example.org", "/reset/")
    assert "http://concilia.test/reset/" in mail.body_text
    assert "evil.example" not in mail.body_text


async def test_reset_by_email_address(env: Env) -> None:
    await registered(env, "postino")
    browser = env.browser()
    await browser.submit("/recover/password", {"identifier": "postino@example.org"})
    mail = await env.last_mail("postino@example.org", "/reset/")
    assert "postino" in mail.body_text


async def test_reset_requests_are_capped_per_hour(env: Env) -> None:
    await registered(env, "insistente")
    browser = env.browser()
    for _ in range(8):
        page = await browser.submit("/recover/password", {"identifier": "insistente"})
        assert page.status == 200
    mails = [m for m in await env.mails("insistente@example.org") if "/reset/" in m.body_text]
    assert len(mails) == 5


async def test_username_recovery(env: Env) -> None:
    await registered(env, "ricordo", email="casa@example.org")
    await registered(env, "ricordo2", email="casa@example.org")
    known = await env.browser().submit("/recover/username", {"email": "casa@example.org"})
    unknown = await (await env.new_browser()).submit(
        "/recover/username", {"email": "altra@example.org"}
    )
    assert known.status == unknown.status == 200
    assert _main(known.text) == _main(unknown.text)
    mail = await env.last_mail("casa@example.org", "ricordo")
    assert "ricordo" in mail.body_text and "ricordo2" in mail.body_text
    assert await env.mails("altra@example.org") == []


async def test_username_recovery_refuses_a_malformed_address(env: Env) -> None:
    page = await env.browser().submit("/recover/username", {"email": "non valido"})
    assert page.status == 422 and 'id="e-email"' in page.text


async def test_reset_signs_out_the_browser_that_used_it(env: Env) -> None:
    await registered(env, "stesso")
    browser = env.browser()
    await sign_in(browser, "stesso", GOOD_PASSWORD)
    page = await browser.submit(
        "/recover/password", {"identifier": "stesso"}, form_page="/recover/password"
    )
    link = link_in((await env.last_mail("stesso@example.org", "/reset/")).body_text, "/reset/")
    page = await browser.submit(link, {"password": NEW, "password_confirm": NEW})
    assert page.status == 200
    assert browser.cookie(SESSION_COOKIE) in (None, "")


async def test_requests_are_jobs_done_after_the_answer_within_an_hourly_quota(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """The lookup and the mail come after the answer, as jobs in the database (the same
    insert for every identifier); an identifier asks at most ``REQUESTS_PER_HOUR`` times an
    hour (the rest is answered alike and ignored), and the account gets at most
    ``RESETS_PER_HOUR`` links however it is named. Done jobs keep no identifier."""
    caplog.set_level(logging.INFO, "cases.recovery")
    await registered(env, "coda")
    recovery = env.services.recovery
    for _ in range(7):
        await recovery.do_request_reset("coda")  # answered once recorded (the node's runner
    await recovery.do_request_reset("nessuno.qui")  # is woken and may be at work already)
    for _ in range(2):
        await recovery.do_request_reset("coda@example.org")
    async with env.services.db.session() as session:
        kinds = select(Job.kind).where(Job.ref == recovery_module.JOB_REF)
        assert list(await session.scalars(kinds)) == [recovery_module.RESET_JOB] * (
            recovery_module.REQUESTS_PER_HOUR + 1 + 2
        )
    assert caplog.text.count("over the hourly limit of its identifier") == 2
    await recovery.drain()
    mails = [m for m in await env.mails("coda@example.org") if "/reset/" in m.body_text]
    assert len(mails) == recovery_module.RESETS_PER_HOUR
    async with env.services.db.session() as session:
        jobs = list(await session.scalars(select(Job).where(Job.ref == recovery_module.JOB_REF)))
    assert {j.status for j in jobs} == {JobStatus.DONE}
    assert all(j.payload == {} for j in jobs)
    # The next hour, the identifier may ask again.
    env.clock.advance(timedelta(hours=1))
    await recovery.do_request_reset("coda")
    await recovery.drain()
    mails = [m for m in await env.mails("coda@example.org") if "/reset/" in m.body_text]
    assert len(mails) == recovery_module.RESETS_PER_HOUR + 1


async def test_parallel_requests_share_the_identifiers_quota(env: Env) -> None:
    """Requests racing for the last of an identifier's hourly uses: exactly the quota's
    worth become jobs (the counter's row orders them)."""
    recovery = env.services.recovery
    await asyncio.gather(*(recovery.do_request_reset("a@example.org") for _ in range(12)))
    async with env.services.db.session() as session:
        count = select(func.count()).select_from(Job).where(Job.ref == recovery_module.JOB_REF)
        assert await session.scalar(count) == recovery_module.REQUESTS_PER_HOUR


async def test_an_answered_request_survives_a_failure_and_is_done_later(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A request answered "sent" is not lost when its work fails (the database or the
    mailer's queue gone at that moment): the job stays pending and is done on a later pass."""
    await registered(env, "tenace")
    notifier = env.services.notifier
    real = notifier.queue_for

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(notifier, "queue_for", broken)
    browser = env.browser()
    page = await browser.submit("/recover/password", {"identifier": "tenace"})
    assert page.status == 200
    await env.services.recovery.drain()
    assert "failed; it stays pending" in caplog.text
    async with env.services.db.session() as session:
        resets = select(func.count()).where(AccountToken.purpose == Purpose.RESET_PASSWORD)
        assert await session.scalar(resets) == 0  # the failed pass left nothing half-done
    monkeypatch.setattr(notifier, "queue_for", real)
    env.clock.advance(timedelta(minutes=1))
    mail = await env.last_mail("tenace@example.org", "/reset/")
    assert "/reset/" in mail.body_text
