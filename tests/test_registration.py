"""Registration through the pages: validation next to each field, verification by link."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from cases.accounts import Account, Status
from cases.companies import do_create_company
from core.errors import ErrorCode, FieldErrors, Throttled
from tests.support import GOOD_PASSWORD, Env, link_in, register, registration, sign_in


async def test_register_verify_and_sign_in(env: Env) -> None:
    browser = env.browser()
    page = await register(env, browser, "mario.rossi")
    assert page.status == 303 and page.headers["Location"] == "/register/done"

    # Before verification the right password does not open a session.
    page = await sign_in(browser, "mario.rossi", GOOD_PASSWORD)
    assert page.status == 403
    assert "confermato" in page.text  # Italian by default

    mail = await env.last_mail("mario.rossi@example.org", "/verify/")
    link = link_in(mail.body_text, "/verify/")
    assert mail.body_text.count("http://concilia.test/verify/") == 1
    # Opening the link shows a confirmation button; only the POST uses the token.
    page = await browser.get(link)
    assert page.status == 200 and "mario.rossi" in page.text
    page = await browser.post(link, {}, csrf=page.csrf)
    assert page.status == 200

    # The link works once.
    again = await browser.get(link)
    assert again.status == 410

    page = await sign_in(browser, "mario.rossi", GOOD_PASSWORD)
    assert page.status == 303 and page.headers["Location"] == "/"
    home = await browser.get("/")
    assert "Servizio Conciliazione" in home.text and "Help desk" in home.text


async def test_every_wrong_field_is_marked_and_input_kept(env: Env) -> None:
    browser = env.browser()
    form = registration(
        "x",  # too short
        first_name="Mario2",
        tax_code="RSSMRA85T10A562T",  # wrong check character
        email="not-an-address",
        mobile="12",
        password="short",
        password_confirm="short",
    )
    del form["privacy"]
    page = await browser.submit("/register", form)
    assert page.status == 422
    for field in ("first_name", "tax_code", "email", "mobile", "username", "password", "privacy"):
        assert f'id="e-{field}"' in page.text, field
        assert 'aria-invalid="true"' in page.text
    # What was typed is kept, except passwords.
    assert 'value="Mario2"' in page.text
    assert 'value="RSSMRA85T10A562T"' in page.text
    assert "short" not in page.text.split('id="f-password"')[1].split(">")[0]
    async with env.services.db.session() as session:
        assert list(await session.scalars(select(Account))) == []
    assert await env.mails() == []


async def test_help_text_and_required_marks(env: Env) -> None:
    page = await env.browser().get("/register")
    for field in ("first_name", "last_name", "tax_code", "email", "mobile", "username", "password"):
        assert f'aria-controls="h-{field}"' in page.text, field
        assert f'id="h-{field}"' in page.text
    assert page.text.count('class="req"') >= 8


async def test_username_taken(env: Env) -> None:
    browser = env.browser()
    assert (await register(env, browser, "giulia")).status == 303
    page = await register(env, env.browser(), "GIULIA", email="other@example.org")
    assert page.status == 422 and 'id="e-username"' in page.text


async def test_delegate_needs_kind_and_association_name(env: Env) -> None:
    browser = env.browser()
    page = await register(env, browser, "delegato1", kind="delegate")
    assert page.status == 422 and 'id="e-delegate_kind"' in page.text
    page = await register(env, browser, "delegato1", kind="delegate", delegate_kind="association")
    assert page.status == 422 and 'id="e-association_name"' in page.text
    page = await register(
        env,
        browser,
        "delegato1",
        kind="delegate",
        delegate_kind="association",
        association_name="Consumatori Uniti",
    )
    assert page.status == 303


async def test_legal_entity_needs_valid_partita_iva(env: Env) -> None:
    browser = env.browser()
    page = await register(
        env,
        browser,
        "negozio",
        legal_entity="on",
        legal_entity_name="Bar Sport",
        legal_entity_vat="12345678901",
    )
    assert page.status == 422 and 'id="e-legal_entity_vat"' in page.text
    page = await register(
        env,
        browser,
        "negozio",
        legal_entity="on",
        legal_entity_name="Bar Sport",
        legal_entity_vat="01234560017",
    )
    assert page.status == 303
    async with env.services.db.session() as session:
        account = await session.scalar(select(Account).where(Account.username == "negozio"))
        assert account is not None and account.legal_entity_vat == "01234560017"


async def test_company_representative_waits_for_admin(env: Env) -> None:
    svc = env.services
    company = await do_create_company(
        svc.db,
        name="Energia Azzurra",
        vat="01234560017",
        sectors=["electricity"],
        now=env.clock.now(),
    )
    browser = env.browser()
    page = await register(env, browser, "rep1", kind="company_rep", company_id=str(company.id))
    assert page.status == 303
    mail = await env.last_mail("rep1@example.org", "/verify/")
    link = link_in(mail.body_text, "/verify/")
    page = await browser.submit(link, {})
    assert page.status == 200
    page = await sign_in(browser, "rep1", GOOD_PASSWORD)
    assert page.status == 403
    account = await svc.accounts.by_username("rep1")
    assert account is not None and account.status == Status.PENDING_APPROVAL


async def test_unknown_company_refused(env: Env) -> None:
    page = await register(
        env,
        env.browser(),
        "rep2",
        kind="company_rep",
        company_id="00000000-0000-0000-0000-000000000000",
    )
    assert page.status == 422 and 'id="e-company_id"' in page.text


async def test_staff_roles_cannot_self_register(env: Env) -> None:
    page = await register(env, env.browser(), "furbo", kind="admin")
    assert page.status == 422 and 'id="e-kind"' in page.text
    assert await env.services.accounts.by_username("furbo") is None


async def test_verification_link_expires(env: Env) -> None:
    browser = env.browser()
    await register(env, browser, "ritardatario")
    link = link_in(
        (await env.last_mail("ritardatario@example.org", "/verify/")).body_text, "/verify/"
    )
    env.advance(hours=49)
    assert (await browser.get(link)).status == 410
    page = await browser.post(link, {}, csrf=(await browser.get("/login")).csrf)
    assert page.status == 410
    # Signing in with the right password sends a fresh link, which works.
    assert (await sign_in(browser, "ritardatario", GOOD_PASSWORD)).status == 403
    fresh = link_in(
        (await env.last_mail("ritardatario@example.org", "/verify/")).body_text, "/verify/"
    )
    assert fresh != link
    assert (await browser.submit(fresh, {})).status == 200
    assert (await sign_in(browser, "ritardatario", GOOD_PASSWORD)).status == 303


@pytest.mark.parametrize("settings_overrides", [{"registrations_per_hour": 2}])
async def test_parallel_registrations_from_one_address_share_its_hourly_limit(env: Env) -> None:
    """Registrations racing from one address: exactly the limit's worth are created, the
    rest refused with 429; a refused form (username taken) uses no place."""
    accounts = env.services.accounts
    taken = await accounts.do_register(registration("primo"), client="192.0.2.7")
    assert taken.username == "primo"
    with pytest.raises(FieldErrors):
        await accounts.do_register(registration("primo"), client="192.0.2.7")

    async def attempt(n: int) -> str:
        try:
            await accounts.do_register(registration(f"gara{n}"), client="192.0.2.7")
        except Throttled as exc:
            assert exc.code == ErrorCode.RATE_LIMITED and exc.retry_after > 0
            return "refused"
        return "created"

    results = await asyncio.gather(*(attempt(n) for n in range(6)))
    assert sorted(results) == ["created"] + ["refused"] * 5
    created = [await accounts.by_username(f"gara{n}") for n in range(6)]
    assert sum(a is not None for a in created) == 1
    # Another address is counted apart.
    assert await accounts.do_register(registration("altrove"), client="198.51.100.1")
