"""Checks of the identity fields people type: names, codice fiscale, partita IVA, e-mail, phone."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum.exceptions import ValidationError
from stdnum.it import codicefiscale, iva

from core.errors import ErrorCode

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,39}$")
# Letters of any script, spaces, apostrophes, hyphens and dots: "D'Angelo", "Anna-Maria", "Jr."
NAME_RE = re.compile(r"^[^\W\d_]+(?:[ '’.\-][^\W\d_]*)*$")
NAME_MAX = 80


def fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text`` ("Niccolò" -> "niccolo")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def clean(value: object, max_len: int = 200) -> str:
    """A form value as a stripped string, refusing control characters by dropping them."""
    if not isinstance(value, str):
        return ""
    text = unicodedata.normalize("NFC", value).strip()
    return "".join(c for c in text if c in "\t" or unicodedata.category(c)[0] != "C")[: max_len + 1]


def check_name(value: str) -> str | ErrorCode:
    if not value:
        return ErrorCode.REQUIRED
    if len(value) > NAME_MAX:
        return ErrorCode.TOO_LONG
    if not NAME_RE.match(value):
        return ErrorCode.NAME_INVALID
    return value


def check_username(value: str) -> str | ErrorCode:
    if not value:
        return ErrorCode.REQUIRED
    if not USERNAME_RE.match(value):
        return ErrorCode.USERNAME_INVALID
    return value


def username_key(value: str) -> str:
    """The form usernames are compared and stored unique in."""
    return value.casefold()


def check_tax_code(value: str) -> str | ErrorCode:
    """A *codice fiscale* with a correct check character; returned in its compact form."""
    if not value:
        return ErrorCode.REQUIRED
    try:
        return str(codicefiscale.validate(value))
    except ValidationError:
        return ErrorCode.TAX_CODE_INVALID


def check_vat(value: str) -> str | ErrorCode:
    """A *partita IVA* with a correct check digit; returned as 11 digits."""
    if not value:
        return ErrorCode.REQUIRED
    try:
        return str(iva.validate(value))
    except ValidationError:
        return ErrorCode.VAT_INVALID


def check_email(value: str) -> str | ErrorCode:
    """A deliverable-looking address, normalized; no DNS lookup (tests and closed networks)."""
    if not value:
        return ErrorCode.REQUIRED
    if len(value) > 254:
        return ErrorCode.TOO_LONG
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return ErrorCode.EMAIL_INVALID
    return str(result.normalized)


def check_mobile(value: str) -> str | ErrorCode:
    """A mobile number, Italian unless it starts with +; returned in E.164 form."""
    if not value:
        return ErrorCode.REQUIRED
    try:
        number = phonenumbers.parse(value, "IT")
    except phonenumbers.NumberParseException:
        return ErrorCode.MOBILE_INVALID
    if not phonenumbers.is_valid_number(number):
        return ErrorCode.MOBILE_INVALID
    kind = phonenumbers.number_type(number)
    if kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return ErrorCode.MOBILE_INVALID
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
