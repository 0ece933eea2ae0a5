"""The meeting room in a real browser: the system Chromium, driven by Playwright, against the
application served on a loopback port (its clock at the slot). The customer waits in the
lobby, the conciliator admits it, they chat, the company's representative joins, the agreement
is drafted and accepted by both parties with their e-mailed codes, the conciliator closes with
"agreement", and the sealed minutes appear in the case file. Screenshots of each step go to
``var/screens/``.

Without ``/usr/bin/chromium`` these tests skip, unless ``CONCILIA_REQUIRE_SERVICES=1`` (CI),
where they fail: CI installs the Debian package ``chromium``."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    ViewportSize,
    async_playwright,
    expect,
)
from sqlalchemy import update

from core.clock import FakeClock
from media.room import MediaRooms
from rooms.room import PAGE_MAX
from rooms.seal import verify_minutes
from scheduling.bookings import Meeting
from tests.conftest import serving
from tests.rooms_support import Meet, code_for, minutes_of, said_while_away
from tests.services import unavailable
from tests.support import GOOD_PASSWORD, PDF, Env, code_in
from tests.worlds import FIRST, rome
from web.app import SIGNALING

CHROMIUM = Path("/usr/bin/chromium")
SCREENS = Path(__file__).parents[1] / "var" / "screens"
PHONE: ViewportSize = {"width": 390, "height": 844}  # the customer uses a phone-sized window
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
WAIT_MS = 15_000
VENDOR = "/static/vendor/bootstrap-italia/"


@pytest.fixture
async def env(db_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Env]:
    """The application on a real loopback port."""
    async with serving(db_url, tmp_path, clock) as environment:
        yield environment


@pytest.fixture
def chromium_path() -> Path:
    """The system Chromium; skip without it (fail when services are required, as in CI)."""
    if not CHROMIUM.exists():
        unavailable("Chromium", FileNotFoundError(f"{CHROMIUM} (apt-get install chromium)"))
    return CHROMIUM


@pytest.fixture
async def chromium(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            yield browser
        finally:
            await browser.close()


async def launch(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        # A fake camera and microphone, allowed without asking, for the welcome page's check.
        args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
    )


def base_of(env: Env) -> str:
    return str(env.client.server.make_url("/")).rstrip("/")


class Person:
    """One participant's browser window."""

    def __init__(self, name: str, context: BrowserContext, page: Page) -> None:
        self.name = name
        self.context = context
        self.page = page
        self.shots = 0
        self.errors: list[str] = []  # uncaught errors, and those our own scripts logged
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # The UI kit's bundle sets inline styles that the CSP refuses, on every page: not ours.
        if message.type == "error" and VENDOR not in message.location.get("url", ""):
            self.errors.append(f"{self.page.url}: {message.text}")

    async def shot(self, step: str) -> None:
        SCREENS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        await self.page.screenshot(
            path=str(SCREENS / f"room-{self.name}-{self.shots:02d}-{step}.png"), full_page=True
        )


async def person(
    browser: Browser,
    env: Env,
    name: str,
    username: str,
    *,
    staff: bool = False,
    phone: bool = False,
) -> Person:
    """A new browser window signed in through the sign-in page (staff with the code mailed)."""
    context = await browser.new_context(
        base_url=base_of(env),
        viewport=PHONE if phone else DESKTOP,
        locale="it-IT",
    )
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto("/login")
    await page.fill("#f-username", username)
    await page.fill("#f-password", GOOD_PASSWORD)
    await page.click("form[action='/login'] button[type=submit]")
    if staff:
        await page.wait_for_url("**/login/code**")
        mail = await env.last_mail(f"{username}@example.org")
        await page.fill("#f-code", code_in(mail.body_text))
        await page.click("form[action='/login/code'] button[type=submit]")
    await page.wait_for_url(lambda url: "/login" not in url)
    return Person(name, context, page)


def accept_dialogs(page: Page, said: list[str]) -> None:
    """Confirm every confirmation the page asks for, keeping what it said."""

    async def on_dialog(dialog: Dialog) -> None:
        said.append(dialog.message)
        await dialog.accept()

    page.on("dialog", on_dialog)


