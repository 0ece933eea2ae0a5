"""Filing and following a request through the JSON API."""

from __future__ import annotations

from typing import Any

from cases.companies import do_create_company
from tests.support import PDF, REQUEST, VALID_VAT, Browser, Env, registered, sign_in


async def api(browser: Browser, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with browser.client.get("/api/v1/me") as resp:
        token = (await resp.json())["csrf_token"]
    async with browser.client.request(
        method, path, headers={"X-CSRF-Token": token}, **kwargs
    ) as resp:
        return resp.status, await resp.json()


async def test_a_request_filed_through_the_api(env: Env) -> None:
    company = await do_create_company(
        env.services.db, name="Energia A", vat=VALID_VAT, sectors=["gas"], now=env.clock.now()
    )
    await registered(env, "cliente")
    browser = await env.new_browser()
    await sign_in(browser, "cliente", "Lampada-Verde-42")
    status, body = await api(browser, "POST", "/api/v1/cases", json=REQUEST["applicant"])
    assert status == 201 and body["case"]["status"] == "draft" and body["applicant"]["complete"]
    case_id = body["case"]["id"]
    status, body = await api(
        browser,
        "PUT",
        f"/api/v1/cases/{case_id}/request/supply",
        json={**REQUEST["supply"], "sector": "gas", "pdr": "123"},
    )
    assert status == 200 and body == {
        "section": "supply",
        "complete": False,
        "errors": {"pdr": ["pdr_invalid"]},
    }
    answers = {
        "supply": {**REQUEST["supply"], "sector": "gas", "pdr": "12345678901234"},
        "company": {"company_id": str(company.id)},
        "complaint": REQUEST["complaint"],
        "dispute": REQUEST["dispute"],
        "meeting": REQUEST["meeting"],
    }
    for section, values in answers.items():
        status, body = await api(
            browser, "PUT", f"/api/v1/cases/{case_id}/request/{section}", json=values
        )
        assert status == 200 and body["complete"], (section, body)
    status, body = await api(browser, "GET", f"/api/v1/cases/{case_id}/review")
    assert body["required_documents"] == [
        {"category": "complaint", "present": False},
        {"category": "identity", "present": False},
    ]
    status, body = await api(browser, "POST", f"/api/v1/cases/{case_id}/submit")
    assert status == 400 and body["error"]["code"] == "attachments_missing"
    for category in ("complaint", "identity"):
        page = await browser.upload(
            f"/api/v1/cases/{case_id}/documents",
            {"category": category, "description": "copia", "visible_to_other_party": "on"},
            f"{category}.pdf",
            PDF,
            csrf=(await api(browser, "GET", "/api/v1/me"))[1]["csrf_token"],
        )
        assert page.status == 201, page.text
    status, body = await api(browser, "POST", f"/api/v1/cases/{case_id}/submit")
    assert status == 200 and body["code"].startswith("CONC-2026-")
    assert body["answers"]["pdr"] == "12345678901234"
    status, body = await api(browser, "GET", f"/api/v1/cases/{case_id}/timeline")
    assert [e["kind"] for e in body["events"]] == [
        "opened",
        "document_added",
        "document_added",
        "submit",
    ]
    status, body = await api(browser, "GET", f"/api/v1/cases/{case_id}/notices")
    assert [n["kind"] for n in body["notices"]] == ["case_submitted"]
    status, body = await api(browser, "POST", f"/api/v1/cases/{case_id}/submit")
    assert status == 400 and body["error"]["code"] == "transition_refused"


async def test_bad_bodies_get_clear_errors(env: Env) -> None:
    await registered(env, "cliente")
    browser = await env.new_browser()
    await sign_in(browser, "cliente", "Lampada-Verde-42")
    status, body = await api(browser, "POST", "/api/v1/cases", data=b"not json")
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = await api(browser, "POST", "/api/v1/cases", json=[1, 2])
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = await api(browser, "GET", "/api/v1/cases?status=nope")
    assert status == 400
    status, body = await api(browser, "POST", "/api/v1/cases", json={"customer_kind": 5})
    assert status == 201 and body["applicant"]["errors"]["customer_kind"] == ["required"]


async def test_filters_out_of_range_are_refused(env: Env) -> None:
    await registered(env, "cliente")
    browser = await env.new_browser()
    await sign_in(browser, "cliente", "Lampada-Verde-42")
    for query in ("from=0001-01-01", "to=9999-12-31", "page=0", "company=nope"):
        status, body = await api(browser, "GET", f"/api/v1/cases?{query}")
        assert status in (200, 400), query
        assert status == 200 or body["error"]["code"] == "bad_request"
