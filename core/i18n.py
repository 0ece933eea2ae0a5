"""Translations: English message ids, an Italian catalog, Italian by default.

Catalogs are kept as ``.po`` files under ``core/locale`` and compiled in memory at start-up
with Babel, so there is no build step and no binary file in the repository.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Callable
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES: tuple[str, ...] = ("it", "en")
DEFAULT_LANGUAGE = "it"
LANGUAGE_NAMES = {"it": "Italiano", "en": "English"}


def load_catalog(lang: str) -> gettext.NullTranslations:
    """The compiled catalog for ``lang``; English (the message ids) needs none."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if lang == "en" or not po.exists():
        return gettext.NullTranslations()
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


class I18n:
    """All catalogs, loaded once; pick one per request or per mail."""

    def __init__(self) -> None:
        self._catalogs = {lang: load_catalog(lang) for lang in LANGUAGES}

    def pick(self, lang: str | None) -> str:
        return lang if lang in self._catalogs else DEFAULT_LANGUAGE

    def gettext(self, lang: str) -> Callable[[str], str]:
        return self._catalogs[self.pick(lang)].gettext

    def ngettext(self, lang: str) -> Callable[[str, str, int], str]:
        return self._catalogs[self.pick(lang)].ngettext


def negotiate(accept_language: str | None) -> str | None:
    """The first supported language named in an Accept-Language header, if any."""
    if not accept_language:
        return None
    ranked: list[tuple[float, str]] = []
    for part in accept_language.split(","):
        piece = part.strip()
        if not piece:
            continue
        tag, _, params = piece.partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((quality, tag.strip().lower().split("-")[0]))
    for _quality, tag in sorted(ranked, key=lambda item: -item[0]):
        if tag in LANGUAGES:
            return tag
    return None


def N_(message: str) -> str:
    """Mark a string for translation where it is defined; it is translated where it is shown."""
    return message
