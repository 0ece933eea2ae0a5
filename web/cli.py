"""The ``concilia`` command: serve, migrate, manage users, load demo data."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import secrets
import string
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from stdnum import luhn
from stdnum.it import codicefiscale

from cases.accounts import SELF_REGISTERED, STAFF_ROLES, Role
from cases.companies import do_create_company, list_companies
from cases.passwords import check_password
from cases.request import Section
from core.clock import ROME, Clock, FakeClock, SystemClock
from core.errors import FieldErrors, UserError
from core.logs import configure_logging
from core.settings import Settings, load_settings
from web.app import create_app
from web.context import ROUTED
from web.migrate import revision, upgrade
from web.services import Services, open_services

log = logging.getLogger("concilia")


class RouteAccessLogger(AbstractAccessLogger):
    """Logs the route pattern, never the path: tokens in URLs stay out of the logs."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = "unmatched"
        # A request the HTTP parser refused never reached the router: it has no match info.
        if isinstance(request, web.Request) and request.get(ROUTED):
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
        self.logger.info(
            "%s %s %s",
            request.method,
            route,
            response.status,
            extra={
                "method": request.method,
                "route": route,
                "status": response.status,
                "ms": round(time * 1000, 1),
            },
        )


# The garbage collector's thresholds in a server (the defaults are 700, 10, 10): a full pass
# over the heap of hundreds of connections takes a good part of a second on a small machine,
# and with the defaults came every few seconds under load, as objects of requests in flight
# were promoted to the oldest generation and then freed by their reference counts anyway.
GC_THRESHOLDS = (2000, 10, 100)


