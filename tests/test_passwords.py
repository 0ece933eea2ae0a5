"""The password policy: each rule its own message; history of three; passphrases; Argon2id."""

from __future__ import annotations

import itertools

import pytest

from cases.passwords import PasswordHasher, check_password, common_passwords
from core.errors import ErrorCode
from tests.support import GOOD_PASSWORD, Env, change_password, link_in, registered, sign_in
from web.messages import MESSAGES

CASES = [
    ("Ab1!xyz", ErrorCode.PASSWORD_TOO_SHORT),
    ("abcdefg1!", ErrorCode.PASSWORD_NO_UPPER),
    ("ABCDEFG1!", ErrorCode.PASSWORD_NO_LOWER),
    ("Abcdefgh!", ErrorCode.PASSWORD_NO_DIGIT),
    ("Abcdefgh1", ErrorCode.PASSWORD_NO_SPECIAL),
    ("Xmario.rossi9!", ErrorCode.PASSWORD_HAS_USERNAME),
    ("Niccolo-Blu-77", ErrorCode.PASSWORD_HAS_FIRST_NAME),
    ("Blu-D'ANGELO-7", ErrorCode.PASSWORD_HAS_LAST_NAME),
    ("P@ssw0rd", ErrorCode.PASSWORD_COMMON),
    ("Password1!", ErrorCode.PASSWORD_COMMON),
]


@pytest.mark.parametrize(("password", "rule"), CASES)
def test_each_rule_has_its_own_code(password: str, rule: ErrorCode) -> None:
    broken = check_password(
        password, username="mario.rossi", first_name="Niccolò", last_name="D'Angelo"
    )
    assert broken == [rule]


def test_each_rule_has_its_own_message() -> None:
    rules = [rule for _, rule in CASES] + [ErrorCode.PASSWORD_REUSED, ErrorCode.PASSWORD_MISMATCH]
    messages = {MESSAGES[rule] for rule in set(rules)}
    assert len(messages) == len(set(rules))


def test_names_are_matched_without_accents_or_case() -> None:
    assert ErrorCode.PASSWORD_HAS_FIRST_NAME in check_password(
        "xxNICCOLÒxx9!", first_name="Niccolo"
    )
    assert ErrorCode.PASSWORD_HAS_LAST_NAME in check_password("x-dangelo-9X", last_name="D'Angelo")


def test_several_rules_broken_at_once() -> None:
    assert check_password("abc") == [
        ErrorCode.PASSWORD_TOO_SHORT,
        ErrorCode.PASSWORD_NO_UPPER,
        ErrorCode.PASSWORD_NO_DIGIT,
        ErrorCode.PASSWORD_NO_SPECIAL,
    ]


def test_common_list_is_large_enough() -> None:
    assert len(common_passwords()) >= 10_000


def test_long_unicode_passphrase_accepted() -> None:
    phrase = "Il mio gatto Ñandú dorme sul divano ♥ dal 2019 e non si sveglia mai più"
    assert len(phrase) >= 64
    assert (
        check_password(phrase, username="mario.rossi", first_name="Mario", last_name="Rossi") == []
    )


async def test_passphrase_not_truncated() -> None:
    hasher = PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1)
    phrase = "Una frase lunga, con spazi e accenti: è più sicura di una parola! 2026 " * 3
    stored = await hasher.hash(phrase)
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, phrase)
    # Differing only after character 150 must still fail.
    assert not await hasher.verify(stored, phrase[:-1] + "?")
    assert not await hasher.verify(stored, phrase[:72])


async def test_register_with_long_passphrase_and_sign_in(env: Env) -> None:
    phrase = "Il mio gatto Ñandú dorme sul divano ♥ dal 2019 e non si sveglia mai più"
    await registered(env, "micio1", password=phrase, password_confirm=phrase)
    browser = env.browser()
    assert (await sign_in(browser, "micio1", phrase[:64])).status == 401
    assert (await sign_in(browser, "micio1", phrase)).status == 303


