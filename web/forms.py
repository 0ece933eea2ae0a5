"""Reading submitted forms."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.errors import ErrorCode, UserError

SECRET_FIELDS = frozenset(
    {"password", "password_confirm", "current_password", "csrf_token", "code"}
)


async def form_data(request: web.Request) -> dict[str, str]:
    """Single-valued fields of a submitted form (files and repeated keys are ignored here)."""
    posted = await request.post()
    values: dict[str, str] = {}
    for key in posted:
        value = posted.get(key)
        if isinstance(value, str):
            values[key] = value
    return values


async def form_list(request: web.Request, name: str) -> list[str]:
    """Every value of a repeated field (checkbox groups)."""
    posted = await request.post()
    return [v for v in posted.getall(name, []) if isinstance(v, str)]


def keep(form: dict[str, str]) -> dict[str, str]:
    """What a form shows again after an error: everything typed except secrets."""
    return {k: v for k, v in form.items() if k not in SECRET_FIELDS}


async def json_object(request: web.Request) -> dict[str, Any]:
    """An API request's body, which must be a JSON object."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser goes (``[[[[...``), still the client's.
        raise UserError(ErrorCode.BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise UserError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    return body
