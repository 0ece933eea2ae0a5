"""Alembic environment: always handed a live connection by ``web.migrate``."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from core.db import UTCDateTime
from web.models import metadata


def render_item(kind: str, item: Any, autogen: AutogenContext) -> str | Literal[False]:
    # Migrations must not depend on application types: a UTC timestamp is a DateTime with zone.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `concilia db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata(),
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
