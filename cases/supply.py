"""The supply a dispute is about: sector and the identifier of the delivery point."""

from __future__ import annotations

import re
from enum import StrEnum

from cases.identity import clean
from core.errors import ErrorCode


class Sector(StrEnum):
    ELECTRICITY = "electricity"
    GAS = "gas"
    DUAL = "dual"  # electricity and gas from the same company
    WATER = "water"


# POD (punto di prelievo, electricity): IT, the distributor's three digits, E, eight or nine digits.
POD_RE = re.compile(r"^IT\d{3}E\d{8,9}$")
# PDR (punto di riconsegna, gas): fourteen digits.
PDR_RE = re.compile(r"^\d{14}$")
# Water: the customer code printed on the bill, whose form each operator chooses.
WATER_RE = re.compile(r"^[A-Z0-9][A-Z0-9/.\-]{2,29}$")


def _compact(value: object) -> str:
    return re.sub(r"[\s]", "", clean(value, 64)).upper()


def check_pod(value: object) -> str | ErrorCode:
    """An electricity POD such as ``IT001E12345678``, in upper case without spaces."""
    text = _compact(value)
    if not text:
        return ErrorCode.REQUIRED
    return text if POD_RE.match(text) else ErrorCode.POD_INVALID


def check_pdr(value: object) -> str | ErrorCode:
    """A gas PDR: fourteen digits."""
    text = _compact(value)
    if not text:
        return ErrorCode.REQUIRED
    return text if PDR_RE.match(text) else ErrorCode.PDR_INVALID


def check_water_code(value: object) -> str | ErrorCode:
    """A water customer code: 3 to 30 letters, digits, dots, slashes or hyphens."""
    text = _compact(value)
    if not text:
        return ErrorCode.REQUIRED
    return text if WATER_RE.match(text) else ErrorCode.WATER_CODE_INVALID


def check_supply_points(
    sector: Sector, pod: object, pdr: object, water: object
) -> dict[str, str | ErrorCode]:
    """The identifiers the sector needs, each checked: a dual-fuel supply needs POD and PDR."""
    needed: dict[str, str | ErrorCode] = {}
    if sector in (Sector.ELECTRICITY, Sector.DUAL):
        needed["pod"] = check_pod(pod)
    if sector in (Sector.GAS, Sector.DUAL):
        needed["pdr"] = check_pdr(pdr)
    if sector == Sector.WATER:
        needed["water_code"] = check_water_code(water)
    return needed
