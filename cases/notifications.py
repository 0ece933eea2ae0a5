"""E-mails to people, rendered from templates in their language and queued in the outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.i18n import I18n
from core.mail import OutboxMail, enqueue

TEMPLATES = Path(__file__).parent / "mail"
SEPARATOR = "\n---\n"


class Recipient(Protocol):
    """What a mail needs of an account (kept structural: accounts import this module)."""

    email: str
    language: str
    first_name: str
    username: str


class Notifier:
    """Renders a mail template (first part the subject, then the body) and queues it."""

    def __init__(self, i18n: I18n, clock: Clock, public_url: str, wake: Callable[[], None]) -> None:
        self._i18n = i18n
        self._clock = clock
        self.public_url = public_url
        self._domain = urlsplit(public_url).hostname or "concilia.invalid"
        self.wake = wake
        # Plain-text mails: nothing is HTML, so nothing is escaped.
        self._env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            undefined=StrictUndefined,
            autoescape=False,  # noqa: S701
            keep_trailing_newline=True,
        )

    @property
    def domain(self) -> str:
        """The public host: the right-hand side of message ids and invitation UIDs."""
        return self._domain

    def now(self) -> datetime:
        return self._clock.now()

    def render(self, template: str, lang: str, **context: Any) -> tuple[str, str]:
        """(subject, body) of ``template`` in ``lang``."""
        gettext = self._i18n.gettext(lang)
        text = self._env.get_template(f"{template}.txt").render(
            _=gettext, public_url=self.public_url, **context
        )
        subject, _, body = text.partition(SEPARATOR)
        return " ".join(subject.split()), body.strip() + "\n"

    def queue(
        self,
        session: AsyncSession,
        *,
        to: str,
        lang: str,
        template: str,
        calendar: str | None = None,
        **context: Any,
    ) -> OutboxMail:
        """Queue the mail in the caller's transaction; call ``wake()`` after committing."""
        subject, body = self.render(template, lang, **context)
        return enqueue(
            session,
            to=to,
            subject=subject,
            text=body,
            now=self._clock.now(),
            domain=self._domain,
            calendar=calendar,
        )

    def queue_for(
        self, session: AsyncSession, account: Recipient, template: str, **context: Any
    ) -> OutboxMail:
        """Queue a mail to an account, in its language, greeting it by name."""
        return self.queue(
            session,
            to=account.email,
            lang=account.language,
            template=template,
            first_name=account.first_name,
            username=account.username,
            **context,
        )
