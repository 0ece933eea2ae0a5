"""Who sees what: every role against every case, document, timeline and list, on pages and
API alike. Anything somebody has no part in is 404, whether its id is real or guessed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from cases.companies import do_create_company
from cases.lifecycle import Action
from tests.support import (
    DELEGATED_APPLICANT,
    DELEGATION_DOCUMENTS,
    PDF,
    VALID_VAT,
    Browser,
    Env,
    chunks_of,
    domain_request,
    registered,
    sign_in,
    staff,
    staff_sign_in,
)

STAFF = ("sportello", "amministratore", "conciliatore", "pianificatore")
PARTIES = ("cliente", "estraneo", "delegato", "rep.a", "rep.b")


@dataclass
class Matrix:
    env: Env
    browsers: dict[str, Browser]
    cases: dict[str, str]  # name → id
    documents: dict[str, str]  # name → id
    csrf: dict[str, str]

    async def status(self, who: str, path: str) -> int:
        async with self.browsers[who].client.get(path, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    async def api(self, who: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.csrf[who]}
        async with self.browsers[who].client.request(
            method, path, headers=headers, allow_redirects=False, **kwargs
        ) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, body


@pytest.fixture
async def matrix(env: Env) -> Matrix:
    svc = env.services
    a = await do_create_company(
        svc.db, name="Energia A", vat=VALID_VAT, sectors=["electricity"], now=env.clock.now()
    )
    b = await do_create_company(
        svc.db, name="Energia B", vat="02345670158", sectors=["electricity"], now=env.clock.now()
    )
    browsers: dict[str, Browser] = {}
    await registered(env, "cliente")
    await registered(env, "estraneo")
    await registered(env, "delegato", kind="delegate", delegate_kind="professional")
    for name, company in (("rep.a", a), ("rep.b", b)):
        await registered(env, name, kind="company_rep", company_id=str(company.id))
        account = await svc.accounts.by_username(name)
        assert account is not None
        await svc.accounts.do_activate(account.id)
    for name in PARTIES:
        browsers[name] = await env.new_browser()
        assert (await sign_in(browsers[name], name, "Lampada-Verde-42")).status == 303
    for name, role in zip(STAFF, ("helpdesk", "admin", "conciliator", "scheduler"), strict=True):
        await staff(env, name, role=role)
        browsers[name] = await env.new_browser()
        await staff_sign_in(env, browsers[name], name)
    cases = {
        "own": await domain_request(env, "cliente", str(a.id)),
        "draft": await domain_request(
            env, "cliente", str(a.id), submit=False, supply={"pod": "IT001E11111111"}
        ),
        "delegated": await domain_request(
            env,
            "delegato",
            str(a.id),
            documents=DELEGATION_DOCUMENTS,
            applicant=DELEGATED_APPLICANT,
        ),
    }
    desk = await svc.accounts.by_username("sportello")
    cliente = await svc.accounts.by_username("cliente")
    rep = await svc.accounts.by_username("rep.a")
    assert desk and cliente and rep
    await svc.files.do_step(desk, uuid.UUID(cases["delegated"]), Action.ADMIT)
    documents = {}
    for name, author, case, visible in (
        ("shared", cliente, "own", "on"),
        ("private", cliente, "own", ""),
        ("company_private", rep, "delegated", ""),
    ):
        document = await svc.documents.do_add(
            author,
            uuid.UUID(cases[case]),
            filename=f"{name}.pdf",
            chunks=chunks_of(PDF),
            category="other",
            description=name,
            visible_to_other_party=visible,
        )
        documents[name] = str(document.id)
    csrf = {}
    for name, browser in browsers.items():
        async with browser.client.get("/api/v1/me") as resp:
            csrf[name] = (await resp.json())["csrf_token"]
    return Matrix(env, browsers, cases, documents, csrf)


# Which cases each person may see.
SEES = {
    "cliente": {"own", "draft"},
    "estraneo": set(),
    "delegato": {"delegated"},
    "rep.a": {"own", "delegated"},
    "rep.b": set(),
    **{name: {"own", "delegated"} for name in STAFF},
}
# Which documents each person may see (their own, the other side's shared, staff all).
READS = {
    "cliente": {"shared", "private"},
    "estraneo": set(),
    "delegato": set(),
    "rep.a": {"shared", "company_private"},
    "rep.b": set(),
    **{name: {"shared", "private", "company_private"} for name in STAFF},
}
CASE_PATHS = (
    "/api/v1/cases/{id}",
    "/api/v1/cases/{id}/timeline",
    "/api/v1/cases/{id}/documents",
    "/api/v1/cases/{id}/notices",
    "/api/v1/cases/{id}/review",
)


async def test_every_role_sees_exactly_its_cases(matrix: Matrix) -> None:
    for who in (*PARTIES, *STAFF):
        status, body = await matrix.api(who, "GET", "/api/v1/cases")
        assert status == 200
        listed = {c["id"] for c in body["cases"]}
        assert listed == {matrix.cases[n] for n in SEES[who]}, who
        for name, case_id in matrix.cases.items():
            allowed = name in SEES[who]
            for path in CASE_PATHS:
                status, _ = await matrix.api(who, "GET", path.format(id=case_id))
                assert status == (200 if allowed else 404), (who, name, path, status)
            page = await matrix.status(who, f"/cases/{case_id}")
            expected = (303 if name == "draft" else 200) if allowed else 404
            assert page == expected, (who, name, page)
        guessed = uuid.uuid4()
        assert (await matrix.api(who, "GET", f"/api/v1/cases/{guessed}"))[0] == 404
        assert await matrix.status(who, f"/cases/{guessed}") == 404
        assert await matrix.status(who, "/cases/not-an-id") == 404


async def test_documents_are_read_only_by_those_who_may(matrix: Matrix) -> None:
    for who in (*PARTIES, *STAFF):
        for name, document_id in matrix.documents.items():
            allowed = name in READS[who]
            expected = 200 if allowed else 404
            assert await matrix.status(who, f"/documents/{document_id}") == expected, (who, name)
            for path in ("/api/v1/documents/{id}", "/api/v1/documents/{id}/content"):
                status, _ = await matrix.api(who, "GET", path.format(id=document_id))
                assert status == expected, (who, name, path)
        for case in SEES[who] - {"draft"}:
            _status, body = await matrix.api(
                who, "GET", f"/api/v1/cases/{matrix.cases[case]}/documents"
            )
            names = {d["name"] for d in body["documents"]}
            hidden = {f"{n}.pdf" for n in matrix.documents if n not in READS[who]}
            assert not names & hidden, (who, case, names)
            _status, body = await matrix.api(
                who, "GET", f"/api/v1/cases/{matrix.cases[case]}/timeline"
            )
            notes = {e["note"] for e in body["events"]}
            assert not notes & hidden, (who, case, notes)


async def test_nobody_acts_on_cases_they_have_no_part_in(matrix: Matrix) -> None:
    own = matrix.cases["own"]
    for who in ("estraneo", "delegato", "rep.b"):
        status, body = await matrix.api(who, "POST", f"/api/v1/cases/{own}/steps/withdraw")
        assert status == 404 and body["error"]["code"] == "not_found"
        status, _ = await matrix.api(
            who, "PUT", f"/api/v1/cases/{matrix.cases['draft']}/request/dispute", json={}
        )
        assert status == 404
        page = await matrix.browsers[who].upload(
            f"/api/v1/cases/{own}/documents",
            {"category": "other", "description": "x"},
            "x.pdf",
            PDF,
            csrf=matrix.csrf[who],
        )
        assert page.status == 404
    # A party's steps are its own: the company cannot withdraw the customer's request.
    status, body = await matrix.api("rep.a", "POST", f"/api/v1/cases/{own}/steps/withdraw")
    assert status == 403 and body["error"]["code"] == "forbidden"
    # Without the CSRF header an unsafe API request is refused.
    async with matrix.browsers["cliente"].client.post(
        f"/api/v1/cases/{own}/steps/withdraw"
    ) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"


# The scheduling resources' pages: who gets them (everyone else is refused, 403).
RESOURCE_PAGES = {
    "/admin/conciliators": {"amministratore", "pianificatore"},
    "/admin/capacities": {"amministratore", "pianificatore"},
    "/agenda": {"conciliatore"},
}


async def test_scheduling_resource_pages_by_role(matrix: Matrix) -> None:
    conciliator = await matrix.env.services.accounts.by_username("conciliatore")
    assert conciliator is not None
    company = uuid.uuid4()  # refused before any lookup
    writes = {
        f"/admin/conciliators/{conciliator.id}/profile": RESOURCE_PAGES["/admin/conciliators"],
        f"/admin/conciliators/{conciliator.id}/absences": RESOURCE_PAGES["/admin/conciliators"],
        f"/admin/capacities/{company}": RESOURCE_PAGES["/admin/capacities"],
        "/agenda/absences": RESOURCE_PAGES["/agenda"],
    }
    for who in (*PARTIES, *STAFF):
        for path, allowed in RESOURCE_PAGES.items():
            expected = 200 if who in allowed else 403
            assert await matrix.status(who, path) == expected, (who, path)
        for path, allowed in writes.items():
            if who in allowed:
                continue
            page = await matrix.browsers[who].post(
                path, {"first_day": "2026-12-21", "per_slot": "2"}, csrf=matrix.csrf[who]
            )
            assert page.status == 403, (who, path, page.status)
    anonymous = await matrix.env.new_browser()
    for path in RESOURCE_PAGES:
        page = await anonymous.get(path)
        assert page.status == 303 and page.headers["Location"].startswith("/login"), path