async def test_history_of_three(env: Env) -> None:
    await registered(env, "storico")
    browser = env.browser()
    assert (await sign_in(browser, "storico", GOOD_PASSWORD)).status == 303
    sequence = [GOOD_PASSWORD, "Secondo-Passo-2", "Terzo-Passo-3", "Quarto-Passo-4"]
    for previous, new in itertools.pairwise(sequence):
        page = await change_password(browser, previous, new)
        assert page.status == 303, page.text
    # The last three (4th, 3rd, 2nd) are refused, each with the history message.
    for old in ("Quarto-Passo-4", "Terzo-Passo-3", "Secondo-Passo-2"):
        page = await change_password(browser, "Quarto-Passo-4", old)
        assert page.status == 422
        assert 'id="e-password"' in page.text
    # The fourth-oldest is accepted again.
    page = await change_password(browser, "Quarto-Passo-4", GOOD_PASSWORD)
    assert page.status == 303


async def test_change_needs_current_password_and_matching_confirmation(env: Env) -> None:
    await registered(env, "cambia")
    browser = env.browser()
    await sign_in(browser, "cambia", GOOD_PASSWORD)
    page = await change_password(browser, "Sbagliata-1!", "Nuova-Chiave-9")
    assert page.status == 422 and 'id="e-current_password"' in page.text
    page = await change_password(browser, GOOD_PASSWORD, "Nuova-Chiave-9", "Nuova-Chiave-8")
    assert page.status == 422 and 'id="e-password_confirm"' in page.text
    # Nothing changed: the old password still works elsewhere.
    assert (await sign_in(await env.new_browser(), "cambia", GOOD_PASSWORD)).status == 303


async def test_change_ends_other_sessions_but_not_this_one(env: Env) -> None:
    await registered(env, "dueposti")
    here, there = env.browser(), await env.new_browser()
    await sign_in(here, "dueposti", GOOD_PASSWORD)
    await sign_in(there, "dueposti", GOOD_PASSWORD)
    page = await change_password(here, GOOD_PASSWORD, "Nuova-Chiave-9")
    assert page.status == 303
    assert (await here.get("/account")).status == 200
    assert (await there.get("/account")).status == 303
    mail = await env.last_mail("dueposti@example.org")
    assert "password" in mail.subject.lower()


async def test_email_change_needs_password_confirmation_and_warns_old_address(env: Env) -> None:
    await registered(env, "trasloco")
    browser = env.browser()
    await sign_in(browser, "trasloco", GOOD_PASSWORD)
    form = {"email": "nuovo@example.org", "mobile": "333 123 4567", "language": "it"}
    page = await browser.submit("/account", form)
    assert page.status == 422 and 'id="e-current_password"' in page.text
    assert await env.mails("nuovo@example.org") == []
    page = await browser.submit("/account", {**form, "current_password": GOOD_PASSWORD})
    assert page.status == 303
    warning = await env.last_mail("trasloco@example.org")
    assert "/recover/password" in warning.body_text
    link = link_in(
        (await env.last_mail("nuovo@example.org", "/account/email/")).body_text, "/account/email/"
    )
    # A password reset in the meantime cancels the pending change.
    await change_password(browser, GOOD_PASSWORD, "Nuova-Chiave-9")
    assert (await browser.get(link)).status == 410
    account = await env.services.accounts.by_username("trasloco")
    assert account is not None and account.email == "trasloco@example.org"


async def test_email_change_confirmed_by_link(env: Env) -> None:
    await registered(env, "trasloco2")
    browser = env.browser()
    await sign_in(browser, "trasloco2", GOOD_PASSWORD)
    form = {
        "email": "nuovo2@example.org",
        "mobile": "333 123 4567",
        "language": "en",
        "current_password": GOOD_PASSWORD,
    }
    assert (await browser.submit("/account", form)).status == 303
    link = link_in(
        (await env.last_mail("nuovo2@example.org", "/account/email/")).body_text, "/account/email/"
    )
    assert (await browser.submit(link, {})).status == 200
    account = await env.services.accounts.by_username("trasloco2")
    assert (
        account is not None and account.email == "nuovo2@example.org" and account.language == "en"
    )
    assert (await browser.get(link)).status == 410
