"""The case file over HTTP: staff steps, integration deadlines, alerts, documents, lists."""

from __future__ import annotations

import io
import re
import uuid
from email.message import Message
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from cases.casefile import Case
from cases.companies import do_create_company
from cases.documents import Document
from cases.uploads import CONCILIATION_MAX_FILE
from tests.conftest import MailSink
from tests.support import (
    PDF,
    VALID_VAT,
    Browser,
    Env,
    attach,
    file_request,
    registered,
    sign_in,
    signed_in,
    staff,
    staff_sign_in,
)

DELEGATED = {
    "customer_kind": "person",
    "acting_as": "delegate",
    "customer_first_name": "Lucia",
    "customer_last_name": "Bianchi",
    "customer_tax_code": "RSSMRA85T10A562S",
    "mandate_to_settle": "on",
}


class World:
    def __init__(self, env: Env, company_id: str, browsers: dict[str, Browser]) -> None:
        self.env = env
        self.company_id = company_id
        self.b = browsers

    async def step(self, who: str, case_id: str, action: str, note: str = "") -> Any:
        page = await self.b[who].get(f"/cases/{case_id}")
        assert page.status == 200, page.text
        return await self.b[who].post(
            f"/cases/{case_id}/steps/{action}", {"note": note}, csrf=page.csrf
        )


@pytest.fixture
async def world(env: Env) -> World:
    company = await do_create_company(
        env.services.db,
        name="Energia Azzurra",
        vat=VALID_VAT,
        sectors=["electricity", "gas"],
        now=env.clock.now(),
    )
    other = await do_create_company(
        env.services.db, name="Altra Spa", vat="02345670158", sectors=["gas"], now=env.clock.now()
    )
    browsers = {
        "cliente": await signed_in(env, "cliente"),
        "delegato": await signed_in(env, "delegato", kind="delegate", delegate_kind="professional"),
    }
    for name, company_id, language in (
        ("rep", company.id, "en"),
        ("rep.altra", other.id, "it"),
    ):
        await registered(
            env, name, kind="company_rep", company_id=str(company_id), language=language
        )
        admin = env.services.accounts
        account = await admin.by_username(name)
        assert account is not None
        await admin.do_activate(account.id)
        browsers[name] = await env.new_browser()
        assert (await sign_in(browsers[name], name, "Lampada-Verde-42")).status == 303
    await staff(env, "sportello", role="helpdesk")
    browsers["sportello"] = await env.new_browser()
    await staff_sign_in(env, browsers["sportello"], "sportello")
    return World(env, str(company.id), browsers)


def recipients(messages: list[Message]) -> list[str]:
    return sorted(m["To"] for m in messages)


@pytest.mark.smtp
async def test_alerts_go_to_the_delegate_only_and_to_the_company_once_admitted(
    world: World, smtp_server: tuple[MailSink, int]
) -> None:
    sink, _port = smtp_server
    env = world.env
    case_id = await file_request(
        world.b["delegato"],
        world.company_id,
        documents=("complaint", "identity", "delegation"),
        applicant=DELEGATED,
    )
    assert (await world.step("sportello", case_id, "admit")).status == 303
    rep_doc = await attach(world.b["rep"], case_id, "company_document", description="Fatture")
    assert rep_doc.status == 303
    private = await attach(
        world.b["rep"],
        case_id,
        "company_document",
        visible=False,
        description="Per il conciliatore",
    )
    assert private.status == 303
    mails = await env.mails()
    case_mails = [m for m in mails if "CONC-" in m.subject]
    assert sorted(m.to_addr for m in case_mails) == [
        "delegato@example.org",  # acknowledgement
        "delegato@example.org",  # admitted
        "delegato@example.org",  # the company's shared document (not the private one)
        "rep@example.org",  # admitted
    ]
    assert not [m for m in case_mails if m.to_addr == "cliente@example.org"]
    # Delivered through a real SMTP server: plain text, no attachment, in each one's language.
    delivered = await sink.wait_for(len(mails))
    to_rep = [m for m in delivered if m["To"] == "rep@example.org" and "CONC-" in m["Subject"]]
    assert to_rep and "Admitted" in to_rep[0]["Subject"]
    for message in delivered:
        assert not message.is_multipart() or all(
            part.get_filename() is None for part in message.walk()
        )
    page = await world.b["delegato"].get(f"/cases/{case_id}")
    assert page.text.count("delegato@example.org") == 3  # its communications, not the company's


