"""The JSON API (documented in ``web/openapi.yaml``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from cases.companies import list_companies
from cases.signin import effective_method
from web.context import ctx, require, services

routes = web.RouteTableDef()
OPENAPI = Path(__file__).parents[1] / "openapi.yaml"


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    loaded = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@routes.get("/api/openapi.json")
async def openapi(_request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.StreamResponse:
    account = require(request)
    return web.json_response(
        {
            "id": str(account.id),
            "username": account.username,
            "first_name": account.first_name,
            "last_name": account.last_name,
            "email": account.email,
            "role": account.role,
            "company_id": str(account.company_id) if account.company_id else None,
            "language": account.language,
            "two_step": effective_method(account).value,
            # For the X-CSRF-Token header of unsafe requests made with this session.
            "csrf_token": ctx(request).csrf_token,
        }
    )


@routes.get("/api/v1/companies")
async def companies(request: web.Request) -> web.StreamResponse:
    rows = await list_companies(services(request).db, only_active=True)
    return web.json_response(
        {"companies": [{"id": str(c.id), "name": c.name, "sectors": c.sector_list} for c in rows]}
    )
