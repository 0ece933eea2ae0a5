"""Settings read from ``CONCILIA_*`` environment variables and an optional file."""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")
MIN_SECRET = 32


def _env_file() -> str | None:
    # The optional file is named by CONCILIA_SETTINGS_FILE; otherwise ./concilia.env if present.
    named = os.environ.get("CONCILIA_SETTINGS_FILE")
    if named:
        return named
    return "concilia.env" if Path("concilia.env").exists() else None


class Settings(BaseSettings):
    """Every knob of the service. Defaults give the one-process, one-command setup."""

    model_config = SettingsConfigDict(env_prefix="CONCILIA_", extra="ignore")

    env: Literal["dev", "test", "prod"] = "prod"
    var_dir: Path = VAR_DIR
    database_url: str = ""
    # The connection pool of a server database (PostgreSQL; SQLite keeps SQLAlchemy's own):
    # connections kept open, extra ones opened under bursts, and how long a request waits for
    # one before failing. A node's chat, sweeps and page requests share it; the sum over the
    # nodes (pool + overflow each) must stay below PostgreSQL's max_connections (100).
    database_pool_size: int = Field(20, ge=1)
    database_max_overflow: int = Field(10, ge=0)
    database_pool_timeout_seconds: float = Field(30.0, gt=0)
    redis_url: str | None = None
    redis_prefix: str = "concilia"
    presence_ttl_seconds: int = Field(30, ge=3)  # a node silent this long counts as gone
    # Socket.IO heartbeat: the server pings every interval and closes a connection whose pong
    # is later than the timeout, so a client whose network went away leaves the room (and its
    # presence) within their sum instead of when TCP gives up, minutes later.
    socket_ping_interval_seconds: float = Field(25.0, gt=0, le=300)
    socket_ping_timeout_seconds: float = Field(20.0, gt=0, le=300)
    public_url: str = "http://127.0.0.1:8080"
    # This node's own base URL, where clients reach its media signaling when it hosts a
    # meeting's video (several nodes behind one public URL); default: ``public_url``.
    node_url: str | None = None
    secret_key: SecretStr | None = None

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    mail_from: str = "Concilia <no-reply@concilia.invalid>"
    helpdesk_email: str = ""
    helpdesk_phone: str = ""
    helpdesk_anonymous_per_hour: int = 5  # help-desk tickets one address may send signed out
    registrations_per_hour: int = 10  # accounts one client address may register in an hour
    mail_poll_seconds: float = 5.0
    mail_max_attempts: int = 8

    host: str = "127.0.0.1"
    port: int = 8080
    trust_forwarded_for: bool = False
    metrics_allow: str = "127.0.0.0/8,::1/128"  # networks that may read /metrics

    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    inactivity_days: int = 183
    login_failures_allowed: int = 5
    login_window_minutes: int = 15
    login_max_delay_seconds: int = 60
    reset_token_minutes: int = 30
    verify_token_hours: int = 48
    login_code_minutes: int = 10
    login_code_attempts: int = 5

    complaint_wait_days: int = 40  # an unanswered complaint allows filing after this many days
    integration_days: int = 7  # time to complete a request once staff ask for documents
    integration_reminder_hours: int = 48  # the applicant is reminded this long before it ends
    files_dir: Path | None = None  # uploaded documents (default: <var_dir>/files)
    meeting_minutes: int = 90  # length of a meeting slot
    min_notice_days: int = 5  # working days between admission and the first possible meeting
    first_meeting_days: int = 40  # first meeting within this many days of the complete request
    procedure_days: int = 90  # the whole procedure within this many days of filing
    extension_days: int = 30  # the procedure may be extended once by this many days
    room_opens_minutes: int = 15  # the meeting room opens this long before the slot
    room_grace_minutes: int = 30  # and closes at the latest this long after the slot's end
    schedule_weeks: int = 4  # the horizon of the batch allocation

    # The seal of the meeting minutes: a PKCS#12 file, or a PEM key and certificate (with an
    # optional PEM chain); in dev and test, a generated self-signed one when none is set.
    minutes_seal_p12: Path | None = None
    minutes_seal_key: Path | None = None
    minutes_seal_cert: Path | None = None
    minutes_seal_chain: Path | None = None
    minutes_seal_passphrase: SecretStr | None = None
    minutes_tsa_url: str | None = None  # an RFC 3161 timestamp authority: PAdES B-T

    # Video meetings (media/): where the server's peer connections listen, what browsers use.
    media_bind_address: str | None = None  # UDP sockets' address (default: every address)
    media_public_address: str | None = None  # the address announced to browsers (1:1 NAT)
    media_port_min: int | None = None  # UDP port range of the peer connections (both or
    media_port_max: int | None = None  # neither; default: any port the system gives)
    media_ice_servers: str = ""  # STUN/TURN URLs handed to browsers, comma-separated
    media_turn_secret: SecretStr | None = None  # TURN REST credentials (coturn auth secret)
    media_turn_username: str | None = None  # or fixed TURN credentials
    media_turn_password: SecretStr | None = None
    media_video_codecs: str = "VP8,H264"  # what publishers are asked to send, preferred first
    media_connect_seconds: int = 30  # a peer connection not up by then is closed

    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4

    log_level: str = "INFO"
    log_json: bool = True

    # Tests only: `concilia serve` reads the time from a clock standing still at this instant
    # (ISO 8601 with its offset), so a served meeting room can be open at a real slot.
    clock_fixed: datetime | None = None

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("node_url", mode="before")
    @classmethod
    def _node_url(cls, value: object) -> object:
        return None if value == "" else value.rstrip("/") if isinstance(value, str) else value

    @field_validator(
        "redis_url",
        "smtp_host",
        "smtp_user",
        "minutes_seal_p12",
        "minutes_seal_key",
        "minutes_seal_cert",
        "minutes_seal_chain",
        "minutes_tsa_url",
        "clock_fixed",
        "media_bind_address",
        "media_public_address",
        "media_port_min",
        "media_port_max",
        "media_turn_secret",
        "media_turn_username",
        "media_turn_password",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        # redis-py's URL pools (the node's client and its Socket.IO fan-out) take these only;
        # a Sentinel URL would fail later, at the first connection.
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "CONCILIA_REDIS_URL must start with redis://, rediss:// or unix:// "
                "(Redis Sentinel is not supported)"
            )
        return value

    @field_validator("clock_fixed")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("CONCILIA_CLOCK_FIXED needs a time zone offset")
        return value

    @model_validator(mode="after")
    def _no_fixed_clock_in_production(self) -> Settings:
        if self.clock_fixed is not None and self.env == "prod":
            raise ValueError("CONCILIA_CLOCK_FIXED is for tests: refused with CONCILIA_ENV=prod")
        return self

    @model_validator(mode="after")
    def _one_seal(self) -> Settings:
        if self.minutes_seal_p12 is not None and (
            self.minutes_seal_key is not None or self.minutes_seal_cert is not None
        ):
            raise ValueError(
                "set either CONCILIA_MINUTES_SEAL_P12 or CONCILIA_MINUTES_SEAL_KEY and "
                "CONCILIA_MINUTES_SEAL_CERT, not both"
            )
        if (self.minutes_seal_key is None) != (self.minutes_seal_cert is None):
            raise ValueError("CONCILIA_MINUTES_SEAL_KEY and CONCILIA_MINUTES_SEAL_CERT go together")
        return self

    @model_validator(mode="after")
    def _media(self) -> Settings:
        for name in ("media_bind_address", "media_public_address"):
            value = getattr(self, name)
            if value is not None:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    raise ValueError(f"CONCILIA_{name.upper()} must be an IP address") from None
        low, high = self.media_port_min, self.media_port_max
        if (low is None) != (high is None):
            raise ValueError("CONCILIA_MEDIA_PORT_MIN and CONCILIA_MEDIA_PORT_MAX go together")
        if low is not None and high is not None and not 1024 <= low <= high <= 65535:
            raise ValueError("the media port range must lie within 1024-65535, lowest first")
        for url in self.media_ice_server_urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"CONCILIA_MEDIA_ICE_SERVERS: {url!r} is no STUN or TURN URL")
        if self.media_turn_secret is not None and self.media_turn_username is not None:
            raise ValueError(
                "set either CONCILIA_MEDIA_TURN_SECRET or CONCILIA_MEDIA_TURN_USERNAME, not both"
            )
        if (self.media_turn_username is None) != (self.media_turn_password is None):
            raise ValueError(
                "CONCILIA_MEDIA_TURN_USERNAME and CONCILIA_MEDIA_TURN_PASSWORD go together"
            )
        codecs = self.media_video_codec_names
        if not codecs or not set(codecs) <= {"VP8", "H264"}:
            raise ValueError("CONCILIA_MEDIA_VIDEO_CODECS: VP8, H264 or both, in order")
        return self

    @property
    def media_ice_server_urls(self) -> list[str]:
        return [u.strip() for u in self.media_ice_servers.split(",") if u.strip()]

    @property
    def media_video_codec_names(self) -> list[str]:
        return [c.strip().upper() for c in self.media_video_codecs.split(",") if c.strip()]

    @property
    def dev(self) -> bool:
        return self.env == "dev"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def session_idle(self) -> timedelta:
        return timedelta(minutes=self.session_idle_minutes)

    @property
    def session_absolute(self) -> timedelta:
        return timedelta(hours=self.session_absolute_hours)

    @property
    def inactivity(self) -> timedelta:
        return timedelta(days=self.inactivity_days)

    @property
    def resolved_files_dir(self) -> Path:
        return self.files_dir or self.var_dir / "files"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file under the var directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'concilia.sqlite3').resolve()}"

    def secret(self) -> bytes:
        """The secret key; generated into the var directory on first use when not given.

        Several nodes must share one key, so a shared (non-SQLite) database requires it set.
        """
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value()
            if len(value) < MIN_SECRET:
                raise ValueError(f"CONCILIA_SECRET_KEY must have at least {MIN_SECRET} characters")
            return value.encode()
        if not self.resolved_database_url().startswith("sqlite"):
            raise ValueError(
                "set CONCILIA_SECRET_KEY (the same on every node) when using a shared database"
            )
        path = self.var_dir / "secret_key"
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            # Written whole under a temporary name, then linked into place: a process starting
            # at the same time either wins or reads the complete key of the winner.
            tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        value = path.read_text().strip()
        self.secret_key = SecretStr(value)
        return value.encode()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the optional file, with explicit overrides on top."""
    return Settings(_env_file=_env_file(), **overrides)


__all__ = ["Field", "Settings", "load_settings"]