async def test_integration_is_requested_reminded_and_expires(world: World) -> None:
    env = world.env
    case_id = await file_request(world.b["cliente"], world.company_id)
    refused = await world.step("sportello", case_id, "request_integration", "")
    assert refused.status == 422
    page = await world.step(
        "sportello", case_id, "request_integration", "Manca la copia della bolletta."
    )
    assert page.status == 303
    mail = await env.last_mail("cliente@example.org", "Manca la copia della bolletta.")
    assert "30/11/2026 10:00" in mail.body_text  # 7 days, Rome time
    page = await world.b["cliente"].get(f"/cases/{case_id}")
    assert "Integrazione richiesta" in page.text and "30/11/2026 10:00" in page.text
    files = env.services.files
    env.advance(days=4)
    assert await files.do_run_deadlines() == (0, 0)
    env.advance(days=1, hours=1)  # within 48 hours of the end
    assert await files.do_run_deadlines() == (1, 0)
    assert await files.do_run_deadlines() == (0, 0)  # reminded once
    assert await env.last_mail("cliente@example.org", "non sono ancora arrivati")
    env.advance(days=2)
    assert await files.do_run_deadlines() == (0, 1)
    await sign_in(world.b["cliente"], "cliente", "Lampada-Verde-42")  # a week later
    page = await world.b["cliente"].get(f"/cases/{case_id}")
    assert "Non attivata" in page.text
    assert (await world.step("cliente", case_id, "withdraw")).status in (400, 409)


async def test_the_applicant_completes_an_integration(world: World) -> None:
    case_id = await file_request(world.b["cliente"], world.company_id)
    await world.step("sportello", case_id, "request_integration", "Serve la bolletta.")
    assert (await attach(world.b["cliente"], case_id, "bill")).status == 303
    assert (await world.step("cliente", case_id, "complete_integration")).status == 303
    page = await world.b["sportello"].get(f"/cases/{case_id}")
    assert "Inviata" in page.text and "Integrazione documentale completata" in page.text
    async with world.env.services.db.session() as session:
        case = await session.get(Case, uuid.UUID(case_id))
        assert case is not None and case.integration_due_at is None


async def test_company_confirms_and_the_applicant_withdraws(world: World) -> None:
    case_id = await file_request(world.b["cliente"], world.company_id)
    page = await world.b["rep"].get(f"/cases/{case_id}")
    assert page.status == 200 and "Confirm the company takes part" not in page.text
    early = await world.b["rep"].post(f"/cases/{case_id}/confirm", {}, csrf=page.csrf)
    assert early.status == 400
    assert (await world.step("sportello", case_id, "admit")).status == 303
    page = await world.b["rep"].get(f"/cases/{case_id}")
    assert "Confirm the company takes part" in page.text
    assert (
        await world.b["rep"].post(f"/cases/{case_id}/confirm", {}, csrf=page.csrf)
    ).status == 303
    # The company may not take the applicant's or the desk's steps.
    assert (await world.step("rep", case_id, "withdraw")).status == 403
    assert (await world.step("cliente", case_id, "admit")).status in (400, 403)
    assert (await world.step("cliente", case_id, "withdraw", "Risolto")).status == 303
    page = await world.b["cliente"].get(f"/cases/{case_id}")
    assert "Ritirata" in page.text and "confermato la partecipazione" in page.text
    assert await world.env.last_mail("rep@example.org", "Withdrawn")


async def storage_state(env: Env) -> tuple[int, int, int]:
    storage = env.services.settings.resolved_files_dir
    async with env.services.db.session() as session:
        rows = await session.scalar(select(func.count()).select_from(Document)) or 0
    return (
        len(list((storage / "objects").iterdir())),
        len(list((storage / "incoming").iterdir())),
        rows,
    )


