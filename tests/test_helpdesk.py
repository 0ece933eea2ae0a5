"""The help desk: tickets signed in or not, streamed attachments with nothing left behind on
refusal, the operators' queue, answers by e-mail, closed doors for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from io import BytesIO
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import FormData
from openpyxl import load_workbook
from sqlalchemy import func, select

from cases.helpdesk import (
    FilesTooLarge,
    HelpDesk,
    Ticket,
    TicketAttachment,
    TicketMessage,
    check_ticket,
)
from cases.storage import LocalStorage, sweep_orphans
from cases.uploads import HELPDESK_MAX_TOTAL, MB
from core.errors import ErrorCode, FieldErrors, UserError
from core.quota import QuotaUse
from tests.support import (
    Browser,
    Env,
    Page,
    link_in,
    signed_in,
    staff,
    staff_sign_in,
)
from web.streams import content_disposition
from web.views.api import openapi_document
from web.views.helpdesk import FORM_OVERHEAD

PDF = b"%PDF-1.7\n" + b"0" * 1000
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
JPG = b"\xff\xd8\xff\xe0" + b"\x00" * 200
BMP = b"BM" + b"\x00" * 200
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200
EXE = b"MZ\x90\x00" + b"\x00" * 200
TOKEN_RE = re.compile(r'action="/helpdesk[^"?]*\?csrf_token=([0-9a-f]+)"')
CODE_RE = re.compile(r"HD-2026-\d{6}")


def docx() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


def big_pdf(size: int) -> bytes:
    return b"%PDF-" + b"0" * (size - 5)


Files = list[tuple[str, bytes]]


def form(fields: dict[str, str], files: Files | None = None) -> FormData:
    """A multipart form as a browser sends it: the text fields first, then the files."""
    # Browsers send file names as they are (UTF-8), not percent-encoded as aiohttp would.
    data = FormData(default_to_multipart=True, quote_fields=False)
    for name, value in fields.items():
        data.add_field(name, value)
    for filename, content in files or []:
        data.add_field("files", content, filename=filename, content_type="application/octet-stream")
    return data


def token_of(page: Page) -> str:
    found = TOKEN_RE.search(page.text)
    assert found, f"no upload form with its token on {page.url}"
    return found.group(1)


async def post_form(browser: Browser, path: str, data: FormData, token: str | None) -> Page:
    target = path if token is None else f"{path}?csrf_token={token}"
    async with browser.client.post(target, data=data, allow_redirects=False) as resp:
        page = Page(resp.status, await resp.text(), resp.headers, path)
    browser.last = page
    return page


ANONYMOUS = {
    "category": "information",
    "subject": "Tempi della conciliazione",
    "message": "Quanto dura una conciliazione?\nGrazie.",
    "name": "Lucia Bianchi",
    "email": "lucia@example.org",
}
SIGNED_IN = {"category": "support", "subject": "Non vedo il fascicolo", "message": "Aiuto."}


async def write(browser: Browser, fields: dict[str, str], files: Files | None = None) -> Page:
    """Open the help-desk page and send its form."""
    page = await browser.get("/helpdesk")
    assert page.status == 200
    return await post_form(browser, "/helpdesk", form(fields, files), token_of(page))


async def operator(env: Env, username: str = "sportello") -> Browser:
    await staff(env, username, role="helpdesk")
    browser = await env.new_browser()
    assert (await staff_sign_in(env, browser, username)).status == 303
    return browser


async def tickets(env: Env) -> list[Ticket]:
    async with env.services.db.session() as session:
        return list(await session.scalars(select(Ticket).order_by(Ticket.code)))


async def count(env: Env, table: type[Any]) -> int:
    async with env.services.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def nothing_left(env: Env, tickets_before: int = 0) -> None:
    """No ticket, message or attachment row, no stored object beyond the rows' own."""
    assert await count(env, Ticket) == tickets_before
    async with env.services.db.session() as session:
        keys = set(await session.scalars(select(TicketAttachment.storage_key)))
    storage = env.services.storage
    assert isinstance(storage, LocalStorage)
    assert set(await storage.keys()) == keys
    assert list(storage.incoming.iterdir()) == []


