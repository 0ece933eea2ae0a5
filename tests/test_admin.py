"""Administration: staff accounts, company representatives, companies, exports."""

from __future__ import annotations

import io

from openpyxl import load_workbook

from cases.companies import do_create_company, list_companies
from tests.support import (
    GOOD_PASSWORD,
    TAX_CODE,
    VALID_VAT,
    Browser,
    Env,
    link_in,
    register,
    registered,
    sign_in,
    staff,
    staff_sign_in,
)


async def _admin(env: Env) -> Browser:
    await staff(env, "capo", role="admin")
    browser = env.browser()
    page = await staff_sign_in(env, browser, "capo")
    assert page.status == 303
    return browser


async def test_admin_creates_staff_who_sets_password_by_link(env: Env) -> None:
    browser = await _admin(env)
    page = await browser.submit(
        "/admin/accounts/new",
        {
            "role": "scheduler",
            "username": "pianifica",
            "first_name": "Paolo",
            "last_name": "Gallo",
            "tax_code": TAX_CODE,
            "email": "paolo@example.org",
            "mobile": "+39 347 111 2222",
        },
    )
    assert page.status == 303
    mail = await env.last_mail("paolo@example.org", "/reset/")
    link = link_in(mail.body_text, "/reset/")
    person = await env.new_browser()
    page = await person.submit(
        link, {"password": "Calendario-Fisso-6", "password_confirm": "Calendario-Fisso-6"}
    )
    assert page.status == 200
    page = await sign_in(person, "pianifica", "Calendario-Fisso-6")
    assert page.headers["Location"].startswith("/login/code")  # staff: two steps


async def test_admin_staff_form_errors_next_to_fields(env: Env) -> None:
    browser = await _admin(env)
    page = await browser.submit(
        "/admin/accounts/new",
        {
            "role": "customer",
            "username": "x",
            "first_name": "",
            "tax_code": "X",
            "email": "no",
            "mobile": "1",
        },
    )
    assert page.status == 422
    for field in ("role", "username", "first_name", "last_name", "tax_code", "email", "mobile"):
        assert f'id="e-{field}"' in page.text, field


async def test_admin_activates_company_representative(env: Env) -> None:
    svc = env.services
    company = await do_create_company(
        svc.db, name="Gas Tricolore", vat=VALID_VAT, sectors=["gas"], now=env.clock.now()
    )
    rep = await env.new_browser()
    await register(env, rep, "rappresentante", kind="company_rep", company_id=str(company.id))
    mail = await env.last_mail("rappresentante@example.org", "/verify/")
    await staff(env, "capo", role="admin")
    await rep.submit(link_in(mail.body_text, "/verify/"), {})
    # The admins are told someone waits.
    note = await env.last_mail("capo@example.org", "rappresentante")
    assert "Gas Tricolore" in note.body_text
    admin = env.browser()
    await staff_sign_in(env, admin, "capo")
    page = await admin.get("/admin/accounts?status=pending_approval")
    assert "rappresentante" in page.text
    account = await svc.accounts.by_username("rappresentante")
    assert account is not None
    page = await admin.submit(
        f"/admin/accounts/{account.id}/activate", {}, form_page="/admin/accounts"
    )
    assert page.status == 303
    assert "Gas Tricolore" in (await env.last_mail("rappresentante@example.org")).body_text
    assert (await sign_in(rep, "rappresentante", GOOD_PASSWORD)).status == 303
    home = await rep.get("/")
    assert "Gas Tricolore" in home.text
    # Activating twice is refused clearly.
    page = await admin.submit(
        f"/admin/accounts/{account.id}/activate", {}, form_page="/admin/accounts"
    )
    assert page.status == 409


async def test_disabling_an_account_ends_its_sessions_at_once(env: Env) -> None:
    await registered(env, "espulso")
    user = env.browser()
    await sign_in(user, "espulso", GOOD_PASSWORD)
    await staff(env, "capo", role="admin")
    admin = await env.new_browser()
    await staff_sign_in(env, admin, "capo")
    account = await env.services.accounts.by_username("espulso")
    assert account is not None
    await admin.submit(f"/admin/accounts/{account.id}/disable", {}, form_page="/admin/accounts")
    assert (await user.get("/account")).status == 303
    page = await sign_in(await env.new_browser(), "espulso", GOOD_PASSWORD)
    assert page.status == 403
    # Re-enabled by the admin.
    await admin.submit(f"/admin/accounts/{account.id}/enable", {}, form_page="/admin/accounts")
    assert (await sign_in(await env.new_browser(), "espulso", GOOD_PASSWORD)).status == 303