async def test_a_meeting_from_the_waiting_room_to_the_sealed_minutes(
    meet: Meet, chromium: Browser
) -> None:
    env = meet.world.env
    ids = await meet.ids()
    room = f"/meetings/{meet.meeting.id}/room"

    # The customer, on a phone, comes in from the welcome page before the conciliator.
    customer = await person(chromium, env, "customer", "cliente", phone=True)
    page = customer.page
    await page.goto(f"/meetings/{meet.meeting.id}")
    await expect(page.locator("#check-websocket")).to_contain_text("può collegarsi")
    await expect(page.locator("#check-secure")).to_contain_text("connessione sicura")
    await customer.shot("welcome")
    await page.click("#enter")
    await page.wait_for_url(f"**{room}")
    await expect(page.locator("#lobby-waiting")).to_contain_text("non è ancora arrivato")
    await expect(page.locator("#inside")).to_be_hidden()
    # The countdown runs on the server's clock (8:46, the slot at 9:00), not the browser's.
    await expect(page.locator("#countdown")).to_have_text(re.compile(r"inizia tra 1[34]:\d\d"))
    await customer.shot("lobby")

    # The conciliator arrives: the room opens, the customer is waiting with a note.
    chair = await person(chromium, env, "conciliator", "conciliatore1", staff=True)
    said: list[str] = []
    accept_dialogs(chair.page, said)
    await chair.page.goto(room)
    await expect(chair.page.locator("#inside")).to_be_visible()
    admit = chair.page.locator(f"button[data-action=admit][data-account='{ids['cliente']}']")
    await expect(admit).to_be_visible()
    await expect(page.locator("#lobby-waiting")).to_contain_text("ti ammetterà a breve")
    await chair.page.fill("#lobby-note-input", "Vi ammetto tra un minuto.")
    await chair.page.click("#lobby-note-form button[type=submit]")
    await expect(page.locator("#lobby-note-text")).to_have_text("Vi ammetto tra un minuto.")
    await chair.shot("lobby-seen-by-conciliator")
    await customer.shot("lobby-note")
    # Admitted with the keyboard.
    await admit.focus()
    await chair.page.keyboard.press("Enter")
    await expect(page.locator("#inside")).to_be_visible()
    await expect(page.locator("#messages")).to_contain_text("è entrato nell'incontro")

    # They chat both ways; what is typed shows as typed, never as markup.
    typed = "<b>html</b> & ciao"
    await page.locator("#say-text").fill(typed)
    await page.locator("#say-text").press("Enter")
    last = chair.page.locator("#messages li.chat-chat .message-body").last
    await expect(last).to_have_text(typed)
    assert await chair.page.locator("#messages b").count() == 0
    await expect(page.locator("#say-text")).to_have_value("")
    await chair.page.fill("#say-text", "Buongiorno, iniziamo.")
    await chair.page.click("#say-send")
    await expect(page.locator("#messages li.chat-chat .message-body").last).to_have_text(
        "Buongiorno, iniziamo."
    )
    # The customer's connection drops; what is said meanwhile arrives once it is back (a new
    # token, then `join` with the last sequence number held).
    await customer.context.set_offline(True)
    await expect(page.locator("#connection")).to_have_text(
        "Connessione persa: nuovo collegamento in corso…"
    )
    await chair.page.fill("#say-text", "Mentre era via.")
    await chair.page.click("#say-send")
    await customer.context.set_offline(False)
    await expect(page.locator("#connection")).to_have_text("Collegato alla stanza.")
    await expect(page.locator("#messages li.chat-chat .message-body").last).to_have_text(
        "Mentre era via."
    )
    assert await page.locator("#messages li.chat-chat").count() == 3  # each message once

    # Usable at 390 px: nothing wider than the screen.
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await customer.shot("chat")
    await chair.shot("chat")

    # The company's representative knocks, is turned away with a message, knocks again and
    # is admitted.
    rep = await person(chromium, env, "company", "rep")
    await rep.page.goto(room)
    await expect(rep.page.locator("#lobby-waiting")).to_be_visible()
    await chair.page.fill(f"#note-{ids['rep']}", "Un momento, la richiamo io.")
    await chair.page.click(f"button[data-action=turn_away][data-account='{ids['rep']}']")
    await expect(rep.page.locator("#lobby-turned-note")).to_have_text("Un momento, la richiamo io.")
    await rep.shot("turned-away")
    await rep.page.click("#ask-again")
    await expect(rep.page.locator("#lobby-waiting")).to_be_visible()
    await chair.page.click(f"button[data-action=admit][data-account='{ids['rep']}']")
    await expect(rep.page.locator("#inside")).to_be_visible()
    # It reads the history from before it came in.
    await expect(rep.page.locator("#messages")).to_contain_text(typed)
    await expect(page.locator("#participants")).to_contain_text("azienda")

    # Muted, the customer cannot write until the conciliator gives the word back.
    await chair.page.click(f"button[data-action=mute][data-account='{ids['cliente']}']")
    await expect(page.locator("#say-error")).to_have_text(
        "Il conciliatore ha disattivato la sua chat."
    )
    await expect(page.locator("#say-send")).to_be_disabled()
    await chair.page.click(f"button[data-action=mute][data-account='{ids['cliente']}']")
    await expect(page.locator("#say-send")).to_be_enabled()

    # Documents: the customer shares one of the case file; the company uploads one and
    # shares it at once.
    complaint = page.locator("#share-select option", has_text="complaint.pdf")
    await page.select_option("#share-select", await complaint.get_attribute("value"))
    await page.click("#share-form button[type=submit]")
    await expect(rep.page.locator("#shared-documents")).to_contain_text("complaint.pdf")
    await rep.page.set_input_files(
        "#upload-file", {"name": "offerta.pdf", "mimeType": "application/pdf", "buffer": PDF}
    )
    await rep.page.select_option("#upload-category", "company_document")
    await rep.page.fill("#upload-description", "Offerta di rimborso")
    await rep.page.click("#upload-form button[type=submit]")
    await expect(rep.page.locator("#upload-status")).to_contain_text("condiviso nella stanza")
    shared = page.locator("#shared-documents a", has_text="offerta.pdf")
    await expect(shared).to_have_attribute("href", re.compile(r"^/documents/[0-9a-f-]{36}$"))
    await expect(page.locator("#messages")).to_contain_text("ha condiviso un documento")
    await rep.shot("document-shared")

    # A separate session with the company: the customer waits, unable to write.
    await chair.page.click("button[data-separate=company]")
    await expect(page.locator("#session-banner")).to_contain_text("sessione separata")
    await expect(page.locator("#say-send")).to_be_disabled()
    await rep.page.fill("#say-text", "Possiamo rimborsare 100 euro.")
    await rep.page.press("#say-text", "Enter")
    await expect(chair.page.locator("#messages")).to_contain_text("Possiamo rimborsare")
    await customer.shot("separate-session")
    await chair.page.click("button[data-separate='']")
    await expect(page.locator("#session-banner")).to_be_hidden()
    await expect(page.locator("#say-send")).to_be_enabled()
    assert "Possiamo rimborsare" not in (await page.locator("#messages").inner_text())

    # The agreement: drafted by the conciliator, accepted by each party with its code.
    text = "La società rimborsa 100,00 € entro 30 giorni.\nNessun altro onere."
    await chair.page.fill("#draft-text", text)
    await chair.page.click("#draft-form button[type=submit]")
    await expect(chair.page.locator("#draft-status")).to_contain_text("versione 1")
    for party, email in ((customer, "cliente@example.org"), (rep, "rep@example.org")):
        await expect(party.page.locator("#agreement-text")).to_have_text(text)
        await expect(party.page.locator("#agreement-heading")).to_contain_text("Versione 1")
        await party.page.click("#send-code")
        await expect(party.page.locator("#send-code-status")).to_contain_text("***")
        await party.shot("code-sent")
        await party.page.fill("#accept-code", await code_for(meet, email))
        await party.page.click("#accept-form button[type=submit]")
        await expect(party.page.locator("#accept-status")).to_contain_text(
            "Hai accettato la versione 1."
        )
    await expect(chair.page.locator("#participants")).to_contain_text("ha accettato la versione 1")
    await expect(chair.page.locator(".participant", has_text="accettato")).to_have_count(2)
    await chair.shot("both-accepted")

    # The conciliator closes with "agreement", after a confirmation.
    await chair.page.select_option("#close-outcome", "agreement")
    await chair.page.fill("#close-note", "Accordo raggiunto.")
    await chair.page.click("#close-form button[type=submit]")
    for one in (customer, rep, chair):
        await expect(one.page.locator("#ended")).to_be_visible()
        await expect(one.page.locator("#ended-text")).to_contain_text("Esito: Accordo")
        await one.shot("ended")
    assert said and "Accordo" in said[-1]

    # The minutes are filed, sealed, and shown in the case file.
    for _ in range(100):
        try:
            document = await minutes_of(meet)
            break
        except AssertionError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("no minutes filed")
    await page.goto(f"/cases/{meet.case_id}")
    link = page.locator(f"a[href='/documents/{document.id}']")
    await expect(link).to_have_text(document.name)
    await customer.shot("case-file-with-minutes")
    content = env.services.storage.path(document.storage_key).read_bytes()
    check = await verify_minutes(content)
    assert check.intact and check.sealed and not check.modified_after_signing
    for one in (customer, rep, chair):
        assert one.errors == [], (one.name, one.errors)


