"""The whole service in a real browser, through its pages only: the system Chromium, driven by
Playwright, against the application served on a loopback port with an injected clock and a
real SMTP server (aiosmtpd) on loopback.

A customer (or, in the delegated run, a delegate acting for a customer) registers, confirms the
e-mail with the link it received, files a request with the guided form's six sections and its
attachments; the company's representative confirms it takes part and adds a document; the help
desk admits the case; the scheduler runs the automatic allocation and books it; the invitation
arrives with its ICS; at the slot the parties pass the welcome page, wait in the lobby, are
admitted, chat, hold a separate session, turn the video on with Chromium's fake devices and
accept the agreement the conciliator drafts with the codes they were e-mailed; the minutes
appear in the case file and the closing e-mail arrives (to the delegate only, when there is
one).

Every page visited is checked with axe-core (no serious or critical violation), at a phone's
width (no horizontal scroll at 390 px), and screenshotted into ``var/screens/<run>/``; each
role does at least one step with the keyboard alone, its focus visible.

The direct run uses SQLite, the delegated one PostgreSQL. Without ``/usr/bin/chromium`` the
test skips, unless ``CONCILIA_REQUIRE_SERVICES=1`` (CI)."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from cases.companies import do_create_company
from core.clock import FakeClock
from tests.conftest import MailSink, fresh_database, serving
from tests.services import PostgresDatabases, unavailable
from tests.support import (
    GOOD_PASSWORD,
    PDF,
    TAX_CODE,
    VALID_VAT,
    Env,
    code_in,
    link_in,
    registered,
    staff,
)
from tests.worlds import FIRST, rome

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).parents[1]
SCREENS = ROOT / "var" / "screens"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_PATH = "/test-only/axe.min.js"  # answered by the browser context, never by the service
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
WAIT_MS = 20_000
VENDOR = "/static/vendor/bootstrap-italia/"

# The two runs: who files, and on which database.
RUNS = {"direct": "sqlite", "delegated": "postgresql"}


@dataclass(frozen=True)
class Filer:
    """Who registers and files, and what the delegated run adds."""

    run: str
    username: str
    first_name: str
    last_name: str
    delegate: bool

    @property
    def email(self) -> str:
        return f"{self.username}@example.org"


FILERS = {
    "direct": Filer("direct", "mrossi", "Mario", "Rossi", delegate=False),
    "delegated": Filer("delegated", "gverdi", "Giulia", "Verdi", delegate=True),
}


@pytest.fixture(params=list(RUNS))
def run(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def journey_db(
    run: str,
    tmp_path: Path,
    sqlite_template: Path,
    pg_databases: PostgresDatabases | BaseException,
) -> AsyncIterator[str]:
    """A freshly migrated database: SQLite for the direct run, PostgreSQL for the delegated."""
    async with fresh_database(RUNS[run], tmp_path, sqlite_template, pg_databases) as url:
        yield url


@pytest.fixture
async def served(
    journey_db: str,
    tmp_path: Path,
    clock: FakeClock,
    smtp_server: tuple[MailSink, int],
) -> AsyncIterator[Env]:
    """The application on a real loopback port, sending its mail to the SMTP server on
    loopback."""
    sink, smtp_port = smtp_server
    async with serving(
        journey_db, tmp_path, clock, smtp_host="127.0.0.1", smtp_port=smtp_port
    ) as environment:
        environment.delivered = sink.messages
        yield environment


@pytest.fixture
def chromium_path() -> Path:
    """The system Chromium and axe-core; skip without them (fail when services are required)."""
    if not CHROMIUM.exists():
        unavailable("Chromium", FileNotFoundError(f"{CHROMIUM} (apt-get install chromium)"))
    if not AXE.exists():
        unavailable("axe-core", FileNotFoundError(f"{AXE} (npm ci)"))
    return CHROMIUM


@pytest.fixture
async def chromium(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_path),
            args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Person:
    """One role's browser window; every page it shows passes through ``check``."""

    run: str
    name: str
    page: Page
    viewport: ViewportSize
    shots: list[str]
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # The UI kit's bundle sets inline styles that the CSP refuses, on every page: not ours.
        # A form sent back with its errors comes with 422, which Chromium logs: expected.
        expected = "status of 422" in message.text
        if (
            message.type == "error"
            and VENDOR not in message.location.get("url", "")
            and not expected
        ):
            self.errors.append(f"{self.page.url}: {message.text}")

    async def check(self, step: str) -> None:
        """Screenshot the page, run axe-core on it, and render it at 390 px: no serious or
        critical violation, no horizontal scroll and no control cut off."""
        folder = SCREENS / self.run
        folder.mkdir(parents=True, exist_ok=True)
        self.shots.append(step)
        number = len(self.shots)
        await self.page.screenshot(
            path=str(folder / f"{number:02d}-{self.name}-{step}.png"), full_page=True
        )
        await axe_clean(self.page, step)
        if self.viewport["width"] != PHONE["width"]:
            await self.page.set_viewport_size(PHONE)
        try:
            width = await bounded(self.page, "document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{step}: {width} px wide at 390 px"
            cut = await bounded(self.page, CUT_CONTROLS)
            assert cut == [], f"{step}: controls cut off at 390 px: {cut}"
        finally:
            if self.viewport["width"] != PHONE["width"]:
                await self.page.set_viewport_size(self.viewport)


# The page's controls (buttons, fields, links styled as buttons, labels of radios and
# checkboxes, whose inputs the UI kit draws itself) that do not fit the window's width.
CUT_CONTROLS = """() => {
    const wide = window.innerWidth;
    const found = [];
    const controls = document.querySelectorAll(
        'main button, main select, main textarea, main a.btn, main .form-check-label,'
        + ' main input:not([type=hidden]):not([type=radio]):not([type=checkbox])');
    for (const element of controls) {
        const box = element.getBoundingClientRect();
        if (box.width === 0 || element.closest('[hidden]')) continue;
        if (box.left < -1 || box.right > wide + 1) {
            found.push(`${element.tagName.toLowerCase()}#${element.id}: ${box.left}-${box.right}`);
        }
    }
    return found.slice(0, 10);
}"""


async def bounded(page: Page, script: str, patience: float = 60) -> Any:
    """``page.evaluate(script)`` within ``patience`` seconds."""
    try:
        return await asyncio.wait_for(page.evaluate(script), patience)
    except TimeoutError:
        raise AssertionError(f"{page.url} did not answer within {patience} s") from None


async def axe_clean(page: Page, step: str) -> None:
    """axe-core's WCAG 2.1 A/AA rules on the page: no serious or critical violation."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        # Bounded too: add_script_tag waits for the script's load event without a timeout.
        await asyncio.wait_for(page.add_script_tag(url=AXE_PATH), 60)
    # Playwright's evaluate has no timeout of its own: a page that never answers fails the test.
    result: dict[str, Any] = await bounded(
        page,
        """async () => {
            const result = await axe.run(document, {
                runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
            });
            const found = result.violations
                .filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
            return {found, passed: result.passes.length};
        }""",
    )
    found = result["found"]
    assert result["passed"] > 5, f"{step}: axe-core checked nothing: {result}"
    assert found == [], f"{step}: {found}"


async def window(
    browser: Browser, env: Env, run: str, name: str, shots: list[str], *, phone: bool
) -> Person:
    viewport = PHONE if phone else DESKTOP
    context = await browser.new_context(
        base_url=base_of(env),
        viewport=viewport,
        locale="it-IT",
    )
    # axe-core is served at a path of the service's own origin, so the pages' CSP (script-src
    # 'self', no inline scripts) lets it in untouched.
    await context.route(f"**{AXE_PATH}", lambda route: route.fulfill(path=AXE))
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    return Person(run, name, page, viewport, shots)


def base_of(env: Env) -> str:
    return str(env.client.server.make_url("/")).rstrip("/")


async def focus_visible(page: Page) -> None:
    """The focused element shows it: an outline or a focus ring (box-shadow)."""
    style = await page.evaluate(
        """() => {
            const s = getComputedStyle(document.activeElement);
            return {outline: s.outlineStyle, width: s.outlineWidth, shadow: s.boxShadow};
        }"""
    )
    shown = (style["outline"] != "none" and style["width"] != "0px") or style["shadow"] != "none"
    assert shown, f"focus not visible: {style}"


async def tab_to(page: Page, target: Locator, *, limit: int = 80) -> None:
    """Press Tab until ``target`` has the focus (its focus visible), as a keyboard user does."""
    handle = await target.element_handle()
    assert handle is not None
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("element => document.activeElement === element", handle):
            await focus_visible(page)
            return
    raise AssertionError(f"{target} not reached with Tab")


async def type_into(page: Page, target: Locator, text: str) -> None:
    await tab_to(page, target)
    await page.keyboard.type(text)


async def pick_by_keyboard(page: Page, select: Locator, value: str) -> None:
    """Choose ``value`` in the focused ``select`` with the arrow keys."""
    for _ in range(30):
        if await select.input_value() == value:
            return
        await page.keyboard.press("ArrowDown")
    raise AssertionError(f"{value} not reached with the arrow keys")


async def choose(page: Page, input_id: str) -> None:
    """Tick a radio or checkbox by its label (the UI kit styles the label, not the input)."""
    await page.locator(f"label[for='{input_id}']").click()
    await expect(page.locator(f"#{input_id}")).to_be_checked()


def mails_to(env: Env, to: str) -> list[Message]:
    return [m for m in env.delivered or [] if m["To"] == to]


def text_of(message: Message) -> str:
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if part.get_content_type() == "text/plain" and isinstance(payload, bytes):
            return payload.decode(part.get_content_charset() or "utf-8")
    return ""


async def mail_to(env: Env, to: str, pattern: str, *, after: int = 0) -> Message:
    """The first mail to ``to`` (after the first ``after`` of them) whose text matches the
    regular expression ``pattern``; waited for (the outbox sends in the background)."""
    for _ in range(1000):
        for message in mails_to(env, to)[after:]:
            if re.search(pattern, text_of(message), re.M):
                return message
        await asyncio.sleep(0.02)
    subjects = [str(m["Subject"]) for m in mails_to(env, to)]
    raise AssertionError(f"no mail to {to} matching {pattern!r}: {subjects}")


def calendar_of(message: Message) -> bytes:
    """The ICS attached to ``message`` (empty without one)."""
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if part.get_content_type() == "text/calendar" and isinstance(payload, bytes):
            return payload
    return b""


CODE = r"^\s+([0-9]{6})\s*$"


async def sign_in_by_keyboard(
    one: Person, env: Env, username: str, *, staff_code: bool = False
) -> None:
    """The sign-in page with the keyboard alone: Tab to each field, type, Enter."""
    page = one.page
    before = len(mails_to(env, f"{username}@example.org"))
    await page.goto("/login")
    await one.check("sign-in")
    await type_into(page, page.locator("#f-username"), username)
    await type_into(page, page.locator("#f-password"), GOOD_PASSWORD)
    await page.keyboard.press("Enter")
    if staff_code:
        await staff_code_step(one, env, username, before)
    await page.wait_for_url(lambda url: "/login" not in url)


async def sign_in(one: Person, env: Env, username: str, *, staff_code: bool) -> None:
    page = one.page
    before = len(mails_to(env, f"{username}@example.org"))
    await page.goto("/login")
    await page.fill("#f-username", username)
    await page.fill("#f-password", GOOD_PASSWORD)
    await page.click("form[action='/login'] button[type=submit]")
    if staff_code:
        await staff_code_step(one, env, username, before)
    await page.wait_for_url(lambda url: "/login" not in url)


async def staff_code_step(one: Person, env: Env, username: str, before: int) -> None:
    """The second step of a staff sign-in: the code from the mail that came after ``before``."""
    page = one.page
    await page.wait_for_url("**/login/code**")
    message = await mail_to(env, f"{username}@example.org", CODE, after=before)
    await page.fill("#f-code", code_in(text_of(message)))
    await page.click("form[action='/login/code'] button[type=submit]")
    await page.wait_for_url(lambda url: "/login" not in url)


@pytest.mark.slow
async def test_the_whole_journey_through_the_pages(
    run: str, served: Env, chromium: Browser, clock: FakeClock
) -> None:
    env = served
    filer = FILERS[run]
    shots: list[str] = []
    shutil.rmtree(SCREENS / run, ignore_errors=True)

    # The service's own people, as the CLI creates them; the company and its representative.
    company = await do_create_company(
        env.services.db, name="Energia A", vat=VALID_VAT, sectors=["electricity"], now=clock.now()
    )
    for name, role in (
        ("sportello", "helpdesk"),
        ("pianificatore", "scheduler"),
        ("conciliatore1", "conciliator"),
    ):
        await staff(env, name, role=role)
    await rep_account(env, str(company.id))

    # 1. Registration, on a phone.
    applicant = await window(chromium, env, run, filer.run, shots, phone=True)
    page = applicant.page
    await page.goto("/")
    await applicant.check("home")
    await page.goto("/register")
    await choose(page, "kind-delegate" if filer.delegate else "kind-customer")
    if filer.delegate:
        await page.select_option("#f-delegate_kind", "association")
        await page.fill("#f-association_name", "Associazione Consumatori Milano")
    await page.fill("#f-first_name", filer.first_name)
    await page.fill("#f-last_name", filer.last_name)
    await page.fill("#f-tax_code", TAX_CODE)
    await page.fill("#f-email", filer.email)
    await page.fill("#f-mobile", "333 123 4567")
    await page.fill("#f-username", filer.username)
    # The help of a field, opened with the keyboard (Space on its "?").
    help_button = page.locator("button[data-help='h-tax_code']")
    await tab_to(page, help_button)
    await page.keyboard.press("Space")
    await expect(page.locator("#h-tax_code")).to_be_visible()
    await expect(help_button).to_have_attribute("aria-expanded", "true")
    # A mistyped confirmation: the field is marked and explained, what was typed is kept.
    await page.fill("#f-password", GOOD_PASSWORD)
    await page.fill("#f-password_confirm", GOOD_PASSWORD + "x")
    await choose(page, "f-privacy")
    await applicant.check("register")
    await page.click("form[action='/register'] button[type=submit]")
    await expect(page.locator("#e-password_confirm")).to_be_visible()
    await expect(page.locator("#f-password_confirm")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#f-username")).to_have_value(filer.username)
    await applicant.check("register-errors")
    await page.fill("#f-password", GOOD_PASSWORD)
    await page.fill("#f-password_confirm", GOOD_PASSWORD)
    if not await page.locator("#f-privacy").is_checked():
        await choose(page, "f-privacy")
    await page.click("form[action='/register'] button[type=submit]")
    await page.wait_for_url("**/register/done**")
    await applicant.check("register-done")

    # 2. The e-mail confirmed with the link the SMTP server received.
    verify = await mail_to(env, filer.email, "/verify/")
    await page.goto(link_in(text_of(verify), "/verify/"))
    await applicant.check("verify")
    await page.click("main form button[type=submit]")
    await expect(page.locator("main .alert-success")).to_be_visible()
    await applicant.check("verified")

    # 3. Signed in with the keyboard alone.
    await sign_in_by_keyboard(applicant, env, filer.username)
    await applicant.check("signed-in")

    # 4. The guided form, six sections.
    await page.goto("/cases/new")
    await choose(page, "f-customer_kind-person")
    await choose(page, "f-acting_as-delegate" if filer.delegate else "f-acting_as-self")
    if filer.delegate:
        await page.fill("#f-customer_first_name", "Lucia")
        await page.fill("#f-customer_last_name", "Bianchi")
        await page.fill("#f-customer_tax_code", "BNCLCU80A41F205X")
        await choose(page, "f-mandate_to_settle")
    await applicant.check("request-applicant")
    await next_section(page, "supply")
    await choose(page, "f-sector-electricity")
    await page.fill("#f-pod", "IT001E12345678")
    await page.fill("#f-address", "Via Roma 1")
    await page.fill("#f-postcode", "20121")
    await page.fill("#f-city", "Milano")
    await applicant.check("request-supply")
    await next_section(page, "company")
    await page.select_option("#f-company_id", str(company.id))
    await applicant.check("request-company")
    await next_section(page, "complaint")
    await page.fill("#f-complaint_sent_on", "2026-09-01")
    await choose(page, "f-company_answered-no")
    await applicant.check("request-complaint")
    await next_section(page, "dispute")
    await tab_to(page, page.locator("#f-dispute_category"))
    await pick_by_keyboard(page, page.locator("#f-dispute_category"), "billing")
    # This section with the keyboard alone: Tab to each field, type, Space/Enter.
    await type_into(page, page.locator("#f-description"), "Bolletta di conguaglio errata.")
    await type_into(page, page.locator("#f-claim"), "Rettifica della bolletta.")
    await type_into(page, page.locator("#f-amount"), "120,50")
    await applicant.check("request-dispute")
    await tab_to(page, page.locator("button[name=go][value=next]"))
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/request/meeting**")
    await choose(page, "f-meeting_mode-video")
    await tab_to(page, page.locator("#slot-mon-09\\:00"))
    await page.keyboard.press("Space")
    await expect(page.locator("#slot-mon-09\\:00")).to_be_checked()
    await page.locator("#slot-wed-14\\:00").check()
    await applicant.check("request-meeting")
    await page.click("button[name=go][value=next]")
    await page.wait_for_url("**/request/summary**")
    case_id = re.search(r"/cases/([0-9a-f-]{36})/", page.url)
    assert case_id, page.url
    case = case_id.group(1)
    await applicant.check("summary")

    # 5. The mandatory attachments, then the request is submitted.
    documents = ["complaint", "identity"] + (["delegation"] if filer.delegate else [])
    for category in documents:
        await upload(page, category, f"{category}.pdf", f"Copia ({category})")
    await expect(page.locator("#required-documents .bg-danger")).to_have_count(0)
    await applicant.check("summary-attached")
    await page.click(f"form[action='/cases/{case}/submit'] button[type=submit]")
    await page.wait_for_url(re.compile(rf"/cases/{case}(\?submitted=1)?$"))
    code = await page.locator("h1 .mono").inner_text()
    assert re.fullmatch(r"CONC-2026-\d{6}", code), code
    await expect(page.locator("#case-status")).to_have_text("Inviata")
    await applicant.check("case-submitted")

    # 6. The help desk admits the case, from its pages.
    desk = await window(chromium, env, run, "desk", shots, phone=False)
    await sign_in_by_keyboard(desk, env, "sportello", staff_code=True)
    await desk.page.goto("/cases")
    await desk.check("desk-cases")
    await desk.page.locator(f"a[href='/cases/{case}']").first.click()
    await desk.page.wait_for_url(f"**/cases/{case}")
    await desk.check("desk-case")
    admit = desk.page.locator(f"form[action='/cases/{case}/steps/admit'] button[type=submit]")
    await tab_to(desk.page, admit)
    await desk.page.keyboard.press("Enter")
    await expect(desk.page.locator("#case-status")).to_have_text("Ammessa")
    await desk.check("desk-admitted")

    # 7. The company's representative confirms, by keyboard, and adds a document.
    rep = await window(chromium, env, run, "company", shots, phone=False)
    await sign_in(rep, env, "rep", staff_code=False)
    await rep.page.goto("/cases")
    await rep.check("company-cases")
    await rep.page.locator(f"a[href='/cases/{case}']").first.click()
    await rep.page.wait_for_url(f"**/cases/{case}")
    await rep.check("company-case")
    await tab_to(rep.page, rep.page.locator(f"form[action='/cases/{case}/confirm'] button"))
    await rep.page.keyboard.press("Enter")
    await expect(rep.page.locator(f"form[action='/cases/{case}/confirm']")).to_have_count(0)
    await expect(rep.page.locator("main")).to_contain_text("partecipazione confermata")
    await upload(rep.page, "company_document", "risposta.pdf", "Risposta della società")
    await expect(rep.page.locator("a", has_text="risposta.pdf")).to_be_visible()
    await rep.check("company-document")

    # 8. The scheduler runs the automatic allocation and books it.
    planner = await window(chromium, env, run, "scheduler", shots, phone=False)
    await sign_in(planner, env, "pianificatore", staff_code=True)
    await planner.page.goto("/schedule?week=2026-11-30")
    await expect(planner.page.locator("#queue")).to_contain_text(code)
    await planner.check("schedule")
    propose = planner.page.locator("form[action='/schedule/proposals'] button")
    await tab_to(planner.page, propose)
    await planner.page.keyboard.press("Enter")
    await expect(planner.page.locator("#placed")).to_have_text("1", timeout=60_000)
    await planner.check("proposal")
    await planner.page.click("form[action$='/commit'] button[type=submit]")
    await planner.page.wait_for_url("**/schedule?committed=1")
    await planner.page.goto("/schedule?week=2026-11-30")
    await expect(planner.page.locator("#week")).to_contain_text(code)
    await planner.check("schedule-booked")

    # 9. The invitation, with its calendar file.
    for _ in range(1000):
        invitations = [m for m in mails_to(env, filer.email) if calendar_of(m)]
        if invitations:
            break
        await asyncio.sleep(0.02)
    assert len(invitations) == 1, [str(m["Subject"]) for m in mails_to(env, filer.email)]
    ics = calendar_of(invitations[0])
    assert b"BEGIN:VEVENT" in ics and b"DTSTART" in ics and b"20261130T" in ics, ics
    assert code in text_of(invitations[0])

    # 10. At the slot: the welcome page, the lobby; the conciliator admits (by keyboard).
    clock.set(rome(FIRST, 8, 50))
    # A week has passed: the sessions of the day of filing have expired, they sign in again.
    await page.goto(f"/cases/{case}")
    await expect(page.locator("#f-username")).to_be_visible()
    await sign_in(applicant, env, filer.username, staff_code=False)
    await sign_in(rep, env, "rep", staff_code=False)
    await page.goto(f"/cases/{case}")
    await applicant.check("case-scheduled")
    join = await page.locator("#join").get_attribute("href")
    assert join is not None and join.startswith("/meetings/"), join
    meeting_id = join.split("/")[2]
    await page.click("#join")
    await page.wait_for_url(f"**/meetings/{meeting_id}")
    await expect(page.locator("#check-websocket")).to_contain_text("può collegarsi")
    await applicant.check("welcome")
    await page.click("#enter")
    await expect(page.locator("#lobby-waiting")).to_be_visible()
    await applicant.check("lobby")

    chair = await window(chromium, env, run, "conciliator", shots, phone=False)
    await sign_in(chair, env, "conciliatore1", staff_code=True)
    await chair.page.goto(f"/meetings/{meeting_id}")
    await chair.check("conciliator-welcome")
    await chair.page.click("#enter")
    await expect(chair.page.locator("#inside")).to_be_visible()
    admit_party = chair.page.locator("#participants button[data-action=admit]").first
    await expect(admit_party).to_be_visible()
    await chair.check("conciliator-lobby")
    await tab_to(chair.page, admit_party)
    await chair.page.keyboard.press("Enter")
    await expect(page.locator("#inside")).to_be_visible()

    # The company's representative comes in too.
    await rep.page.goto(f"/meetings/{meeting_id}/room")
    await expect(rep.page.locator("#lobby-waiting")).to_be_visible()
    await chair.page.locator("#participants button[data-action=admit]").first.click()
    await expect(rep.page.locator("#inside")).to_be_visible()

    # Only the filer attends for the applicant: the delegate, when there is one.
    applicant_row = chair.page.locator(".participant", has_text="richiedente")
    await expect(applicant_row).to_have_count(1)
    await expect(applicant_row).to_contain_text(f"{filer.first_name} {filer.last_name}")

    # 11. They chat; the applicant writes with the keyboard alone.
    await type_into(page, page.locator("#say-text"), "Buongiorno, sono pronto.")
    await page.keyboard.press("Enter")
    await expect(chair.page.locator("#messages .message-body").last).to_have_text(
        "Buongiorno, sono pronto."
    )
    await chair.page.fill("#say-text", "Buongiorno a tutti, iniziamo.")
    await chair.page.click("#say-send")
    await expect(page.locator("#messages .message-body").last).to_have_text(
        "Buongiorno a tutti, iniziamo."
    )
    await applicant.check("room-chat")
    await chair.check("conciliator-chat")

    # 12. A separate session with the company; the applicant waits, then all are back.
    await chair.page.click("button[data-separate=company]")
    await expect(page.locator("#session-banner")).to_contain_text("sessione separata")
    await expect(page.locator("#say-send")).to_be_disabled()
    await rep.page.fill("#say-text", "Possiamo rimborsare 100 euro.")
    await rep.page.press("#say-text", "Enter")
    await expect(chair.page.locator("#messages")).to_contain_text("Possiamo rimborsare")
    await applicant.check("room-separate-session")
    await rep.check("company-separate-session")
    await chair.page.click("button[data-separate='']")
    await expect(page.locator("#session-banner")).to_be_hidden()
    assert "Possiamo rimborsare" not in await page.locator("#messages").inner_text()

    # 13. Video with the fake camera and microphone.
    for one in (chair, applicant):
        await one.page.click("#video-start")
    for one in (chair, applicant):
        await expect(one.page.locator("#video-status")).to_have_text("Il video è collegato.")
        await expect(one.page.locator("#own-video")).to_be_visible()
    await remote_video_plays(chair.page)
    await remote_video_plays(page)
    await applicant.check("room-video")
    await chair.check("conciliator-video")

    # 14. The agreement: drafted by the conciliator, accepted with each party's e-mailed code.
    text = "La società rimborsa 100,00 € entro 30 giorni."
    await chair.page.fill("#draft-text", text)
    await chair.page.click("#draft-form button[type=submit]")
    await expect(chair.page.locator("#draft-status")).to_contain_text("versione 1")
    for party, email in ((applicant, filer.email), (rep, "rep@example.org")):
        await expect(party.page.locator("#agreement-text")).to_have_text(text)
        before = len(mails_to(env, email))
        await party.page.click("#send-code")
        await expect(party.page.locator("#send-code-status")).to_contain_text("***")
        mailed = await mail_to(env, email, CODE, after=before)
        found = re.search(CODE, text_of(mailed), re.M)
        assert found is not None
        await party.page.fill("#accept-code", found.group(1))
        await party.page.click("#accept-form button[type=submit]")
        await expect(party.page.locator("#accept-status")).to_contain_text(
            "Hai accettato la versione 1."
        )
        await party.check("agreement-accepted")
    await expect(chair.page.locator(".participant", has_text="accettato")).to_have_count(2)
    chair.page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await chair.page.select_option("#close-outcome", "agreement")
    await chair.page.fill("#close-note", "Accordo raggiunto.")
    closing_after = len(mails_to(env, filer.email))
    await chair.page.click("#close-form button[type=submit]")
    for one in (applicant, rep, chair):
        await expect(one.page.locator("#ended-text")).to_contain_text("Esito: Accordo")
    await applicant.check("room-ended")

    # 15. The minutes in the case file, and the closing e-mail.
    minutes = page.locator("a", has_text=re.compile(r"^verbale-.*\.pdf$"))
    for _ in range(100):
        await page.goto(f"/cases/{case}")
        if await minutes.count():
            break
        await asyncio.sleep(0.2)
    await expect(minutes).to_be_visible()
    await applicant.check("case-file-minutes")
    closing = await mail_to(env, filer.email, "Esito: Accordo", after=closing_after)
    assert code in text_of(closing)
    await asyncio.sleep(0.5)  # any other closing mail would be out by now
    told = {m["To"] for m in env.delivered or [] if "Esito: Accordo" in text_of(m)}
    assert told - {"rep@example.org"} == {filer.email}, told
    if filer.delegate:
        # Only the delegate is written to: the customer has no address in the case at all.
        assert {m["To"] for m in env.delivered or []} <= {
            filer.email,
            "rep@example.org",
            "sportello@example.org",
            "pianificatore@example.org",
            "conciliatore1@example.org",
        }
    for one in (applicant, rep, desk, planner, chair):
        assert one.errors == [], (one.name, one.errors)


async def remote_video_plays(page: Page, frames: int = 10) -> None:
    """The other participant's tile on ``page`` shows video whose frames keep advancing
    (Chromium's fake camera draws a moving pattern)."""
    video = page.locator(".video-tile[data-participant]:not(.video-own) video").first
    await expect(video).to_be_attached()
    first = None
    for _ in range(200):
        width, count = await video.evaluate(
            "v => [v.videoWidth, v.getVideoPlaybackQuality().totalVideoFrames]"
        )
        if width > 0 and first is None:
            first = count
        if first is not None and count >= first + frames:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the other participant's video does not play")


async def next_section(page: Page, section: str) -> None:
    await page.click("button[name=go][value=next]")
    await page.wait_for_url(f"**/request/{section}**")


async def upload(page: Page, category: str, name: str, description: str) -> None:
    form = page.locator("form.upload-form")
    await form.locator("#f-category").select_option(category)
    await form.locator("#f-description").fill(description)
    await form.locator("#f-file").set_input_files(
        {"name": name, "mimeType": "application/pdf", "buffer": PDF}
    )
    await form.locator("button[type=submit]").click()
    await expect(page.locator("a", has_text=name)).to_be_visible()


async def rep_account(env: Env, company_id: str) -> None:
    """The company's representative: registered through the HTTP pages, activated as an
    administrator does."""
    await registered(env, "rep", kind="company_rep", company_id=company_id)
    account = await env.services.accounts.by_username("rep")
    assert account is not None
    await env.services.accounts.do_activate(account.id)