async def test_admin_cannot_disable_themself(env: Env) -> None:
    browser = await _admin(env)
    me = await env.services.accounts.by_username("capo")
    assert me is not None
    page = await browser.submit(f"/admin/accounts/{me.id}/disable", {}, form_page="/admin/accounts")
    assert page.status == 403


async def test_unknown_account_id_is_404(env: Env) -> None:
    browser = await _admin(env)
    page = await browser.submit(
        "/admin/accounts/not-a-uuid/disable", {}, form_page="/admin/accounts"
    )
    assert page.status == 404
    page = await browser.submit(
        "/admin/accounts/00000000-0000-0000-0000-000000000000/disable",
        {},
        form_page="/admin/accounts",
    )
    assert page.status == 404


async def test_companies_create_validate_and_deactivate(env: Env) -> None:
    browser = await _admin(env)
    page = await browser.submit("/admin/companies", [("name", ""), ("vat_number", "123")])
    assert page.status == 422
    for field in ("name", "vat_number", "sectors"):
        assert f'id="e-{field}"' in page.text
    page = await browser.submit(
        "/admin/companies",
        [("name", "Acque del Lago"), ("vat_number", VALID_VAT), ("sectors", "water")],
    )
    assert page.status == 303
    page = await browser.submit(
        "/admin/companies",
        [("name", "ACQUE DEL LAGO"), ("vat_number", VALID_VAT), ("sectors", "water")],
    )
    assert page.status == 422 and 'id="e-name"' in page.text
    async with env.client.get("/api/v1/companies") as resp:
        names = [c["name"] for c in (await resp.json())["companies"]]
    assert names == ["Acque del Lago"]
    company = (await list_companies(env.services.db))[0]
    await browser.submit(
        f"/admin/companies/{company.id}/deactivate", {}, form_page="/admin/companies"
    )
    async with env.client.get("/api/v1/companies") as resp:
        assert (await resp.json())["companies"] == []
    # An inactive company is not offered at registration.
    page = await register(
        env, await env.new_browser(), "tardivo", kind="company_rep", company_id=str(company.id)
    )
    assert page.status == 422 and 'id="e-company_id"' in page.text


async def test_accounts_csv_export(env: Env) -> None:
    await registered(env, "esportato", email="=cmd@example.org")
    browser = await _admin(env)
    async with browser.client.get("/admin/accounts?format=csv") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/csv")
        text = (await resp.read()).decode("utf-8-sig")  # with a BOM, for Excel
    assert text.splitlines()[0].startswith("username,first_name")
    assert "esportato" in text and "'=cmd@example.org" in text
    async with browser.client.get("/admin/accounts?format=xlsx&role=customer") as resp:
        assert resp.status == 200 and resp.headers["Content-Disposition"].endswith('.xlsx"')
        book = load_workbook(io.BytesIO(await resp.read()), read_only=True)
    sheet = book.active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "username" and rows[1][3] == "'=cmd@example.org"


async def test_enabling_returns_an_account_to_where_it_was(env: Env) -> None:
    svc = env.services
    company = await do_create_company(
        svc.db, name="Luce Srl", vat=VALID_VAT, sectors=["electricity"], now=env.clock.now()
    )
    rep = env.browser()
    await register(env, rep, "attesa", kind="company_rep", company_id=str(company.id))
    await rep.submit(
        link_in((await env.last_mail("attesa@example.org", "/verify/")).body_text, "/verify/"), {}
    )
    account = await svc.accounts.by_username("attesa")
    assert account is not None and account.status == "pending_approval"
    await svc.accounts.do_set_disabled(account.id, True)
    enabled = await svc.accounts.do_set_disabled(account.id, False)
    assert enabled.status == "pending_approval"  # enabling is not an approval