async def test_a_long_absence_brings_back_every_missed_message(
    meet: Meet, chromium: Browser
) -> None:
    """More messages said while the page was offline than one resumed snapshot holds: the
    page pages on with ``history`` and shows every one of them, once, in order."""
    env = meet.world.env
    ids = await meet.ids()
    chair = await person(chromium, env, "conciliator", "conciliatore1", staff=True)
    page = chair.page
    await page.goto(f"/meetings/{meet.meeting.id}/room")
    await expect(page.locator("#inside")).to_be_visible()
    await page.fill("#say-text", "Prima della pausa.")
    await page.click("#say-send")
    chats = page.locator("#messages li.chat-chat")
    await expect(chats).to_have_count(1)
    await chair.context.set_offline(True)
    await expect(page.locator("#connection")).to_have_text(
        "Connessione persa: nuovo collegamento in corso…"
    )
    missed = await said_while_away(meet, ids["conciliatore1"], PAGE_MAX + 120)
    await chair.context.set_offline(False)
    await expect(page.locator("#connection")).to_have_text("Collegato alla stanza.")
    await expect(chats).to_have_count(1 + len(missed), timeout=20000)
    bodies = await page.locator("#messages li.chat-chat .message-body").all_inner_texts()
    assert bodies == ["Prima della pausa."] + [f"mentre eri via {seq}" for seq in missed]
    assert chair.errors == []


