"""Settings that would make a deployment unsafe are refused at start-up."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy.pool import QueuePool

from core.db import Database
from core.settings import Settings


def test_secret_key_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(var_dir=tmp_path).secret()
    assert len(first) >= 32
    assert Settings(var_dir=tmp_path).secret() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_short_secret_key_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Settings(var_dir=tmp_path, secret_key=SecretStr("")).secret()


def test_shared_database_needs_an_explicit_secret(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, database_url="postgresql+asyncpg://db/concilia")
    with pytest.raises(ValueError, match="CONCILIA_SECRET_KEY"):
        settings.secret()
    assert not (tmp_path / "secret_key").exists()


def test_minutes_seal_is_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        Settings(minutes_seal_p12=tmp_path / "a.p12", minutes_seal_key=tmp_path / "k.pem")
    with pytest.raises(ValueError, match="go together"):
        Settings(minutes_seal_key=tmp_path / "k.pem")
    with pytest.raises(ValueError, match="go together"):
        Settings(minutes_seal_cert=tmp_path / "c.pem")


def test_empty_minutes_seal_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("P12", "KEY", "CERT", "CHAIN"):
        monkeypatch.setenv(f"CONCILIA_MINUTES_SEAL_{name}", "")
    monkeypatch.setenv("CONCILIA_MINUTES_TSA_URL", "")
    settings = Settings()
    assert settings.minutes_seal_p12 is None and settings.minutes_seal_key is None
    assert settings.minutes_seal_cert is None and settings.minutes_seal_chain is None
    assert settings.minutes_tsa_url is None


def test_a_fixed_clock_is_for_tests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCILIA_CLOCK_FIXED", "2026-11-30T08:46:00+01:00")
    monkeypatch.setenv("CONCILIA_ENV", "test")
    fixed = Settings().clock_fixed
    assert fixed is not None and fixed == datetime(2026, 11, 30, 7, 46, tzinfo=UTC)
    monkeypatch.setenv("CONCILIA_ENV", "prod")
    with pytest.raises(ValueError, match="refused with CONCILIA_ENV=prod"):
        Settings()
    monkeypatch.setenv("CONCILIA_ENV", "dev")
    monkeypatch.setenv("CONCILIA_CLOCK_FIXED", "2026-11-30T08:46:00")
    with pytest.raises(ValueError, match="time zone"):
        Settings()
    monkeypatch.setenv("CONCILIA_CLOCK_FIXED", "")
    assert Settings().clock_fixed is None


def test_database_pool_is_sized_by_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        var_dir=tmp_path,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/pool_not_opened",
        database_pool_size=7,
        database_max_overflow=3,
        database_pool_timeout_seconds=4.5,
    )
    db = Database(
        settings.resolved_database_url(),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
    )
    pool = db.engine.pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow, pool._timeout) == (7, 3, 4.5)
    defaults = Settings(var_dir=tmp_path)
    assert (defaults.database_pool_size, defaults.database_max_overflow) == (20, 10)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(database_pool_size=0)
    # SQLite keeps SQLAlchemy's own pool whatever the settings say.
    lite = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}", pool_size=7)
    assert isinstance(lite.engine.pool, QueuePool)
    assert lite.engine.pool.size() != 7


def test_redis_url_must_be_one_redis_py_can_pool(tmp_path: Path) -> None:
    """A Sentinel (or mistyped) URL is refused at start-up with a clear message, not at the
    first connection of a running node."""
    for good in ("redis://127.0.0.1:6379/0", "rediss://cache.example:6380", "unix:///run/r.sock"):
        assert Settings(var_dir=tmp_path, redis_url=good).redis_url == good
    assert Settings(var_dir=tmp_path, redis_url="").redis_url is None
    for bad in ("redis+sentinel://s1:26379/mymaster", "127.0.0.1:6379", "http://x"):
        with pytest.raises(ValidationError) as refused:
            Settings(var_dir=tmp_path, redis_url=bad)
        assert "Sentinel is not supported" in str(refused.value)
