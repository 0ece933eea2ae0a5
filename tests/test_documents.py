"""Documents of a case: visibility between the parties, refused files leave nothing behind."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from cases.accounts import Account
from cases.casefile import CaseEvent, CaseFiles
from cases.companies import do_create_company
from cases.documents import Document, Documents
from cases.lifecycle import Action
from cases.storage import FileTooLarge, LocalStorage
from cases.supply import Sector
from cases.uploads import CONCILIATION_MAX_FILE
from core.errors import ErrorCode, FieldErrors, UserError
from tests.support import VALID_VAT, Env, registered, staff

PDF = b"%PDF-1.7\n" + b"0" * 1000


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def zeros(total: int) -> AsyncIterator[bytes]:
    yield b"%PDF-"
    sent = 5
    while sent < total:
        piece = min(64 * 1024, total - sent)
        yield b"0" * piece
        sent += piece


class World:
    def __init__(
        self,
        env: Env,
        documents: Documents,
        files: CaseFiles,
        case_id: uuid.UUID,
        people: dict[str, Account],
    ):
        self.env, self.documents, self.files, self.case_id, self.people = (
            env,
            documents,
            files,
            case_id,
            people,
        )


@pytest.fixture
async def world(env: Env) -> World:
    svc = env.services
    company = await do_create_company(
        svc.db, name="Energia Azzurra", vat=VALID_VAT, sectors=["electricity"], now=env.clock.now()
    )
    other = await do_create_company(
        svc.db, name="Altra Spa", vat="02345670158", sectors=["gas"], now=env.clock.now()
    )
    await registered(env, "cliente")
    await registered(env, "estraneo")
    await registered(env, "rep", kind="company_rep", company_id=str(company.id))
    await registered(env, "rep.altra", kind="company_rep", company_id=str(other.id))
    await staff(env, "operatore", role="helpdesk")
    people = {}
    for name in ("cliente", "estraneo", "rep", "rep.altra", "operatore"):
        account = await svc.accounts.by_username(name)
        assert account is not None
        people[name] = account
    # Representatives are active once an admin approves them.
    for name in ("rep", "rep.altra"):
        await svc.accounts.do_activate(people[name].id)
    files = CaseFiles(svc.db, env.clock)
    case = await files.do_open_draft(
        people["cliente"],
        company_id=company.id,
        sector=Sector.ELECTRICITY,
        customer_id=people["cliente"].id,
        delegate_id=None,
    )
    await files.do_step(people["cliente"], case.id, Action.SUBMIT)
    storage = LocalStorage(env.services.settings.var_dir / "documents")
    return World(env, Documents(svc.db, env.clock, storage), files, case.id, people)


async def _add(
    world: World, who: str, *, visible: bool = True, data: bytes = PDF, name: str = "bolletta.pdf"
) -> Document:
    world.env.advance(seconds=1)  # documents arrive one after the other
    return await world.documents.do_add(
        world.people[who],
        world.case_id,
        filename=name,
        chunks=chunks(data),
        category="bill",
        description="Bolletta contestata",
        visible_to_other_party=visible,
    )


async def test_parties_see_shared_documents_and_their_own(world: World) -> None:
    shared = await _add(world, "cliente")
    private = await _add(world, "cliente", visible=False, name="nota-per-il-conciliatore.pdf")
    company_doc = await _add(world, "rep", visible=True, name="risposta.pdf")

    def ids(docs: list[Document]) -> list[uuid.UUID]:
        return [d.id for d in docs]

    assert ids(await world.documents.list_for(world.people["cliente"], world.case_id)) == [
        shared.id,
        private.id,
        company_doc.id,
    ]
    assert ids(await world.documents.list_for(world.people["rep"], world.case_id)) == [
        shared.id,
        company_doc.id,
    ]
    assert ids(await world.documents.list_for(world.people["operatore"], world.case_id)) == [
        shared.id,
        private.id,
        company_doc.id,
    ]
    # The private document does not exist for the other party, not even by id.
    with pytest.raises(UserError) as refused:
        await world.documents.get_for(world.people["rep"], private.id)
    assert refused.value.code == ErrorCode.NOT_FOUND
    events = await world.files.timeline(world.case_id)
    assert [e.kind for e in events][-3:] == ["document_added"] * 3


@pytest.mark.parametrize("who", ["estraneo", "rep.altra"])
async def test_unrelated_people_can_neither_add_nor_see(world: World, who: str) -> None:
    shared = await _add(world, "cliente")
    for call in (
        world.documents.list_for(world.people[who], world.case_id),
        world.documents.get_for(world.people[who], shared.id),
        _add(world, who),
    ):
        with pytest.raises(UserError) as refused:
            await call
        assert refused.value.code == ErrorCode.NOT_FOUND


async def _nothing_left(world: World) -> None:
    storage = world.documents.storage
    assert await storage.keys() == []
    assert isinstance(storage, LocalStorage) and list(storage.incoming.iterdir()) == []
    async with world.env.services.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 0
        kinds = list(await session.scalars(select(CaseEvent.kind)))
    assert "document_added" not in kinds


async def test_oversize_refused_while_streaming(world: World) -> None:
    with pytest.raises(FileTooLarge):
        await world.documents.do_add(
            world.people["cliente"],
            world.case_id,
            filename="grande.pdf",
            chunks=zeros(CONCILIATION_MAX_FILE + 1),
            category="bill",
            description="x",
            visible_to_other_party=True,
        )
    await _nothing_left(world)


async def test_exactly_15_mb_accepted(world: World) -> None:
    document = await world.documents.do_add(
        world.people["cliente"],
        world.case_id,
        filename="grande.pdf",
        chunks=zeros(CONCILIATION_MAX_FILE),
        category="bill",
        description="x",
        visible_to_other_party=True,
    )
    assert document.size == CONCILIATION_MAX_FILE


async def test_wrong_content_and_type_leave_nothing(world: World) -> None:
    with pytest.raises(FieldErrors) as refused:
        await _add(world, "cliente", data=b"MZ\x90\x00" + b"\x00" * 100, name="fattura.pdf")
    assert refused.value.fields == {"file": [ErrorCode.FILE_CONTENT_MISMATCH]}
    with pytest.raises(FieldErrors) as refused:
        await _add(world, "cliente", name="virus.exe")
    assert refused.value.fields == {"file": [ErrorCode.FILE_TYPE_NOT_ALLOWED]}
    await _nothing_left(world)


async def test_fields_are_checked_before_the_bytes(world: World) -> None:
    with pytest.raises(FieldErrors) as refused:
        await world.documents.do_add(
            world.people["cliente"],
            world.case_id,
            filename="a.pdf",
            chunks=chunks(PDF),
            category="nonsense",
            description="",
            visible_to_other_party=True,
        )
    assert set(refused.value.fields) == {"category", "description"}
    await _nothing_left(world)


async def test_names_are_kept_sanitized_and_never_used_as_paths(world: World) -> None:
    document = await _add(world, "cliente", name="../../etc/\u202epasswd.pdf")
    assert document.name == "passwd.pdf"
    path = world.documents.storage.path(document.storage_key)
    assert path.name == document.storage_key and path.read_bytes() == PDF


async def test_orphan_objects_are_swept(world: World) -> None:
    kept = await _add(world, "cliente")
    storage = world.documents.storage
    orphan = await storage.put(chunks(PDF), max_bytes=10_000)
    assert await world.documents.sweep_orphans() == 0  # too recent: maybe an upload in flight
    old = time.time() - 7200
    os.utime(storage.path(orphan.key), (old, old))
    os.utime(storage.path(kept.storage_key), (old, old))
    assert await world.documents.sweep_orphans() == 1
    assert await storage.keys() == [kept.storage_key]
