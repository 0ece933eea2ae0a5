"""Helpers for driving the service over HTTP the way a browser does."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import Message
from typing import Any, cast
from urllib.parse import quote

from aiohttp import CookieJar, FormData, web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from cases.lifecycle import Action
from cases.request import Section
from core.clock import FakeClock
from core.mail import OutboxMail
from web.context import SERVICES
from web.services import Services

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
GOOD_PASSWORD = "Lampada-Verde-42"
TAX_CODE = "RSSMRA85T10A562S"


@dataclass
class Page:
    status: int
    text: str
    headers: Any
    url: str = ""

    @property
    def csrf(self) -> str:
        found = CSRF_RE.search(self.text)
        assert found, f"no CSRF token on the page {self.url}"
        return found.group(1)


@dataclass
class Browser:
    """One visitor with its own cookies."""

    client: TestClient[web.Request, web.Application]
    last: Page | None = None
    history: list[str] = field(default_factory=list)

    async def get(self, path: str, **kwargs: Any) -> Page:
        async with self.client.get(path, allow_redirects=False, **kwargs) as resp:
            page = Page(resp.status, await resp.text(), resp.headers, path)
        self.last = page
        return page

    async def follow(self, path: str) -> Page:
        """GET ``path`` and follow redirects like a browser."""
        page = await self.get(path)
        hops = 0
        while page.status in (301, 302, 303, 307) and hops < 10:
            page = await self.get(page.headers["Location"])
            hops += 1
        return page

    async def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]], *, csrf: str | None = None
    ) -> Page:
        body: list[tuple[str, str]] = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf is not None:
            body.append(("csrf_token", csrf))
        async with self.client.post(path, data=body, allow_redirects=False) as resp:
            page = Page(resp.status, await resp.text(), resp.headers, path)
        self.last = page
        return page

    async def submit(
        self,
        path: str,
        data: dict[str, Any] | list[tuple[str, str]],
        *,
        form_page: str | None = None,
    ) -> Page:
        """Open the page holding the form, then post it with that page's CSRF token."""
        page = await self.get(form_page or path)
        assert page.status == 200, (page.status, page.url)
        return await self.post(path, data, csrf=page.csrf)

    async def upload(
        self,
        path: str,
        fields: dict[str, str],
        filename: str,
        content: bytes | Any,
        *,
        csrf: str,
        headers: dict[str, str] | None = None,
    ) -> Page:
        """A multipart form as a browser sends it: the fields, then the file; the CSRF token
        in the action's query string."""
        form = FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        form.add_field("file", content, filename=filename, content_type="application/pdf")
        target = f"{path}{'&' if '?' in path else '?'}csrf_token={quote(csrf)}"
        async with self.client.post(
            target, data=form, allow_redirects=False, headers=headers
        ) as resp:
            page = Page(resp.status, await resp.text(), resp.headers, path)
        self.last = page
        return page

    def cookie(self, name: str) -> str | None:
        for cookie in self.client.session.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None


