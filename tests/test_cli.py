"""The ``concilia`` command, run as a process against the test database."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.support import GOOD_PASSWORD, TAX_CODE, Env, sign_in, staff_sign_in

ROOT = Path(__file__).parents[1]


async def concilia(
    env: Env, tmp_path: Path, *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    environ = {
        **os.environ,
        "CONCILIA_DATABASE_URL": env.db_url,
        "CONCILIA_VAR_DIR": str(tmp_path / "cli-var"),
        "CONCILIA_SECRET_KEY": "cli-secret-" + "y" * 40,
        "CONCILIA_PUBLIC_URL": "http://concilia.test",
        "CONCILIA_LOG_JSON": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "web.cli",
        *args,
        cwd=ROOT,
        env=environ,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_users_create_with_password(env: Env, tmp_path: Path) -> None:
    code, out, err = await concilia(
        env,
        tmp_path,
        "users",
        "create",
        "--role",
        "conciliator",
        "--username",
        "cli.concil",
        "--first-name",
        "Anna",
        "--last-name",
        "Neri",
        "--tax-code",
        TAX_CODE,
        "--email",
        "cli.concil@example.org",
        "--mobile",
        "+39 333 555 1234",
        "--password-stdin",
        stdin=GOOD_PASSWORD + "\n",
    )
    assert code == 0, err
    assert "created conciliator cli.concil" in out
    assert GOOD_PASSWORD not in out + err  # never echoed or logged
    page = await staff_sign_in(env, env.browser(), "cli.concil")
    assert page.status == 303


async def test_users_create_sends_link_without_password(env: Env, tmp_path: Path) -> None:
    code, out, err = await concilia(
        env,
        tmp_path,
        "users",
        "create",
        "--role",
        "admin",
        "--username",
        "cli.admin",
        "--first-name",
        "Marco",
        "--last-name",
        "Ferri",
        "--tax-code",
        TAX_CODE,
        "--email",
        "cli.admin@example.org",
        "--mobile",
        "+39 333 555 1235",
    )
    assert code == 0, err
    assert "a link to choose the password was queued" in out
    mail = await env.last_mail("cli.admin@example.org", "/reset/")
    assert "http://concilia.test/reset/" in mail.body_text


async def test_users_create_reports_bad_fields(env: Env, tmp_path: Path) -> None:
    code, _out, err = await concilia(
        env,
        tmp_path,
        "users",
        "create",
        "--role",
        "scheduler",
        "--username",
        "x",
        "--first-name",
        "Paolo",
        "--last-name",
        "Gallo",
        "--tax-code",
        "NOTACODE",
        "--email",
        "bad",
        "--mobile",
        "1",
        "--password-stdin",
        stdin="weak\n",
    )
    assert code == 2
    for field in ("username", "tax_code", "email", "mobile", "password"):
        assert f"{field}:" in err
    assert await env.services.accounts.count() == 0
    # The role must be a staff role: the parser refuses the rest.
    code, _out, err = await concilia(
        env,
        tmp_path,
        "users",
        "create",
        "--role",
        "customer",
        "--username",
        "x",
        "--first-name",
        "a",
        "--last-name",
        "b",
        "--tax-code",
        "c",
        "--email",
        "d",
        "--mobile",
        "e",
    )
    assert code == 2 and "invalid choice" in err


async def test_demo_loads_one_account_per_role_once(env: Env, tmp_path: Path) -> None:
    code, out, err = await concilia(env, tmp_path, "demo", "--if-empty")
    assert code == 0, err
    accounts = dict(re.findall(r"^\s+\w+\s+(demo\.\w+)\s+(\S+)$", out, re.M))
    assert set(accounts) == {
        "demo.cliente",
        "demo.delegato",
        "demo.azienda",
        "demo.conciliatore",
        "demo.pianificatore",
        "demo.helpdesk",
        "demo.admin",
    }
    assert (await sign_in(env.browser(), "demo.cliente", accounts["demo.cliente"])).status == 303
    assert (
        await sign_in(await env.new_browser(), "demo.azienda", accounts["demo.azienda"])
    ).status == 303
    page = await staff_sign_in(
        env, await env.new_browser(), "demo.admin", accounts["demo.admin"], "demo-admin@example.org"
    )
    assert page.status == 303
    code, out, _err = await concilia(env, tmp_path, "demo", "--if-empty")
    assert code == 0 and "not loaded" in out


async def test_schedule_auto_previews_then_books(env: Env, tmp_path: Path) -> None:
    import uuid

    from cases.companies import do_create_company
    from cases.lifecycle import CaseStatus
    from tests.support import VALID_VAT, admitted_case, registered

    svc = env.services
    company = await do_create_company(
        svc.db, name="Energia A", vat=VALID_VAT, sectors=["electricity"], now=env.clock.now()
    )
    await registered(env, "cliente")
    case_id = uuid.UUID(await admitted_case(env, str(company.id)))
    code, out, err = await concilia(
        env, tmp_path, "schedule", "auto", "--as", "pianificatore", "--dry-run"
    )
    assert code == 0, err
    assert re.search(r"placed\s+1", out) and "nothing booked" in out
    scheduler = await svc.accounts.by_username("pianificatore")
    assert scheduler is not None
    case, _ = await svc.files.get_for(scheduler, case_id)
    assert case.status == CaseStatus.ADMITTED
    code, out, err = await concilia(env, tmp_path, "schedule", "auto", "--as", "pianificatore")
    assert code == 0, err
    assert "1 meetings booked" in out and "[########################] 3/3" in out
    case, _ = await svc.files.get_for(scheduler, case_id)
    assert case.status == CaseStatus.SCHEDULED
    code, _out, err = await concilia(env, tmp_path, "schedule", "auto", "--as", "cliente")
    assert code == 1 and "forbidden" in err