async def test_uploads_are_limited_while_streaming_and_downloads_are_attachments(
    world: World,
) -> None:
    env = world.env
    browser = world.b["cliente"]
    case_id = await file_request(browser, world.company_id)
    before = await storage_state(env)
    exact = b"%PDF-" + b"0" * (CONCILIATION_MAX_FILE - 5)
    assert (await attach(browser, case_id, "bill", content=exact)).status == 303
    after = await storage_state(env)
    assert after == (before[0] + 1, 0, before[2] + 1)
    over = await attach(browser, case_id, "bill", content=exact + b"0")
    assert over.status == 413 and "15 MB" in over.text
    assert await storage_state(env) == after  # nothing left behind
    renamed = await attach(browser, case_id, "bill", content=b"MZ\x90\x00" + b"\x00" * 200)
    assert renamed.status == 422
    exe = await attach(browser, case_id, "bill", name="setup.exe")
    assert exe.status == 422
    assert await storage_state(env) == after
    # Download: an attachment never rendered, the bytes as uploaded.
    async with env.services.db.session() as session:
        first = await session.scalar(select(Document).where(Document.size == len(PDF)).limit(1))
    assert first is not None
    async with browser.client.get(f"/documents/{first.id}") as resp:
        body = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Type"] == "application/octet-stream"
    assert body == PDF


async def test_a_document_for_the_conciliator_only_stays_hidden(world: World) -> None:
    case_id = await file_request(world.b["cliente"], world.company_id)
    await world.step("sportello", case_id, "admit")
    page = await attach(world.b["cliente"], case_id, "other", visible=False, name="riservato.pdf")
    assert page.status == 303
    async with world.env.services.db.session() as session:
        secret = await session.scalar(select(Document).where(Document.name == "riservato.pdf"))
    assert secret is not None
    assert "riservato" not in (await world.b["rep"].get(f"/cases/{case_id}")).text
    assert (await world.b["rep"].get(f"/documents/{secret.id}")).status == 404
    assert "riservato.pdf" in (await world.b["sportello"].get(f"/cases/{case_id}")).text
    assert (await world.b["sportello"].get(f"/documents/{secret.id}")).status == 200


async def test_lists_filter_and_export(world: World) -> None:
    first = await file_request(world.b["cliente"], world.company_id)
    second = await file_request(
        world.b["delegato"],
        world.company_id,
        documents=("complaint", "identity", "delegation"),
        applicant=DELEGATED,
        supply={"pod": "IT001E87654321"},  # the same customer's other supply: another dispute
    )
    await world.step("sportello", first, "admit")
    desk = world.b["sportello"]
    listing = await desk.get("/cases")
    assert listing.status == 200 and "2 pratiche" in listing.text
    admitted = await desk.get("/cases?status=admitted")
    assert first in admitted.text and second not in admitted.text
    code = re.search(r"CONC-2026-\d{6}", (await desk.get(f"/cases/{second}")).text)
    assert code
    found = await desk.get(f"/cases?q={code.group(0)}")
    assert second in found.text and first not in found.text
    assert (await desk.get("/cases?status=nonsense")).status == 400
    # Each party sees its own only; the other company none.
    assert second not in (await world.b["cliente"].get("/cases")).text
    assert first not in (await world.b["delegato"].get("/cases")).text
    assert "1 pratica" not in (await world.b["rep.altra"].get("/cases")).text
    assert first not in (await world.b["rep.altra"].get("/cases")).text
    async with desk.client.get("/cases?format=csv&sector=electricity") as resp:
        assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
        text = (await resp.read()).decode("utf-8-sig")
    lines = text.strip().splitlines()
    assert lines[0].startswith("Codice,Stato") and len(lines) == 3
    assert "Lucia Bianchi" in text and "Mario Rossi" in text
    async with desk.client.get("/cases?format=xlsx&status=admitted") as resp:
        assert resp.status == 200
        book = load_workbook(io.BytesIO(await resp.read()), read_only=True)
    rows = list(book.active.iter_rows(values_only=True)) if book.active else []
    assert len(rows) == 2 and rows[1][3] == "Mario Rossi" and rows[1][1] == "Ammessa"


async def test_export_cells_never_become_formulas() -> None:
    from web.exports import cell as export_cell

    assert export_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert export_cell("+39") == "'+39" and export_cell("Rossi") == "Rossi"
