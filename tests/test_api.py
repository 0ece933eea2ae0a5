"""The JSON API answers as its OpenAPI document says."""

from __future__ import annotations

from tests.support import GOOD_PASSWORD, Env, registered, sign_in
from web.views.api import openapi_document


async def test_document_is_served_and_lists_every_api_route(env: Env) -> None:
    async with env.client.get("/api/openapi.json") as resp:
        assert resp.status == 200
        served = await resp.json()
    assert served == openapi_document()
    assert served["openapi"].startswith("3.1")
    app = env.client.app
    assert app is not None
    routes = {
        r.resource.canonical
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith(("/api/", "/healthz", "/readyz", "/metrics"))
    }
    assert routes == set(served["paths"])


async def test_me_matches_the_schema(env: Env) -> None:
    await registered(env, "api.user")
    browser = env.browser()
    await sign_in(browser, "api.user", GOOD_PASSWORD)
    async with browser.client.get("/api/v1/me") as resp:
        assert resp.status == 200
        body = await resp.json()
    schema = openapi_document()["components"]["schemas"]["Me"]
    assert set(body) == set(schema["required"])
    assert body["username"] == "api.user" and body["role"] == "customer"
    assert body["two_step"] == "none" and body["company_id"] is None