@dataclass
class Env:
    """A running application with its clock, for one test."""

    client: TestClient[web.Request, web.Application]
    clock: FakeClock
    db_url: str
    # What a test's SMTP server received (tests marked ``smtp``): once a mail is handed over,
    # the outbox keeps no body, so it is read from here.
    delivered: list[Message] | None = None

    @property
    def services(self) -> Services:
        app = self.client.app
        assert app is not None
        return app[SERVICES]

    def browser(self) -> Browser:
        return Browser(self.client)

    async def new_browser(self) -> Browser:
        """Another visitor: its own client session and cookie jar on the same server."""
        other = cast(
            "TestClient[web.Request, web.Application]",
            TestClient(self.client.server, cookie_jar=CookieJar(unsafe=True)),
        )
        self._extra.append(other)
        return Browser(other)

    _extra: list[TestClient[web.Request, web.Application]] = field(default_factory=list)

    async def close_extra(self) -> None:
        # Only the client sessions: the server belongs to the main client.
        for client in self._extra:
            await client.session.close()

    async def mails(self, to: str | None = None) -> list[OutboxMail]:
        # Recovery requests are answered first and handled just after: let them be done.
        await self.services.recovery.drain()
        async with self.services.db.session() as session:
            query = select(OutboxMail).order_by(OutboxMail.id)
            if to is not None:
                query = query.where(OutboxMail.to_addr == to)
            return list(await session.scalars(query))

    async def last_mail(self, to: str, contains: str = "") -> OutboxMail:
        found = [m for m in await self.mails(to) if m.body_text and contains in m.body_text]
        if not found and self.delivered is not None:
            # Sent already (its body wiped from the outbox): read what the server received.
            for _ in range(250):
                found = [m for m in self.received(to) if contains in m.body_text]
                if found:
                    break
                await asyncio.sleep(0.02)
        assert found, f"no mail to {to} containing {contains!r}"
        return found[-1]

    def received(self, to: str) -> list[OutboxMail]:
        """The mails the SMTP server received for ``to``, as outbox records."""
        found = []
        for message in self.delivered or []:
            if message["To"] != to:
                continue
            text = ""
            for part in message.walk():
                payload = part.get_payload(decode=True)
                if part.get_content_type() == "text/plain" and isinstance(payload, bytes):
                    text = payload.decode(part.get_content_charset() or "utf-8")
                    break
            found.append(OutboxMail(to_addr=to, subject=str(message["Subject"]), body_text=text))
        return found

    def advance(self, **kwargs: float) -> None:
        self.clock.advance(timedelta(**kwargs))


def link_in(text: str, path: str) -> str:
    """The path of the first link in ``text`` that goes to ``path``."""
    found = re.search(r"https?://[^/\s]+(" + re.escape(path) + r"[^\s]*)", text)
    assert found, f"no link to {path} in: {text}"
    return found.group(1)


def code_in(text: str) -> str:
    found = re.search(r"^\s+(\d{6})\s*$", text, re.M)
    assert found, f"no code in: {text}"
    return found.group(1)


def registration(username: str, **overrides: str) -> dict[str, str]:
    form = {
        "kind": "customer",
        "first_name": "Mario",
        "last_name": "Rossi",
        "tax_code": TAX_CODE,
        "email": f"{username}@example.org",
        "mobile": "333 123 4567",
        "username": username,
        "password": GOOD_PASSWORD,
        "password_confirm": GOOD_PASSWORD,
        "language": "it",
        "privacy": "on",
    }
    form.update(overrides)
    return form


async def register(env: Env, browser: Browser, username: str, **overrides: str) -> Page:
    """Fill in and send the registration form."""
    return await browser.submit("/register", registration(username, **overrides))


async def registered(env: Env, username: str, **overrides: str) -> str:
    """A self-registered account with its e-mail verified; returns its password."""
    browser = await env.new_browser()
    page = await register(env, browser, username, **overrides)
    assert page.status == 303, page.text
    mail = await env.last_mail(overrides.get("email", f"{username}@example.org"), "/verify/")
    link = link_in(mail.body_text, "/verify/")
    page = await browser.submit(link, {})
    assert page.status == 200, page.text
    return overrides.get("password", GOOD_PASSWORD)


async def signed_in(env: Env, username: str, **overrides: str) -> Browser:
    """A new visitor, registered (e-mail verified) and signed in as ``username``."""
    password = await registered(env, username, **overrides)
    browser = await env.new_browser()
    assert (await sign_in(browser, username, password)).status == 303
    return browser


async def sign_in(browser: Browser, username: str, password: str) -> Page:
    return await browser.submit("/login", {"username": username, "password": password, "next": "/"})