async def _settle_heap(_app: web.Application) -> None:
    """Once the application started: what is loaded by now lives as long as the process, so
    the collector's full passes need not walk it again (``gc.freeze``), and they come less
    often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (less CPU per connection and per database round trip), else
    asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency; optional for a developer's run
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_app(app: web.Application, host: str, port: int) -> None:
    """Run ``app`` until interrupted, as ``concilia serve`` does (``bench.chat`` too)."""
    app.on_startup.append(_settle_heap)
    web.run_app(
        app,
        host=host,
        port=port,
        access_log_class=RouteAccessLogger,
        print=lambda text: log.info(str(text).strip()),
        loop=event_loop(),
    )


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    clock: Clock | None = None
    if settings.clock_fixed is not None:  # refused in production by the settings
        log.warning("the clock stands still at %s (CONCILIA_CLOCK_FIXED)", settings.clock_fixed)
        clock = FakeClock(settings.clock_fixed)
    serve_app(create_app(settings, clock=clock), host or settings.host, port or settings.port)
    return 0


async def _db_upgrade(settings: Settings) -> int:
    services = await open_services(settings, SystemClock())
    try:
        await upgrade(services.db)
        log.info("database schema is up to date")
    finally:
        await services.close()
    return 0


async def _db_revision(settings: Settings, message: str) -> int:
    services = await open_services(settings, SystemClock())
    try:
        await revision(services.db, message)
    finally:
        await services.close()
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if args.prompt_password:
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat the password: "):
            print("the two passwords differ", file=sys.stderr)
            raise SystemExit(2)
        return first
    return None


async def _users_create(settings: Settings, args: argparse.Namespace) -> int:
    services = await open_services(settings, SystemClock())
    form = {
        "role": args.role,
        "username": args.username,
        "first_name": args.first_name,
        "last_name": args.last_name,
        "tax_code": args.tax_code,
        "email": args.email,
        "mobile": args.mobile,
    }
    try:
        account, link = await services.accounts.do_create_account(
            form, password=_read_password(args)
        )
    except FieldErrors as exc:
        for field, codes in exc.fields.items():
            print(f"{field}: {', '.join(code.value for code in codes)}", file=sys.stderr)
        return 2
    finally:
        await services.close()
    print(f"created {account.role} {account.username}")
    if link:
        print(f"a link to choose the password was queued for {account.email}")
    return 0


async def _users_disable_inactive(settings: Settings) -> int:
    services = await open_services(settings, SystemClock())
    try:
        count = await services.accounts.do_disable_inactive()
    finally:
        await services.close()
    print(f"disabled {count} inactive accounts")
    return 0


def _vat(seed: str) -> str:
    return seed + str(luhn.calc_check_digit(seed))


def _tax_code(stem: str) -> str:
    return stem + str(codicefiscale.calc_check_digit(stem))


def demo_password(username: str, first: str, last: str) -> str:
    """A random password that satisfies the policy."""
    alphabet = string.ascii_letters + string.digits
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(12)) + "-Aa7"
        if not check_password(candidate, username=username, first_name=first, last_name=last):
            return candidate


DEMO_COMPANIES = (
    ("Energia Azzurra S.p.A.", "0123456001", ["electricity", "gas"]),
    ("Gas Tricolore S.r.l.", "0234567015", ["gas"]),
    ("Acque del Lago S.p.A.", "0345678058", ["water"]),
)
DEMO_PEOPLE: tuple[tuple[Role, str, str, str, str, dict[str, str]], ...] = (
    # role, username, first, last, tax-code stem, extra fields
    (Role.CUSTOMER, "demo.cliente", "Mario", "Rossi", "RSSMRA80A01H501", {}),
    (
        Role.DELEGATE,
        "demo.delegato",
        "Giulia",
        "Bianchi",
        "BNCGLI85M41F205",
        {"delegate_kind": "association", "association_name": "Associazione Consumatori Demo"},
    ),
    (Role.COMPANY_REP, "demo.azienda", "Luca", "Verdi", "VRDLCU75C10L219", {}),
    (Role.CONCILIATOR, "demo.conciliatore", "Anna", "Neri", "NRENNA70D45G273", {}),
    (Role.SCHEDULER, "demo.pianificatore", "Paolo", "Gallo", "GLLPLA82E12A944", {}),
    (Role.HELPDESK, "demo.helpdesk", "Sara", "Conti", "CNTSRA90H50D612", {}),
    (Role.ADMIN, "demo.admin", "Marco", "Ferri", "FRRMRC68T20F839", {}),
)


async def _demo(settings: Settings, if_empty: bool) -> int:
    services = await open_services(settings, SystemClock())
    try:
        if if_empty and await services.accounts.count() > 0:
            print("the database already has accounts: demo data not loaded")
            return 0
        now = services.clock.now()
        companies = {c.name: c for c in await list_companies(services.db)}
        for name, vat_seed, sectors in DEMO_COMPANIES:
            if name not in companies:
                companies[name] = await do_create_company(
                    services.db, name=name, vat=_vat(vat_seed), sectors=sectors, now=now
                )
        first_company = companies[DEMO_COMPANIES[0][0]]
        lines = []
        for index, (role, username, first, last, stem, extra) in enumerate(DEMO_PEOPLE):
            if await services.accounts.by_username(username) is not None:
                continue
            password = demo_password(username, first, last)
            form: dict[str, str] = {
                "role": role.value,
                "username": username,
                "first_name": first,
                "last_name": last,
                "tax_code": _tax_code(stem),
                "email": f"{username.replace('.', '-')}@example.org",
                "mobile": f"+39 333 000 00{index:02d}",
                **extra,
            }
            if role == Role.COMPANY_REP:
                form["company_id"] = str(first_company.id)
            await services.accounts.do_create_account(
                form, password=password, allowed=STAFF_ROLES | frozenset(SELF_REGISTERED)
            )
            lines.append(f"  {role.value:<12} {username:<20} {password}")
        if lines:
            code = await _demo_case(services, first_company.id)
            lines.append(f"A submitted demo case of demo.cliente: {code}")
    finally:
        await services.close()
    if lines:
        text = "Demo accounts (role, username, password):\n" + "\n".join(lines) + "\n"
        text += "Staff accounts sign in in two steps: the code is in the outbox (/dev/outbox).\n"
        print(text, end="")
        path = settings.var_dir / "demo-accounts.txt"
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        print(f"(also written to {path})")
    return 0


# A one-page PDF, enough for the demo case's attachments.
DEMO_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


async def _demo_case(services: Services, company_id: uuid.UUID) -> str:
    """A request of demo.cliente against the first demo company, filed and submitted."""
    customer = await services.accounts.by_username("demo.cliente")
    assert customer is not None
    today = services.clock.now().astimezone(ROME).date()
    answers: dict[str, object] = {
        "customer_kind": "person",
        "acting_as": "self",
        "sector": "electricity",
        "pod": "IT001E00012345",
        "address": "Via dei Mille 10",
        "postcode": "20121",
        "city": "Milano",
        "company_id": str(company_id),
        "complaint_sent_on": (today - timedelta(days=50)).isoformat(),
        "company_answered": "no",
        "dispute_category": "billing",
        "description": "Bolletta di conguaglio con consumi stimati molto superiori al reale.",
        "claim": "Rettifica della bolletta sulla base delle letture reali.",
        "amount": "312,40",
        "meeting_mode": "video",
        "availability": ["tue-10:30", "thu-14:00"],
        "notes": "",
    }
    case, _ = await services.filing.do_start(customer, answers)
    for section in Section:
        await services.filing.do_save(customer, case.id, section, answers)
    for category, name in (("complaint", "reclamo.pdf"), ("identity", "documento.pdf")):

        async def body() -> AsyncIterator[bytes]:
            yield DEMO_PDF

        await services.documents.do_add(
            customer,
            case.id,
            filename=name,
            chunks=body(),
            category=category,
            description=name.removesuffix(".pdf").capitalize(),
            visible_to_other_party="on",
        )
    submitted = await services.filing.do_submit(customer, case.id)
    return submitted.code or ""


def _progress(step: int, steps: int, label: str) -> None:
    width = 24
    done = width * step // steps
    print(f"[{'#' * done}{'.' * (width - done)}] {step}/{steps} {label}", flush=True)


async def _schedule_auto(
    settings: Settings, username: str, weeks: int | None, dry_run: bool
) -> int:
    """The batch allocation from the command line: proposal, summary, then (unless
    ``--dry-run``) the booking of all of it in one transaction."""
    services = await open_services(settings, SystemClock())
    try:
        account = await services.accounts.by_username(username)
        if account is None:
            print(f"no account {username!r}", file=sys.stderr)
            return 1
        if weeks is not None:
            services.planner.weeks = max(1, min(weeks, 12))
        try:
            proposal = await services.planner.do_propose(account, _progress)
        except UserError as exc:
            print(f"refused: {exc.code.value}", file=sys.stderr)
            return 1
        body = proposal.body
        reasons: dict[str, int] = {}
        for reason in body["unplaced"].values():
            reasons[reason] = reasons.get(reason, 0) + 1
        per_day: dict[str, int] = {}
        for _case, starts_at, _who in body["placements"]:
            day = datetime.fromisoformat(starts_at).astimezone(ROME).strftime("%a %d/%m")
            per_day[day] = per_day.get(day, 0) + 1
        score = body["score"]
        rows = [
            ("horizon", f"{body['first']} - {body['last']}"),
            ("placed", str(score["placed"])),
            ("preferences met", str(score["preferences_met"])),
            *((f"unplaced: {reason}", str(n)) for reason, n in sorted(reasons.items())),
            *((f"  {day}", str(n)) for day, n in per_day.items()),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"{label:<{width}}  {value:>8}")
        if dry_run:
            await services.planner.do_discard(account, proposal.id)
            print("dry run: nothing booked")
            return 0
        try:
            meetings = await services.planner.do_commit(account, proposal.id)
        except UserError as exc:
            print(f"refused: {exc.code.value}", file=sys.stderr)
            return 1
        print(f"{len(meetings)} meetings booked, invitations queued")
        return 0
    finally:
        await services.close()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="concilia", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the web application")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply the migrations")
    rev = db_sub.add_parser("revision", help="write a migration from the models (developers)")
    rev.add_argument("-m", "--message", required=True)
    users = sub.add_parser("users", help="accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a staff account")
    create.add_argument("--role", required=True, choices=sorted(r.value for r in STAFF_ROLES))
    create.add_argument("--username", required=True)
    create.add_argument("--first-name", required=True)
    create.add_argument("--last-name", required=True)
    create.add_argument("--tax-code", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--mobile", required=True)
    how = create.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    how.add_argument("--prompt-password", action="store_true", help="ask for the password")
    users_sub.add_parser("disable-inactive", help="disable accounts unused for too long")
    schedule = sub.add_parser("schedule", help="meetings")
    schedule_sub = schedule.add_subparsers(dest="schedule_command", required=True)
    auto = schedule_sub.add_parser(
        "auto", help="allocate every admitted case to a slot and a conciliator (exact)"
    )
    auto.add_argument("--as", dest="username", required=True, help="the scheduler acting")
    auto.add_argument("--weeks", type=int, help="horizon in weeks (default: the setting, 4)")
    auto.add_argument("--dry-run", action="store_true", help="show the proposal, book nothing")
    demo = sub.add_parser("demo", help="load demo companies and one account per role")
    demo.add_argument("--if-empty", action="store_true", help="only when there are no accounts")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    Path(settings.var_dir).mkdir(parents=True, exist_ok=True)
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "db":
        if args.db_command == "upgrade":
            return asyncio.run(_db_upgrade(settings))
        return asyncio.run(_db_revision(settings, args.message))
    if args.command == "users":
        if args.users_command == "create":
            return asyncio.run(_users_create(settings, args))
        return asyncio.run(_users_disable_inactive(settings))
    if args.command == "demo":
        return asyncio.run(_demo(settings, args.if_empty))
    if args.command == "schedule":
        return asyncio.run(_schedule_auto(settings, args.username, args.weeks, args.dry_run))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
