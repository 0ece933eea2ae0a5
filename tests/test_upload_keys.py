"""Idempotent uploads: an upload sent again with its key (the answer was lost, the form was
sent twice) adds nothing; the same key twice at once stores one document."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import func, select

from cases.documents import Document
from tests.support import PDF, REQUEST, Browser, Env, registered, sign_in
from tests.test_api_cases import api


async def draft(env: Env, username: str = "cliente") -> tuple[Browser, str, str]:
    """A signed-in customer with a draft case: (browser, case id, CSRF token)."""
    await registered(env, username)
    browser = await env.new_browser()
    await sign_in(browser, username, "Lampada-Verde-42")
    status, body = await api(browser, "POST", "/api/v1/cases", json=REQUEST["applicant"])
    assert status == 201, body
    token = (await api(browser, "GET", "/api/v1/me"))[1]["csrf_token"]
    return browser, body["case"]["id"], token


FIELDS = {"category": "bill", "description": "bolletta", "visible_to_other_party": "on"}


async def documents_in(env: Env) -> int:
    async with env.services.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Document)) or 0)


def stored_files(env: Env) -> int:
    root: Path = env.services.storage.root  # type: ignore[attr-defined]
    return len([p for p in root.rglob("*") if p.is_file()])


async def test_the_same_idempotency_key_gives_the_first_document_back(env: Env) -> None:
    browser, case_id, token = await draft(env)
    path = f"/api/v1/cases/{case_id}/documents"
    key = {"Idempotency-Key": "upload-1"}
    first = await browser.upload(path, FIELDS, "a.pdf", PDF, csrf=token, headers=key)
    assert first.status == 201, first.text
    again = await browser.upload(path, FIELDS, "a.pdf", PDF, csrf=token, headers=key)
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert json.loads(again.text)["id"] == json.loads(first.text)["id"]
    assert await documents_in(env) == 1 and stored_files(env) == 1
    # Another key, another document; none, as before.
    other = {"Idempotency-Key": "upload-2"}
    assert (
        await browser.upload(path, FIELDS, "a.pdf", PDF, csrf=token, headers=other)
    ).status == 201
    assert (await browser.upload(path, FIELDS, "a.pdf", PDF, csrf=token)).status == 201
    assert await documents_in(env) == 3
    # A key is the uploader's: another person's same key is theirs.
    stranger, their_case, their_token = await draft(env, "altro")
    theirs = await stranger.upload(
        f"/api/v1/cases/{their_case}/documents", FIELDS, "b.pdf", PDF, csrf=their_token, headers=key
    )
    assert theirs.status == 201
    # The same key for another case of the same person, or a key of the wrong shape: refused,
    # and nothing stored.
    _, second_case = await api(browser, "POST", "/api/v1/cases", json=REQUEST["applicant"])
    elsewhere = await browser.upload(
        f"/api/v1/cases/{second_case['case']['id']}/documents",
        FIELDS,
        "a.pdf",
        PDF,
        csrf=token,
        headers=key,
    )
    assert elsewhere.status == 409 and json.loads(elsewhere.text)["error"]["code"] == "conflict"
    # The same key with another file (by its name): refused, not answered with the first.
    other_file = await browser.upload(path, FIELDS, "b.pdf", PDF, csrf=token, headers=key)
    assert other_file.status == 409, other_file.text
    for bad in ("", "a b", "x" * 65, "é"):
        refused = await browser.upload(
            path, FIELDS, "a.pdf", PDF, csrf=token, headers={"Idempotency-Key": bad}
        )
        assert refused.status == 400, (bad, refused.text)
    assert await documents_in(env) == 4 and stored_files(env) == 4


async def test_one_key_twice_at_once_stores_one_document(env: Env) -> None:
    """Both requests pass the lookup before either commits: the second's insert meets the
    first's key and it answers with the first's document (its file removed)."""
    _browser, case_id, _token = await draft(env)
    account = await env.services.accounts.by_username("cliente")
    assert account is not None
    both_started = asyncio.Barrier(2)

    async def chunks() -> AsyncIterator[bytes]:
        await both_started.wait()
        yield PDF

    results = await asyncio.gather(
        *(
            env.services.documents.add_once(
                account,
                uuid.UUID(case_id),
                "same-key",
                filename="a.pdf",
                chunks=chunks(),
                category="bill",
                description="bolletta",
                visible_to_other_party="on",
            )
            for _ in range(2)
        )
    )
    (first, first_replayed), (second, second_replayed) = results
    assert first.id == second.id and sorted((first_replayed, second_replayed)) == [False, True]
    assert await documents_in(env) == 1 and stored_files(env) == 1


async def test_the_upload_form_carries_its_key(env: Env) -> None:
    browser, case_id, _ = await draft(env)
    keys = []
    for _ in range(2):
        page = await browser.get(f"/cases/{case_id}/request/summary")
        found = re.search(r'name="upload_key" value="([A-Za-z0-9_-]+)"', page.text)
        assert found, "the form has its key"
        keys.append(found.group(1))
    assert keys[0] != keys[1]  # each form its own
    fields = {**FIELDS, "upload_key": keys[0]}
    for _ in range(2):  # sent twice (a double click, a resend after a lost answer)
        posted = await browser.upload(
            f"/cases/{case_id}/documents", fields, "a.pdf", PDF, csrf=page.csrf
        )
        assert posted.status == 303, posted.text
    assert await documents_in(env) == 1