async def staff(
    env: Env, username: str, role: str = "conciliator", password: str = GOOD_PASSWORD
) -> str:
    """A staff account created directly through the domain (as the CLI does)."""
    await env.services.accounts.do_create_account(
        {
            "role": role,
            "username": username,
            "first_name": "Anna",
            "last_name": "Neri",
            "tax_code": TAX_CODE,
            "email": f"{username}@example.org",
            "mobile": "+39 333 765 4321",
        },
        password=password,
    )
    return password


async def staff_sign_in(
    env: Env, browser: Browser, username: str, password: str = GOOD_PASSWORD, email: str = ""
) -> Page:
    """Both steps of a staff sign-in, the code read from the outbox."""
    page = await sign_in(browser, username, password)
    assert page.status == 303 and page.headers["Location"].startswith("/login/code"), page.text
    mail = await env.last_mail(email or f"{username}@example.org", "")
    code = code_in(mail.body_text)
    return await browser.submit("/login/code", {"code": code, "next": "/"})


VALID_VAT = "01234560017"


async def change_password(
    browser: Browser, current: str, new: str, confirm: str | None = None
) -> Page:
    """Send the change-password form of the signed-in account."""
    confirmation = new if confirm is None else confirm
    return await browser.submit(
        "/account/password",
        {"current_password": current, "password": new, "password_confirm": confirmation},
    )


PDF = b"%PDF-1.7\n" + b"0" * 2000

# A complete request, section by section (the company is added by the caller).
REQUEST: dict[str, dict[str, Any]] = {
    "applicant": {"customer_kind": "person", "acting_as": "self"},
    "supply": {
        "sector": "electricity",
        "pod": "IT001E12345678",
        "address": "Via Roma 1",
        "postcode": "20121",
        "city": "Milano",
    },
    "company": {},
    "complaint": {"complaint_sent_on": "2026-09-01", "company_answered": "no"},
    "dispute": {
        "dispute_category": "billing",
        "description": "Bolletta di conguaglio errata.",
        "claim": "Rettifica della bolletta.",
        "amount": "120,50",
    },
    "meeting": {"meeting_mode": "chat", "availability": ["mon-09:00", "wed-14:00"], "notes": ""},
}

# A delegated request: the delegate files for Lucia Bianchi, with the power to settle.
DELEGATED_APPLICANT: dict[str, Any] = {
    "customer_kind": "person",
    "acting_as": "delegate",
    "customer_first_name": "Lucia",
    "customer_last_name": "Bianchi",
    "customer_tax_code": "BNCLCU80A41F205X",
    "mandate_to_settle": "on",
}
DELEGATION_DOCUMENTS = ("complaint", "identity", "delegation")


def form_items(values: dict[str, Any]) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, list):
            items.extend((key, v) for v in value)
        else:
            items.append((key, value))
    return items


async def fill_request(
    browser: Browser, company_id: str, **sections: dict[str, Any]
) -> tuple[str, dict[str, Page]]:
    """Fill in every section through the pages (``sections`` override the defaults); returns
    the draft's id and each section's response."""
    answers = {name: dict(values) for name, values in REQUEST.items()}
    answers["company"]["company_id"] = company_id
    for name, values in sections.items():
        answers[name].update(values)
    pages: dict[str, Page] = {}
    page = await browser.get("/cases/new")
    assert page.status == 200, page.text
    pages["applicant"] = await browser.post(
        "/cases/new", [*form_items(answers["applicant"]), ("go", "next")], csrf=page.csrf
    )
    location = pages["applicant"].headers.get("Location", "")
    match = re.search(r"/cases/([0-9a-f-]{36})/", location)
    assert match, (pages["applicant"].status, location)
    case_id = match.group(1)
    if location.endswith("saved=1"):  # kept as a draft with errors: show them as the page does
        pages["applicant"] = await browser.get(location)
    for name in ("supply", "company", "complaint", "dispute", "meeting"):
        pages[name] = await browser.post(
            f"/cases/{case_id}/request/{name}",
            [*form_items(answers[name]), ("go", "next")],
            csrf=page.csrf,
        )
    return case_id, pages