async def ticket_path(browser: Browser, page: Page) -> str:
    assert page.status == 303, page.text
    location = str(page.headers["Location"])
    assert location.endswith("?sent=1")
    return location.removesuffix("?sent=1")


def validate(body: Any, schema: str) -> None:
    """``body`` matches the named schema of the OpenAPI document."""
    document = openapi_document()
    root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    jsonschema_rs.Draft202012Validator(root).validate(body)


async def api_token(browser: Browser) -> str:
    return token_of(await browser.get("/helpdesk"))


# -- creating tickets -----------------------------------------------------------------------


async def test_anonymous_ticket_shows_its_code_at_once_and_operators_hear_of_it(
    env: Env,
) -> None:
    await staff(env, "sportello", role="helpdesk")
    await staff(env, "sportello.spento", role="helpdesk")
    disabled = await env.services.accounts.by_username("sportello.spento")
    assert disabled is not None
    await env.services.accounts.do_set_disabled(disabled.id, True)
    browser = env.browser()
    page = await browser.get("/helpdesk")
    assert page.status == 200  # no sign-in needed
    assert 'name="name"' in page.text and 'name="email"' in page.text
    assert 'enctype="multipart/form-data"' in page.text
    assert re.search(r'type="file"[^>]* multiple accept=".bmp,.doc,', page.text)
    page = await post_form(browser, "/helpdesk", form(ANONYMOUS), token_of(page))
    assert page.status == 200, page.text
    assert 'data-ticket-code="HD-2026-000001"' in page.text
    assert "lucia@example.org" in page.text
    [ticket] = await tickets(env)
    assert ticket.code == "HD-2026-000001" and ticket.status == "open"
    assert ticket.account_id is None and ticket.contact_name == "Lucia Bianchi"
    assert ticket.contact_email == "lucia@example.org" and ticket.contact_language == "it"
    mail = await env.last_mail("sportello@example.org", "HD-2026-000001")
    assert "Tempi della conciliazione" in mail.body_text
    assert f"http://concilia.test/helpdesk/tickets/{ticket.id}" in mail.body_text
    assert all(
        "HD-2026" not in m.body_text for m in await env.mails("sportello.spento@example.org")
    )
    # Codes follow one another; the message keeps its line break.
    page = await write(env.browser(), {**ANONYMOUS, "subject": "Altro"})
    assert 'data-ticket-code="HD-2026-000002"' in page.text
    async with env.services.db.session() as session:
        bodies = list(await session.scalars(select(TicketMessage.body).order_by(TicketMessage.id)))
    assert bodies[0] == "Quanto dura una conciliazione?\nGrazie."


async def test_signed_in_ticket_goes_to_its_page_with_the_code(env: Env) -> None:
    browser = await signed_in(env, "cliente")
    page = await browser.get("/helpdesk")
    assert 'name="name"' not in page.text and 'name="email"' not in page.text
    path = await ticket_path(browser, await write(browser, SIGNED_IN))
    page = await browser.get(path + "?sent=1")
    assert page.status == 200
    assert "HD-2026-000001" in page.text and "Non vedo il fascicolo" in page.text
    [ticket] = await tickets(env)
    account = await env.services.accounts.by_username("cliente")
    assert account is not None and ticket.account_id == account.id
    assert ticket.contact_email is None
    async with env.services.db.session() as session:  # signed in: no limit of an address
        assert not await session.scalar(select(QuotaUse).where(QuotaUse.key.like("helpdesk:%")))
    page = await browser.get("/helpdesk/tickets")
    assert page.status == 200 and f'href="{path}"' in page.text


async def test_wrong_fields_are_named_and_nothing_is_stored(env: Env) -> None:
    browser = env.browser()
    page = await write(
        browser,
        {"category": "gossip", "subject": "", "message": "x" * 5001, "name": "", "email": "no"},
        [("nota.pdf", PDF)],
    )
    assert page.status == 422
    for name in ("category", "subject", "message", "name", "email"):
        assert f'id="e-{name}"' in page.text, name
    # What was typed comes back (the long message too), the files are not kept.
    assert 'value="no"' in page.text
    await nothing_left(env)
    fields = check_ticket({**ANONYMOUS, "message": "x" * 5000}, signed_in=False, language="en")
    assert len(fields.body) == 5000 and fields.language == "en"


# -- attachments ----------------------------------------------------------------------------


