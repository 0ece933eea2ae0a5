"""The migration chain builds exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core.db import Database
from web.migrate import pending
from web.models import metadata


async def test_models_match_migrations(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert not await pending(db)
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata())
            )
    finally:
        await db.close()
    assert diff == [], "models and migrations differ: write a migration (concilia db revision)"