async def attach(
    browser: Browser,
    case_id: str,
    category: str,
    *,
    content: bytes = PDF,
    name: str = "documento.pdf",
    visible: bool = True,
    description: str = "Copia",
) -> Page:
    page = await browser.get("/")
    fields = {"category": category, "description": description}
    if visible:
        fields["visible_to_other_party"] = "on"
    return await browser.upload(
        f"/cases/{case_id}/documents", fields, name, content, csrf=page.csrf
    )


async def submit_request(browser: Browser, case_id: str) -> Page:
    page = await browser.get(f"/cases/{case_id}/request/summary")
    assert page.status == 200, page.text
    return await browser.post(f"/cases/{case_id}/submit", {}, csrf=page.csrf)


async def file_request(
    browser: Browser,
    company_id: str,
    documents: tuple[str, ...] = ("complaint", "identity"),
    **sections: dict[str, Any],
) -> str:
    """A request filed through the pages with its attachments; returns the case id."""
    case_id, pages = await fill_request(browser, company_id, **sections)
    for name, page in pages.items():
        assert page.status == 303, (name, page.status, page.text[-2000:])
        assert not page.headers["Location"].endswith("saved=1"), name
    for category in documents:
        assert (await attach(browser, case_id, category)).status == 303
    page = await submit_request(browser, case_id)
    assert page.status == 303, page.text[-3000:]
    return case_id


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def domain_request(
    env: Env,
    username: str,
    company_id: str,
    *,
    documents: tuple[str, ...] = ("complaint", "identity"),
    submit: bool = True,
    **sections: dict[str, Any],
) -> str:
    """A request made through the domain services (faster than the pages); returns its id."""
    return await services_request(
        env.services, username, company_id, documents=documents, submit=submit, **sections
    )


async def services_request(
    svc: Services,
    username: str,
    company_id: str,
    *,
    documents: tuple[str, ...] = ("complaint", "identity"),
    submit: bool = True,
    **sections: dict[str, Any],
) -> str:
    """``domain_request`` on services opened by the test itself (no application running)."""
    account = await svc.accounts.by_username(username)
    assert account is not None
    answers = {name: dict(values) for name, values in REQUEST.items()}
    answers["company"]["company_id"] = company_id
    for name, values in sections.items():
        answers[name].update(values)
    case, _ = await svc.filing.do_start(account, answers["applicant"])
    for name in ("supply", "company", "complaint", "dispute", "meeting"):
        _case, checked = await svc.filing.do_save(account, case.id, Section(name), answers[name])
        assert checked.ok, (name, checked.errors)
    for category in documents:
        await svc.documents.do_add(
            account,
            case.id,
            filename=f"{category}.pdf",
            chunks=chunks_of(PDF),
            category=category,
            description=category,
            visible_to_other_party="on",
        )
    if submit:
        await svc.filing.do_submit(account, case.id)
    return str(case.id)


async def admitted_case(env: Env, company_id: str, username: str = "cliente") -> str:
    """A filed request admitted by the desk, with a scheduler and a conciliator on duty
    (accounts ``sportello``, ``pianificatore``, ``conciliatore``, created if missing)."""
    svc = env.services
    for name, role in (
        ("sportello", "helpdesk"),
        ("pianificatore", "scheduler"),
        ("conciliatore", "conciliator"),
    ):
        if await svc.accounts.by_username(name) is None:
            await staff(env, name, role=role)
    case_id = await domain_request(env, username, company_id)
    desk = await svc.accounts.by_username("sportello")
    assert desk is not None
    await svc.files.do_step(desk, uuid.UUID(case_id), Action.ADMIT)
    return case_id


def result_line(stdout: str, context: str = "") -> dict[str, Any]:
    """A benchmark's last line, ``RESULT {json}``, read (it must be there; ``context`` is
    shown if not, the output by default)."""
    lines = stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    assert last.startswith("RESULT "), (context or stdout)[-4000:]
    found: dict[str, Any] = json.loads(last.removeprefix("RESULT "))
    return found