async def test_five_files_accepted_six_refused_with_nothing_left(env: Env) -> None:
    browser = await signed_in(env, "allegati")
    six = [
        ("a.pdf", PDF),
        ("b.png", PNG),
        ("c.jpg", JPG),
        ("d.bmp", BMP),
        ("e.wav", WAV),
        ("f.docx", docx()),
    ]
    page = await write(browser, SIGNED_IN, six)
    assert page.status == 422 and 'id="e-files"' in page.text
    assert "data-error-code" not in page.text  # the form again, not an error page
    await nothing_left(env)
    # Extensions in any case; office files by their structure.
    five = [("A.PDF", PDF), ("b.png", PNG), ("c.JPG", JPG), ("d.bmp", BMP), ("f.docx", docx())]
    path = await ticket_path(browser, await write(browser, SIGNED_IN, five))
    page = await browser.get(path)
    assert page.text.count('href="/helpdesk/attachments/') == 5
    assert "A.PDF" in page.text and "f.docx" in page.text
    assert await count(env, TicketAttachment) == 5
    await nothing_left(env, tickets_before=1)


async def test_15_mb_in_total_accepted_one_byte_more_refused_while_streaming(env: Env) -> None:
    browser = await signed_in(env, "grandi")
    five = 5 * MB
    over = [("a.pdf", big_pdf(five)), ("b.pdf", big_pdf(five)), ("c.pdf", big_pdf(five + 1))]
    page = await write(browser, SIGNED_IN, over)
    assert page.status == 413 and 'id="e-files"' in page.text
    await nothing_left(env)
    # Over the API the same refusal is a JSON error.
    token = await api_token(browser)
    async with browser.client.post(
        "/api/v1/helpdesk/tickets",
        data=form(SIGNED_IN, over),
        headers={"X-CSRF-Token": token},
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "files_too_large"
    await nothing_left(env)
    exact = [("a.pdf", big_pdf(five)), ("b.pdf", big_pdf(five)), ("c.pdf", big_pdf(five))]
    path = await ticket_path(browser, await write(browser, SIGNED_IN, exact))
    async with env.services.db.session() as session:
        sizes = list(await session.scalars(select(TicketAttachment.size)))
    assert sum(sizes) == HELPDESK_MAX_TOTAL
    assert (await browser.get(path)).status == 200
    await nothing_left(env, tickets_before=1)


async def test_a_body_announced_too_large_is_refused_before_it_is_read(env: Env) -> None:
    browser = await signed_in(env, "enorme")
    page = await write(
        browser, SIGNED_IN, [("a.pdf", big_pdf(HELPDESK_MAX_TOTAL + FORM_OVERHEAD + 1))]
    )
    assert page.status == 413 and 'id="e-files"' in page.text
    await nothing_left(env)
    # The answer comes before a byte of the body is sent: only the announced length counts.
    visitor = env.browser()
    token = token_of(await visitor.get("/helpdesk"))
    server = env.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            (
                f"POST /helpdesk?csrf_token={token} HTTP/1.1\r\n"
                f"Host: {server.host}:{server.port}\r\n"
                f"Cookie: concilia_csrf={visitor.cookie('concilia_csrf')}\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\n"
                f"Content-Length: {HELPDESK_MAX_TOTAL + FORM_OVERHEAD + 1}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert status.startswith(b"HTTP/1.1 413")
    await nothing_left(env)


async def test_refused_type_and_renamed_executable_leave_nothing(env: Env) -> None:
    browser = env.browser()
    page = await write(browser, ANONYMOUS, [("ok.pdf", PDF), ("programma.exe", EXE)])
    assert page.status == 422 and 'id="e-files"' in page.text
    await nothing_left(env)
    page = await write(browser, ANONYMOUS, [("ok.pdf", PDF), ("fattura.pdf", EXE)])
    assert page.status == 422 and 'id="e-files"' in page.text
    await nothing_left(env)
    token = await api_token(browser)
    for files, code in (
        ([("programma.exe", EXE)], "file_type_not_allowed"),
        ([("fattura.pdf", EXE)], "file_content_mismatch"),
        ([("vuoto.pdf", b"")], "file_empty"),
    ):
        async with browser.client.post(
            "/api/v1/helpdesk/tickets",
            data=form(ANONYMOUS, files),
            headers={"X-CSRF-Token": token},
        ) as resp:
            assert resp.status == 422
            body = await resp.json()
        validate(body, "Error")
        assert body["error"]["fields"] == {"files": [code]}
    await nothing_left(env)


async def test_fields_after_the_files_are_refused(env: Env) -> None:
    browser = env.browser()
    data = form(ANONYMOUS, [("a.pdf", PDF)])
    data.add_field("extra", "late")
    page = await post_form(browser, "/helpdesk", data, token_of(await browser.get("/helpdesk")))
    assert page.status == 400 and 'data-error-code="bad_request"' in page.text
    # Files before the fields: the form is checked at the first file, and lacks everything.
    data = FormData(default_to_multipart=True)
    data.add_field("files", PDF, filename="a.pdf", content_type="application/pdf")
    for name, value in ANONYMOUS.items():
        data.add_field(name, value)
    page = await post_form(browser, "/helpdesk", data, token_of(await browser.get("/helpdesk")))
    assert page.status == 422 and 'id="e-subject"' in page.text
    # A body that is not multipart at all.
    token = token_of(await browser.get("/helpdesk"))
    async with browser.client.post(
        f"/helpdesk?csrf_token={token}",
        data=b"garbage without any boundary",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    ) as resp:
        assert resp.status == 400
    await nothing_left(env)


# -- operators ------------------------------------------------------------------------------


async def test_operators_answer_and_close_and_senders_are_mailed(env: Env) -> None:
    desk = await operator(env)
    sender = await signed_in(env, "mittente")
    path = await ticket_path(sender, await write(sender, SIGNED_IN, [("schermata.png", PNG)]))
    anonymous = env.browser()
    await anonymous.get("/lang/en?next=/helpdesk")  # the page in English
    anonymous_page = await write(
        anonymous, {**ANONYMOUS, "category": "report", "email": "anna@example.org"}
    )
    assert anonymous_page.status == 200
    supported, reported = await tickets(env)
    assert reported.contact_language == "en"

    page = await desk.get("/desk/helpdesk")
    assert page.status == 200
    assert supported.code in page.text and reported.code in page.text
    assert "anna@example.org" in page.text
    page = await desk.get("/desk/helpdesk?category=report")
    assert reported.code in page.text and supported.code not in page.text
    page = await desk.get("/desk/helpdesk?status=answered")
    assert "HD-2026" not in page.text
    assert (await desk.get("/desk/helpdesk?status=nonsense")).status == 400

    # The operator reads the thread with the sender's file, and answers.
    page = await desk.get(path)
    assert (
        page.status == 200 and "schermata.png" in page.text and "/answer?csrf_token=" in page.text
    )
    answer = "Buongiorno, il fascicolo compare dopo l'invio della domanda."
    page = await post_form(desk, path + "/answer", form({"message": answer}), token_of(page))
    assert page.status == 303
    mail = await env.last_mail("mittente@example.org", answer)
    assert supported.code in mail.subject
    assert link_in(mail.body_text, "/helpdesk/tickets/") == path
    assert "schermata" not in mail.body_text
    page = await sender.get(path)
    assert answer.replace("'", "&#39;") in page.text and 'data-status="answered"' in page.text
    assert "Anna Neri" not in page.text  # operators' names stay with operators

    # The anonymous sender gets the text in English, and no link.
    reported_path = f"/helpdesk/tickets/{reported.id}"
    token = token_of(await desk.get(reported_path))
    page = await post_form(
        desk, reported_path + "/answer", form({"message": "Thank you, noted."}), token
    )
    assert page.status == 303
    mail = await env.last_mail("anna@example.org", "Thank you, noted.")
    assert mail.subject == f"Help desk: answer to your request {reported.code}"
    assert "/helpdesk/tickets/" not in mail.body_text and reported.code in mail.body_text

    # The sender follows up: the ticket waits for the desk again.
    page = await sender.get(path)
    page = await post_form(
        sender, path + "/messages", form({"message": "Grazie, ora lo vedo."}), token_of(page)
    )
    assert page.status == 303
    assert 'data-status="open"' in (await sender.get(path)).text

    # Closing: the forms go, and the API refuses further messages.
    page = await desk.get(path)
    page = await desk.post(path + "/close", {}, csrf=page.csrf)
    assert page.status == 303
    page = await sender.get(path)
    assert 'data-status="closed"' in page.text and "/messages?csrf_token=" not in page.text
    async with sender.client.post(
        f"/api/v1/helpdesk/tickets/{supported.id}/messages",
        json={"message": "Ancora una cosa"},
        headers={"X-CSRF-Token": token_of(await sender.get("/helpdesk"))},
    ) as resp:
        assert resp.status == 409


async def test_the_sender_cannot_answer_nor_close_and_customers_have_no_queue(env: Env) -> None:
    sender = await signed_in(env, "curioso")
    path = await ticket_path(sender, await write(sender, SIGNED_IN))
    page = await sender.get(path)
    assert "/answer?csrf_token=" not in page.text and "/close" not in page.text
    token = token_of(page)
    page = await post_form(sender, path + "/answer", form({"message": "Risolto!"}), token)
    assert page.status == 403
    assert (await sender.get("/desk/helpdesk")).status == 403
    async with sender.client.get("/api/v1/helpdesk/queue") as resp:
        assert resp.status == 403
    [ticket] = await tickets(env)
    assert ticket.status == "open"


# -- nobody else ----------------------------------------------------------------------------


async def test_other_people_tickets_and_files_are_not_found(env: Env) -> None:
    owner = await signed_in(env, "proprietario")
    path = await ticket_path(owner, await write(owner, SIGNED_IN, [("privato.pdf", PDF)]))
    [ticket] = await tickets(env)
    async with env.services.db.session() as session:
        attachment_id = await session.scalar(select(TicketAttachment.id))
    stranger = await signed_in(env, "estraneo")
    token = token_of(await stranger.get("/helpdesk"))
    for target in (
        path,
        f"/helpdesk/attachments/{attachment_id}",
        f"/helpdesk/tickets/{uuid.uuid4()}",
        f"/helpdesk/attachments/{uuid.uuid4()}",
        "/helpdesk/tickets/not-an-id",
    ):
        page = await stranger.get(target)
        assert page.status == 404 and 'data-error-code="not_found"' in page.text, target
    for target in (
        f"/api/v1/helpdesk/tickets/{ticket.id}",
        f"/api/v1/helpdesk/attachments/{attachment_id}",
    ):
        async with stranger.client.get(target) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
    for action in ("messages", "answer", "close"):
        async with stranger.client.post(
            f"/api/v1/helpdesk/tickets/{ticket.id}/{action}",
            json={"message": "mio?"},
            headers={"X-CSRF-Token": token},
        ) as resp:
            assert resp.status == 404, action
    page = await post_form(stranger, path + "/messages", form({"message": "mio?"}), token)
    assert page.status == 404
    async with stranger.client.get("/api/v1/helpdesk/tickets") as resp:
        assert (await resp.json()) == {"tickets": []}
    # Signed out: sign in first (pages), 401 (API).
    anonymous = await env.new_browser()
    page = await anonymous.get(path)
    assert page.status == 303 and page.headers["Location"].startswith("/login?next=")
    async with anonymous.client.get(f"/api/v1/helpdesk/attachments/{attachment_id}") as resp:
        assert resp.status == 401
    assert await count(env, TicketMessage) == 1


async def test_downloads_are_attachments_never_sniffed(env: Env) -> None:
    owner = await signed_in(env, "scarico")
    name = "ricevuta è 2026.pdf"
    path = await ticket_path(owner, await write(owner, SIGNED_IN, [(name, PDF)]))
    page = await owner.get(path)
    found = re.search(r'href="(/helpdesk/attachments/[0-9a-f-]+)"', page.text)
    assert found
    async with owner.client.get(found.group(1)) as resp:
        assert resp.status == 200
        assert await resp.read() == PDF
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        disposition = resp.headers["Content-Disposition"]
    assert disposition == (
        'attachment; filename="ricevuta _ 2026.pdf"; '
        "filename*=UTF-8''ricevuta%20%C3%A8%202026.pdf"
    )
    assert content_disposition("plain.pdf") == 'attachment; filename="plain.pdf"'
    assert content_disposition('a"b\\c%.pdf') == (
        "attachment; filename=\"a_b_c_.pdf\"; filename*=UTF-8''a%22b%5Cc%25.pdf"
    )
    api_path = found.group(1).replace("/helpdesk/", "/api/v1/helpdesk/")
    async with owner.client.get(api_path) as resp:
        assert resp.status == 200 and await resp.read() == PDF


# -- CSRF, limits, text -----------------------------------------------------------------------


async def test_uploads_need_the_csrf_token_in_the_url_or_header(env: Env) -> None:
    browser = env.browser()
    page = await browser.get("/helpdesk")
    token = token_of(page)
    # Without a token, with a wrong one, or with it only in the body (never read for it).
    for target in ("/helpdesk", "/helpdesk?csrf_token=" + "0" * 64):
        page = await post_form(browser, target, form(ANONYMOUS, [("a.pdf", PDF)]), None)
        assert page.status == 403 and 'data-error-code="csrf_failed"' in page.text
    page = await post_form(
        browser, "/helpdesk", form({**ANONYMOUS, "csrf_token": token}, [("a.pdf", PDF)]), None
    )
    assert page.status == 403
    # Another visitor's token does not work either.
    other = await env.new_browser()
    foreign = token_of(await other.get("/helpdesk"))
    page = await post_form(browser, "/helpdesk", form(ANONYMOUS), foreign)
    assert page.status == 403
    async with browser.client.post("/api/v1/helpdesk/tickets", json=ANONYMOUS) as resp:
        assert resp.status == 403
    await nothing_left(env)
    # The query parameter counts for uploads only: a url-encoded form needs it in the body.
    desk = await operator(env)
    desk_token = token_of(await desk.get("/helpdesk"))
    async with desk.client.post(
        f"/helpdesk/tickets/{uuid.uuid4()}/close?csrf_token={desk_token}",
        data={"x": "y"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403
    page = await post_form(browser, "/helpdesk", form(ANONYMOUS), token)
    assert page.status == 200


@pytest.mark.parametrize("settings_overrides", [{"helpdesk_anonymous_per_hour": 2}])
async def test_anonymous_senders_are_limited_per_address_and_hour(env: Env) -> None:
    browser = env.browser()
    for _ in range(2):
        assert (await write(browser, ANONYMOUS)).status == 200
    page = await write(browser, ANONYMOUS, [("a.pdf", PDF)])
    assert page.status == 429 and 'data-error-code="rate_limited"' in page.text
    assert page.headers["Retry-After"] == "3601"  # the clock stood still: the whole hour
    async with browser.client.post(
        "/api/v1/helpdesk/tickets",
        json=ANONYMOUS,
        headers={"X-CSRF-Token": await api_token(browser)},
    ) as resp:
        assert resp.status == 429
    await nothing_left(env, tickets_before=2)
    # Signed-in senders are not counted against the address.
    member = await signed_in(env, "iscritto")
    assert (await write(member, SIGNED_IN)).status == 303
    env.advance(minutes=61)
    # The ended hour's counters are forgotten; the address may write again.
    assert await env.services.do_forget_quotas() >= 1
    assert await count(env, QuotaUse) == 0
    assert (await write(browser, ANONYMOUS)).status == 200


async def test_what_people_type_is_shown_as_text(env: Env) -> None:
    desk = await operator(env)
    xss = "<script>alert(1)</script>"
    sender = await signed_in(env, "maligno")
    path = await ticket_path(
        sender,
        await write(
            sender,
            {"category": "report", "subject": xss, "message": xss + '<img src=x onerror="a()">'},
            [("<b>nome</b>.pdf", PDF)],
        ),
    )
    await write(env.browser(), {**ANONYMOUS, "subject": xss, "name": "Anna"})
    for browser, target in ((sender, path), (desk, path), (desk, "/desk/helpdesk")):
        page = await browser.get(target)
        assert page.status == 200
        assert xss not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<img src=x" not in page.text and "<b>nome</b>" not in page.text
    page = await sender.get("/helpdesk/tickets")
    assert xss not in page.text and "&lt;script&gt;" in page.text


# -- JSON API -------------------------------------------------------------------------------


async def test_api_round_trip_matches_the_openapi_document(env: Env) -> None:
    desk = await operator(env)
    desk_token = token_of(await desk.get("/helpdesk"))
    anonymous = env.browser()
    token = await api_token(anonymous)
    async with anonymous.client.post(
        "/api/v1/helpdesk/tickets",
        json={**ANONYMOUS, "category": "nope", "email": "x"},
        headers={"X-CSRF-Token": token},
    ) as resp:
        assert resp.status == 422
        body = await resp.json()
    validate(body, "Error")
    assert body["error"]["fields"] == {"category": ["invalid_choice"], "email": ["email_invalid"]}
    async with anonymous.client.post(
        "/api/v1/helpdesk/tickets",
        json={**ANONYMOUS, "language": "en"},
        headers={"X-CSRF-Token": token},
    ) as resp:
        assert resp.status == 201
        created = await resp.json()
    validate(created, "HelpdeskTicket")
    assert created["code"] == "HD-2026-000001" and created["anonymous"] is True

    member = await signed_in(env, "api.cliente")
    member_token = await api_token(member)
    async with member.client.post(
        "/api/v1/helpdesk/tickets",
        data=form(SIGNED_IN, [("foto.png", PNG)]),
        headers={"X-CSRF-Token": member_token},
    ) as resp:
        assert resp.status == 201
        own = await resp.json()
    validate(own, "HelpdeskTicket")
    async with member.client.get("/api/v1/helpdesk/tickets") as resp:
        listed = await resp.json()
    assert [t["code"] for t in listed["tickets"]] == [own["code"]]
    for item in listed["tickets"]:
        validate(item, "HelpdeskTicket")

    async with desk.client.get("/api/v1/helpdesk/queue?status=open") as resp:
        queue = await resp.json()
    assert {t["code"] for t in queue["tickets"]} == {created["code"], own["code"]}
    for item in queue["tickets"]:
        validate(item, "HelpdeskQueueItem")
    async with desk.client.get("/api/v1/helpdesk/queue?category=bogus") as resp:
        assert resp.status == 400

    async with desk.client.post(
        f"/api/v1/helpdesk/tickets/{own['id']}/answer",
        json={"message": ""},
        headers={"X-CSRF-Token": desk_token},
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"]["fields"] == {"message": ["required"]}
    async with desk.client.post(
        f"/api/v1/helpdesk/tickets/{own['id']}/answer",
        data=form({"message": "Ecco la guida."}, [("guida.pdf", PDF)]),
        headers={"X-CSRF-Token": desk_token},
    ) as resp:
        assert resp.status == 201
        thread = await resp.json()
    validate(thread, "HelpdeskThread")
    assert thread["status"] == "answered"
    assert [m["from_staff"] for m in thread["messages"]] == [False, True]
    assert thread["messages"][1]["author"] == "Anna Neri"
    await env.last_mail("api.cliente@example.org", "Ecco la guida.")

    async with member.client.get(f"/api/v1/helpdesk/tickets/{own['id']}") as resp:
        seen = await resp.json()
    validate(seen, "HelpdeskThread")
    assert seen["messages"][1]["author"] is None  # the sender sees "the help desk"
    download = seen["messages"][1]["attachments"][0]["download"]
    async with member.client.get(download) as resp:
        assert resp.status == 200 and await resp.read() == PDF
    async with member.client.post(
        f"/api/v1/helpdesk/tickets/{own['id']}/messages",
        json={"message": "Grazie"},
        headers={"X-CSRF-Token": member_token},
    ) as resp:
        assert resp.status == 201
        validate(await resp.json(), "HelpdeskThread")
    async with desk.client.post(
        f"/api/v1/helpdesk/tickets/{own['id']}/close", headers={"X-CSRF-Token": desk_token}
    ) as resp:
        assert resp.status == 200
        closed = await resp.json()
    validate(closed, "HelpdeskThread")
    assert closed["status"] == "closed"

    # The anonymous sender's answer goes by mail in English.
    async with desk.client.post(
        f"/api/v1/helpdesk/tickets/{created['id']}/answer",
        json={"message": "It takes about 90 days."},
        headers={"X-CSRF-Token": desk_token},
    ) as resp:
        assert resp.status == 201
    mail = await env.last_mail("lucia@example.org", "It takes about 90 days.")
    assert mail.subject.startswith("Help desk: answer")


# -- the domain -----------------------------------------------------------------------------


async def chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def desk_of(env: Env) -> HelpDesk:
    return env.services.helpdesk


async def test_domain_limits_and_cleanup(env: Env) -> None:
    desk = desk_of(env)
    storage = desk.storage
    assert isinstance(storage, LocalStorage)
    new = check_ticket(ANONYMOUS, signed_in=False, language="it")
    with pytest.raises(FilesTooLarge):
        async with desk.attachments() as batch:
            await batch.add("a.pdf", chunks(big_pdf(10 * MB)))
            await batch.add("b.pdf", chunks(big_pdf(5 * MB + 1)))
    assert await storage.keys() == [] and list(storage.incoming.iterdir()) == []
    with pytest.raises(FieldErrors) as refused:
        async with desk.attachments() as batch:
            for _ in range(6):
                await batch.add("a.pdf", chunks(PDF))
    assert refused.value.fields == {"files": [ErrorCode.TOO_MANY_FILES]}
    assert await storage.keys() == []
    # A failure after the files were stored (the rate limit here) deletes them too.
    key = desk.client_key("192.0.2.1")
    desk.anonymous.limit = 0
    with pytest.raises(UserError) as limited:
        async with desk.attachments() as batch:
            await batch.add("a.pdf", chunks(PDF))
            await desk.do_create(None, new, files=batch, client_key=key)
    assert limited.value.code == ErrorCode.RATE_LIMITED
    assert await storage.keys() == [] and await count(env, Ticket) == 0
    desk.anonymous.limit = 5
    async with desk.attachments() as batch:
        await batch.add("a.pdf", chunks(big_pdf(HELPDESK_MAX_TOTAL - len(PDF))))
        await batch.add("b.pdf", chunks(PDF))
        ticket = await desk.do_create(None, new, files=batch, client_key=key)
    assert ticket.code == "HD-2026-000001"
    assert len(await storage.keys()) == 2 and batch.files == []


async def test_codes_count_per_year(env: Env) -> None:
    desk = desk_of(env)
    new = check_ticket(ANONYMOUS, signed_in=False, language="it")
    first = await desk.do_create(None, new)
    second = await desk.do_create(None, new)
    env.clock.set(env.clock.now().replace(year=2027, month=1, day=2))
    third = await desk.do_create(None, new)
    assert [first.code, second.code, third.code] == [
        "HD-2026-000001",
        "HD-2026-000002",
        "HD-2027-000001",
    ]


async def test_orphan_sweep_keeps_help_desk_files(env: Env) -> None:
    desk = desk_of(env)
    storage = desk.storage
    member = await signed_in(env, "spazzino")
    await ticket_path(member, await write(member, SIGNED_IN, [("tenuto.pdf", PDF)]))
    [kept] = await storage.keys()
    orphan = await storage.put(chunks(PDF), max_bytes=10_000)
    old = time.time() - 7200
    for key in (kept, orphan.key):
        os.utime(storage.path(key), (old, old))
    services = env.services
    assert await sweep_orphans(storage, (services.documents, services.helpdesk)) == 1
    assert await storage.keys() == [kept]
    assert await services.documents.sweep_orphans(others=(services.helpdesk,)) == 0
    assert await storage.keys() == [kept]


async def test_the_queue_exports_to_csv_and_xlsx(env: Env) -> None:
    desk = await operator(env)
    await write(env.browser(), {**ANONYMOUS, "subject": "=SOMMA(A1)"})
    async with desk.client.get("/desk/helpdesk?format=csv") as resp:
        assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
        text = (await resp.read()).decode("utf-8-sig")
    lines = text.strip().splitlines()
    assert lines[0].startswith("Codice,Oggetto") and len(lines) == 2
    assert "HD-2026-000001" in lines[1] and "'=SOMMA(A1)" in lines[1]
    async with desk.client.get("/desk/helpdesk?format=xlsx&status=open") as resp:
        assert resp.status == 200
        book = load_workbook(io.BytesIO(await resp.read()), read_only=True)
    sheet = book.active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[1][0] == "HD-2026-000001" and rows[1][4] == "lucia@example.org"
    sender = await signed_in(env, "curioso")
    async with sender.client.get("/desk/helpdesk?format=csv") as resp:
        assert resp.status == 403