async def test_the_countdown_warns_before_the_end_and_the_camera_check_works(
    meet: Meet, chromium: Browser
) -> None:
    env = meet.world.env
    async with env.services.db.session() as session:
        await session.execute(
            update(Meeting).where(Meeting.id == meet.meeting.id).values(mode="video")
        )
        await session.commit()
    env.clock.set(rome(FIRST, 10, 21))  # nine minutes before the slot ends at 10:30
    chair = await person(chromium, env, "late", "conciliatore1", staff=True)
    page = chair.page
    await page.goto(f"/meetings/{meet.meeting.id}")
    await page.click("#check-media")
    await expect(page.locator("#media-result")).to_contain_text("funzionano")
    await expect(page.locator("#media-preview")).to_be_visible()
    await chair.shot("camera-check")
    await page.click("#stop-media")
    await expect(page.locator("#media-preview")).to_be_hidden()
    await page.click("#enter")
    await expect(page.locator("#inside")).to_be_visible()
    await expect(page.locator("#countdown")).to_have_text(
        re.compile(r"Tempo rimasto nella fascia: [89]:\d\d")
    )
    await expect(page.locator("#time-warning")).to_contain_text("Restano 10 minuti")
    await expect(page.locator("#time-warning")).to_contain_text("Nessuno verrà disconnesso")
    await chair.shot("ten-minutes-left")
    # A warning, not a cut: the room goes on.
    await page.fill("#say-text", "Ancora qualche minuto.")
    await page.click("#say-send")
    await expect(page.locator("#messages .message-body").last).to_have_text(
        "Ancora qualche minuto."
    )
    assert chair.errors == []


# ICE and DTLS on a busy machine can take longer than expect()'s default five seconds.
CONNECTING_MS = 20_000


async def video_meeting(meet: Meet) -> None:
    async with meet.world.env.services.db.session() as session:
        await session.execute(
            update(Meeting).where(Meeting.id == meet.meeting.id).values(mode="video")
        )
        await session.commit()


async def playing(page: Page, account: uuid.UUID, *, frames: int = 10) -> None:
    """The tile of ``account`` on ``page`` shows video: a picture of some size whose frames
    keep advancing (Chromium's fake camera draws a moving pattern)."""
    tile = page.locator(f".video-tile[data-participant='{account}'] video")
    await expect(tile).to_be_attached()

    async def decoded() -> tuple[int, int]:
        found = await tile.evaluate(
            "v => [v.videoWidth, v.getVideoPlaybackQuality().totalVideoFrames]"
        )
        return int(found[0]), int(found[1])

    first = None
    for _ in range(150):
        width, count = await decoded()
        if width > 0 and first is None:
            first = count
        if first is not None and count >= first + frames:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no video of {account} playing: {await decoded()}")


