"""Italian by default, English on request; every message has its Italian translation."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from core.i18n import LOCALE_DIR, negotiate
from tests.support import Env, register

ROOT = Path(__file__).parents[1]
METHODS = [
    ("cases/**.py", "python"),
    ("web/**.py", "python"),
    ("core/**.py", "python"),
    ("rooms/**.py", "python"),
    ("web/templates/**.html", "jinja2"),
    ("cases/mail/**.txt", "jinja2"),
]


def test_every_message_is_translated_to_italian() -> None:
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    used: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), METHODS, keywords=keywords
    ):
        used.add(message if isinstance(message, str) else message[0])
    with (LOCALE_DIR / "it" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="it")
    missing = sorted(m for m in used if not getattr(catalog.get(m), "string", None))
    assert missing == [], f"untranslated (run `make messages` and translate): {missing}"
    assert len(used) > 200


def test_accept_language_negotiation() -> None:
    assert negotiate("en-GB,en;q=0.9,it;q=0.8") == "en"
    assert negotiate("de-DE,it;q=0.5") == "it"
    assert negotiate("fr") is None
    assert negotiate(None) is None


async def test_italian_by_default_and_english_switch(env: Env) -> None:
    browser = env.browser()
    page = await browser.get("/login")
    assert '<html lang="it">' in page.text and "Accedi" in page.text
    page = await browser.get("/lang/en?next=/login")
    assert page.status == 303 and page.headers["Location"] == "/login"
    page = await browser.get("/login")
    assert '<html lang="en">' in page.text and "Sign in" in page.text
    # Every page offers the switch back.
    assert 'href="/lang/it?next=' in page.text


async def test_browser_language_is_honoured(env: Env) -> None:
    page = await env.browser().get("/", headers={"Accept-Language": "en-US,en;q=0.8"})
    assert '<html lang="en">' in page.text


async def test_mails_in_the_language_chosen_at_registration(env: Env) -> None:
    await register(env, env.browser(), "inglese", language="en")
    await register(env, await env.new_browser(), "italiano", language="it")
    english = await env.last_mail("inglese@example.org")
    italian = await env.last_mail("italiano@example.org")
    assert english.subject == "Confirm your e-mail address"
    assert italian.subject != english.subject and "indirizzo" in italian.subject.lower()
