"""The conciliation request through the pages: sections, messages, attachments, submission."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select

from cases.casefile import Case
from cases.companies import do_create_company
from cases.lifecycle import Action
from tests.support import (
    VALID_VAT,
    Env,
    attach,
    file_request,
    fill_request,
    registered,
    sign_in,
    signed_in,
    staff,
    staff_sign_in,
    submit_request,
)


@pytest.fixture
async def company_id(env: Env) -> str:
    company = await do_create_company(
        env.services.db,
        name="Energia Azzurra",
        vat=VALID_VAT,
        sectors=["electricity", "gas"],
        now=env.clock.now(),
    )
    return str(company.id)


async def case_row(env: Env, case_id: str) -> Case:
    async with env.services.db.session() as session:
        case = await session.scalar(select(Case).where(Case.id == uuid.UUID(case_id)))
        assert case is not None
        return case


def field_error(page_text: str, name: str) -> str:
    found = re.search(rf'id="e-{name}"[^>]*>(.*?)</div>', page_text, re.S)
    assert found, f"no error shown for {name}"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


async def test_a_customer_files_a_request_and_gets_a_code_and_an_acknowledgement(
    env: Env, company_id: str
) -> None:
    browser = await signed_in(env, "cliente")
    case_id = await file_request(browser, company_id)
    page = await browser.get(f"/cases/{case_id}")
    assert page.status == 200
    code = re.search(r"CONC-2026-\d{6}", page.text)
    assert code and "Inviata" in page.text
    mail = await env.last_mail("cliente@example.org", code.group(0))
    assert "Energia Azzurra" in mail.body_text and f"/cases/{case_id}" in mail.body_text
    case = await case_row(env, case_id)
    assert case.customer_name == "Mario Rossi" and case.supply_point == "IT001E12345678"
    assert case.availability == ["mon-09:00", "wed-14:00"] and case.meeting_mode == "chat"
    assert case.answers["amount"] == "120.50"
    # The communications list the acknowledgement; the timeline the submission.
    assert "Domanda ricevuta" in page.text and "Domanda inviata" in page.text


async def test_each_section_says_what_is_wrong_and_keeps_what_was_typed(
    env: Env, company_id: str
) -> None:
    browser = await signed_in(env, "cliente")
    case_id, pages = await fill_request(
        browser,
        company_id,
        supply={"pod": "IT001X123", "postcode": "2012"},
        complaint={"complaint_sent_on": "2026-11-01"},
        dispute={"amount": "molti soldi"},
        meeting={"availability": [], "notes": ""},
    )
    supply = pages["supply"]
    assert supply.status == 422
    assert "POD" in field_error(supply.text, "pod")
    assert "cinque cifre" in field_error(supply.text, "postcode")
    assert 'value="IT001X123"' in supply.text  # kept as typed
    complaint = pages["complaint"]
    assert complaint.status == 422
    # 40 days after 1 November 2026: the message says from when.
    assert "2026-12-11" in field_error(complaint.text, "complaint_sent_on")
    assert "euro" in field_error(pages["dispute"].text, "amount")
    assert "note" in field_error(pages["meeting"].text, "availability")
    summary = await browser.get(f"/cases/{case_id}/request/summary")
    assert summary.text.count("da completare") == 4
    refused = await submit_request(browser, case_id)
    assert refused.status == 422 and "incomplete" in refused.text


async def test_tax_code_vat_and_pdr_are_checked(env: Env, company_id: str) -> None:
    browser = await signed_in(env, "cliente")
    _case_id, pages = await fill_request(
        browser,
        company_id,
        applicant={
            "customer_kind": "legal_entity",
            "acting_as": "legal_representative",
            "entity_name": "Bar Sport",
            "entity_vat": "01234560018",
        },
        supply={"sector": "gas", "pdr": "1234"},
    )
    assert "partita IVA" in field_error(pages["applicant"].text, "entity_vat")
    assert "PDR" in field_error(pages["supply"].text, "pdr") or "14" in field_error(
        pages["supply"].text, "pdr"
    )
    delegate = await signed_in(env, "delegato", kind="delegate", delegate_kind="professional")
    _case_id, pages = await fill_request(
        delegate,
        company_id,
        applicant={
            "customer_kind": "person",
            "acting_as": "delegate",
            "customer_first_name": "Lucia",
            "customer_last_name": "Bianchi",
            "customer_tax_code": "RSSMRA85T10A562X",
        },
    )
    page = pages["applicant"]
    assert "codice fiscale" in field_error(page.text, "customer_tax_code")
    assert "conciliare" in field_error(page.text, "mandate_to_settle")


async def test_mandatory_attachments_follow_the_answers(env: Env, company_id: str) -> None:
    browser = await signed_in(env, "cliente")
    case_id, _pages = await fill_request(
        browser,
        company_id,
        applicant={
            "customer_kind": "legal_entity",
            "acting_as": "legal_representative",
            "entity_name": "Bar Sport",
            "entity_vat": VALID_VAT,
        },
        complaint={"company_answered": "yes", "company_answered_on": "2026-10-01"},
    )
    summary = await browser.get(f"/cases/{case_id}/request/summary")
    listed = re.search(r'<ul id="required-documents">(.*?)</ul>', summary.text, re.S)
    assert listed
    for label in ("Reclamo", "Risposta", "identità", "Visura"):
        assert label in listed.group(1)
    assert listed.group(1).count("mancante") == 4
    assert (await attach(browser, case_id, "complaint")).status == 303
    assert (await attach(browser, case_id, "identity")).status == 303
    refused = await submit_request(browser, case_id)
    assert refused.status == 422 and "allegati obbligatori" in refused.text
    assert (await attach(browser, case_id, "company_answer")).status == 303
    assert (await attach(browser, case_id, "chamber_certificate")).status == 303
    assert (await submit_request(browser, case_id)).status == 303


async def test_a_delegated_case_mails_only_the_delegate(env: Env, company_id: str) -> None:
    delegate = await signed_in(env, "delegato", kind="delegate", delegate_kind="professional")
    case_id = await file_request(
        delegate,
        company_id,
        documents=("complaint", "identity", "delegation"),
        applicant={
            "customer_kind": "person",
            "acting_as": "delegate",
            "customer_first_name": "Lucia",
            "customer_last_name": "Bianchi",
            "customer_tax_code": "RSSMRA85T10A562S",
            "mandate_to_settle": "on",
        },
    )
    assert await env.mails("delegato@example.org")
    case = await case_row(env, case_id)
    assert case.delegate_id is not None and case.customer_id is None
    assert case.customer_name == "Lucia Bianchi"


async def test_the_same_dispute_cannot_be_filed_again(env: Env, company_id: str) -> None:
    browser = await signed_in(env, "cliente")
    first = await file_request(browser, company_id)
    case_id, _ = await fill_request(browser, company_id)
    for category in ("complaint", "identity"):
        await attach(browser, case_id, category)
    page = await submit_request(browser, case_id)
    assert page.status == 422 and "già aperta" in page.text
    account = await env.services.accounts.by_username("cliente")
    assert account is not None
    await env.services.files.do_step(account, uuid.UUID(first), Action.WITHDRAW)
    page = await submit_request(browser, case_id)
    code = (await case_row(env, first)).code
    assert page.status == 422 and f"{code}" in page.text and "ripresentata" in page.text
    # Another supply point is another dispute.
    other, _ = await fill_request(browser, company_id, supply={"pod": "IT001E87654321"})
    for category in ("complaint", "identity"):
        await attach(browser, other, category)
    assert (await submit_request(browser, other)).status == 303


async def test_staff_enter_a_postal_request_for_a_private_customer(
    env: Env, company_id: str
) -> None:
    await staff(env, "sportello", role="helpdesk")
    desk = await env.new_browser()
    await staff_sign_in(env, desk, "sportello")
    case_id = await file_request(
        desk,
        company_id,
        applicant={
            "customer_kind": "person",
            "acting_as": "self",
            "customer_first_name": "Lucia",
            "customer_last_name": "Bianchi",
            "customer_tax_code": "RSSMRA85T10A562S",
            "customer_email": "lucia@example.org",
            "customer_language": "en",
        },
    )
    mail = await env.last_mail("lucia@example.org", "")
    assert "Request received" in mail.subject
    case = await case_row(env, case_id)
    assert case.contact_email == "lucia@example.org" and case.customer_id is None
    page = await desk.get(f"/cases/{case_id}")
    assert "Inserita dal personale" in page.text


async def test_a_draft_is_kept_and_private(env: Env, company_id: str) -> None:
    browser = await signed_in(env, "cliente")
    case_id, _ = await fill_request(browser, company_id, dispute={"description": ""})
    listing = await browser.get("/cases")
    assert f"/cases/{case_id}/request/summary" in listing.text
    page = await browser.get(f"/cases/{case_id}/request/dispute")
    assert "Rettifica della bolletta." in page.text
    await registered(env, "estraneo")
    other = await env.new_browser()
    await sign_in(other, "estraneo", "Lampada-Verde-42")
    assert (await other.get(f"/cases/{case_id}/request/summary")).status == 404
    assert (await other.get(f"/cases/{case_id}")).status == 404
    assert case_id not in (await other.get("/cases")).text