async def test_two_participants_see_each_other_on_video(meet: Meet, chromium: Browser) -> None:
    env = meet.world.env
    await video_meeting(meet)
    ids = await meet.ids()
    room = f"/meetings/{meet.meeting.id}/room"
    media = env.client.app[SIGNALING].media if env.client.app is not None else None
    assert media is not None and media.live_peer_connections == 0

    chair = await person(chromium, env, "video-conciliator", "conciliatore1", staff=True)
    await chair.page.goto(room)
    customer = await person(chromium, env, "video-customer", "cliente", phone=True)
    page = customer.page
    await page.goto(room)
    await chair.page.click(f"button[data-action=admit][data-account='{ids['cliente']}']")
    await expect(page.locator("#video")).to_be_visible()
    await expect(page.locator("#video-status")).to_contain_text("Il video è spento")

    # Each turns the camera on, and sees the other.
    for one in (chair, customer):
        await one.page.click("#video-start")
    for one in (chair, customer):
        await expect(one.page.locator("#video-status")).to_have_text(
            "Il video è collegato.", timeout=CONNECTING_MS
        )
        await expect(one.page.locator("#own-video")).to_be_visible()
    await playing(chair.page, ids["cliente"])
    await playing(page, ids["conciliatore1"])
    assert media.live_peer_connections == 2
    await chair.shot("video")
    await customer.shot("video")
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    # The conciliator cuts the customer's microphone: both see it, and can give it back.
    cut = chair.page.locator(f"button[data-action=media_mute][data-account='{ids['cliente']}']")
    await cut.click()
    customer_tile = chair.page.locator(f".video-tile[data-participant='{ids['cliente']}']")
    await expect(customer_tile.locator("figcaption")).to_contain_text(
        "microfono disattivato dal conciliatore"
    )
    await expect(page.locator("#participants")).to_contain_text(
        "microfono disattivato dal conciliatore"
    )
    await expect(cut).to_have_text("Riattiva il microfono")
    await cut.click()
    await expect(customer_tile.locator("figcaption")).not_to_contain_text("disattivato")

    # The customer's connection breaks (as on a network change): the page says so, keeps the
    # chat, and negotiates a new one by itself; the server closed the old one.
    hosted = media.get(str(meet.meeting.id))
    assert hosted is not None
    broken = hosted.peer(str(ids["cliente"]))
    assert broken is not None
    await broken.pc.close()
    await expect(page.locator("#video-error-text")).to_contain_text("Sei ancora nell'incontro")
    await expect(page.locator("#say-send")).to_be_enabled()
    await expect(page.locator("#video-status")).to_have_text(
        "Il video è collegato.", timeout=CONNECTING_MS
    )
    assert hosted.peer(str(ids["cliente"])) not in (None, broken)
    await playing(chair.page, ids["cliente"])
    await playing(page, ids["conciliatore1"])
    assert media.live_peer_connections == 2

    # The customer turns the camera off (the conciliator's tile says so), then on again.
    await page.click("#toggle-camera")
    await expect(page.locator("#toggle-camera")).to_have_text("Accendi la videocamera")
    await expect(customer_tile).to_have_class(re.compile("video-off"))
    await expect(customer_tile.locator("figcaption")).to_contain_text("niente video")
    await page.click("#toggle-camera")
    await expect(customer_tile).not_to_have_class(re.compile("video-off"))
    await playing(chair.page, ids["cliente"])

    # Leaving the video keeps the customer in the meeting, by chat.
    await page.click("#video-stop")
    await expect(customer_tile).to_have_count(0)
    await expect(chair.page.locator("#video-absent")).to_contain_text("solo nella chat")
    await expect(page.locator("#video-start")).to_be_visible()
    await page.fill("#say-text", "Continuo in chat.")
    await page.press("#say-text", "Enter")
    await expect(chair.page.locator("#messages .message-body").last).to_have_text(
        "Continuo in chat."
    )
    await peers_down_to(media, 1)
    # The conciliator's window closes: its connection to the room, then its media, end.
    await chair.context.close()
    await peers_down_to(media, 0)
    for one in (chair, customer):
        assert one.errors == [], (one.name, one.errors)


async def peers_down_to(media: MediaRooms, count: int) -> None:
    for _ in range(100):
        if media.live_peer_connections == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{media.live_peer_connections} peer connections, not {count}")
