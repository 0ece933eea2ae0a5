"""Mail goes through a real SMTP server on loopback, from the outbox, once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from core.mail import MailStatus, OutboxMail
from tests.conftest import MailSink, free_port
from tests.support import Env, link_in, registered


@pytest.fixture
def settings_overrides(smtp_server: tuple[MailSink, int]) -> dict[str, Any]:
    _sink, port = smtp_server
    return {"smtp_host": "127.0.0.1", "smtp_port": port}


async def _settled(env: Env) -> None:
    """Wait until the worker has nothing due (it runs in the background)."""
    for _ in range(500):
        async with env.services.db.session() as session:
            busy = await session.scalar(
                select(OutboxMail.id).where(
                    OutboxMail.status.in_([MailStatus.QUEUED, MailStatus.SENDING]),
                    OutboxMail.next_attempt_at <= env.clock.now(),
                )
            )
        if busy is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the mail worker did not settle")


async def test_reset_mail_delivered_over_smtp(env: Env, smtp_server: tuple[MailSink, int]) -> None:
    sink, _port = smtp_server
    await registered(env, "postale")
    browser = env.browser()
    await browser.submit("/recover/password", {"identifier": "postale"})
    messages = await sink.wait_for(2)  # verification, then reset
    reset = messages[-1]
    assert reset["To"] == "postale@example.org"
    assert reset["Message-ID"]
    body = reset.get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = link_in(body, "/reset/")
    assert (await browser.get(link)).status == 200
    await _settled(env)
    mails = await env.mails("postale@example.org")
    assert [m.status for m in mails] == ["sent", "sent"]
    # Delivered mails keep no live link in the database.
    assert all(m.body_text == "" for m in mails)


async def test_sent_mail_is_never_sent_again(env: Env, smtp_server: tuple[MailSink, int]) -> None:
    sink, _port = smtp_server
    await registered(env, "unavolta")
    await sink.wait_for(1)
    await _settled(env)
    assert await env.services.mail.deliver_due() == 0
    env.advance(days=1)
    assert await env.services.mail.deliver_due() == 0
    assert len(sink.messages) == 1


async def test_mail_left_mid_send_is_not_resent(
    env: Env, smtp_server: tuple[MailSink, int]
) -> None:
    sink, _port = smtp_server
    await env.services.mail.close()  # no background worker: drive it by hand
    await registered(env, "interrotto")
    async with env.services.db.session() as session:
        # As if a worker claimed it and died while talking to the SMTP server.
        await session.execute(
            update(OutboxMail).values(
                status=MailStatus.SENDING, claimed_until=env.clock.now() + timedelta(minutes=5)
            )
        )
        await session.commit()
    env.advance(minutes=6)
    assert await env.services.mail.deliver_due() == 0
    mails = await env.mails("interrotto@example.org")
    assert [m.status for m in mails] == ["uncertain"]
    assert sink.messages == []


async def test_refused_mail_fails_permanently(env: Env, smtp_server: tuple[MailSink, int]) -> None:
    sink, _port = smtp_server
    await env.services.mail.close()
    sink.refuse_with = "550 mailbox unavailable"
    await registered(env, "rifiutato")
    assert await env.services.mail.deliver_due() == 1
    [mail] = await env.mails("rifiutato@example.org")
    assert mail.status == "failed" and mail.last_error == "SMTP 550"


@pytest.fixture
def unreachable_port() -> int:
    return free_port()


async def test_unreachable_server_is_retried_later(
    env: Env, smtp_server: tuple[MailSink, int], unreachable_port: int
) -> None:
    sink, port = smtp_server
    svc = env.services
    await svc.mail.close()
    svc.settings.smtp_port = unreachable_port  # nothing listens there
    await registered(env, "paziente")
    assert await svc.mail.deliver_due() == 1
    [mail] = await env.mails("paziente@example.org")
    assert mail.status == "queued" and mail.attempts == 1
    assert mail.next_attempt_at > env.clock.now()
    assert await svc.mail.deliver_due() == 0  # not due yet
    svc.settings.smtp_port = port
    env.advance(minutes=1)
    assert await svc.mail.deliver_due() == 1
    [mail] = await env.mails("paziente@example.org")
    assert mail.status == "sent" and len(sink.messages) == 1
