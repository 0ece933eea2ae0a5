"""The conciliation request (domanda): its sections, their checks, what it must have attached.

A draft keeps what the person typed, section by section, even while something is wrong, so
nothing is lost between visits; each section is checked when saved and again, all together,
at submission. Pure functions only: no database, no clock of their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from cases.accounts import Role
from cases.admissibility import check_complaint
from cases.documents import Category
from cases.identity import check_email, check_name, check_tax_code, check_vat, clean
from cases.supply import Sector, check_supply_points
from core.errors import ErrorCode

Answers = dict[str, str | list[str]]


class CustomerKind(StrEnum):
    PERSON = "person"
    LEGAL_ENTITY = "legal_entity"


class ActingAs(StrEnum):
    SELF = "self"  # the customer in person (or staff entering a postal request for them)
    DELEGATE = "delegate"
    LEGAL_REPRESENTATIVE = "legal_representative"


class DisputeCategory(StrEnum):
    BILLING = "billing"
    METERING = "metering"
    CONTRACT = "contract"
    CONNECTION = "connection"
    SUPPLY_QUALITY = "supply_quality"
    SWITCHING = "switching"
    COMPENSATION = "compensation"
    OTHER = "other"


class MeetingMode(StrEnum):
    CHAT = "chat"
    VIDEO = "video"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
SLOT_TIMES = ("09:00", "10:30", "12:00", "14:00", "15:30", "17:00")
ALL_SLOTS = tuple(f"{d}-{t}" for d in WEEKDAYS for t in SLOT_TIMES)


class Section(StrEnum):
    APPLICANT = "applicant"
    SUPPLY = "supply"
    COMPANY = "company"
    COMPLAINT = "complaint"
    DISPUTE = "dispute"
    MEETING = "meeting"


SECTIONS = tuple(Section)

# The fields of each section; anything else sent is ignored. Lists are marked.
FIELDS: dict[Section, tuple[str, ...]] = {
    Section.APPLICANT: (
        "customer_kind",
        "acting_as",
        "customer_first_name",
        "customer_last_name",
        "customer_tax_code",
        "customer_email",
        "customer_language",
        "entity_name",
        "entity_vat",
        "mandate_to_settle",
    ),
    Section.SUPPLY: ("sector", "pod", "pdr", "water_code", "address", "postcode", "city"),
    Section.COMPANY: ("company_id",),
    Section.COMPLAINT: ("complaint_sent_on", "company_answered", "company_answered_on"),
    Section.DISPUTE: ("dispute_category", "description", "claim", "amount"),
    Section.MEETING: ("meeting_mode", "availability", "notes"),
}
LIST_FIELDS = frozenset({"availability"})
RAW_MAX = 5000  # what a draft keeps of any one field, whatever is sent
DESCRIPTION_MAX = 4000
CLAIM_MAX = 2000
NOTES_MAX = 1000
ADDRESS_MAX = 200
AMOUNT_MAX = Decimal("10000000")
POSTCODE_RE = re.compile(r"^\d{5}$")


@dataclass(frozen=True)
class Filer:
    """Who fills in the form, as far as the rules care."""

    role: Role
    first_name: str = ""
    last_name: str = ""
    tax_code: str = ""
    email: str = ""
    language: str = "it"

    @property
    def staff(self) -> bool:
        return self.role in (Role.HELPDESK, Role.ADMIN)


@dataclass(frozen=True)
class CompanyChoice:
    id: str
    sectors: tuple[str, ...]


@dataclass
class Checked:
    """A section's (or the whole request's) clean values and the errors per field."""

    values: dict[str, object] = field(default_factory=dict)
    errors: dict[str, list[ErrorCode]] = field(default_factory=dict)
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # for messages with values

    def fail(self, name: str, code: ErrorCode) -> None:
        self.errors.setdefault(name, []).append(code)

    @property
    def ok(self) -> bool:
        return not self.errors


def take(section: Section, sent: Mapping[str, object]) -> Answers:
    """The section's fields out of what was sent, as strings (lists for list fields), bounded."""
    kept: Answers = {}
    for name in FIELDS[section]:
        value = sent.get(name)
        if name in LIST_FIELDS:
            items = value if isinstance(value, list) else [] if value is None else [value]
            kept[name] = [str(v)[:16] for v in items if isinstance(v, str)][: len(ALL_SLOTS)]
        else:
            kept[name] = value[:RAW_MAX] if isinstance(value, str) else ""
    return kept


def _text(answers: Mapping[str, object], name: str) -> str:
    value = answers.get(name)
    return value.strip() if isinstance(value, str) else ""


def _choice(out: Checked, answers: Mapping[str, object], name: str, kind: type[StrEnum]) -> str:
    value = _text(answers, name)
    if not value:
        out.fail(name, ErrorCode.REQUIRED)
        return ""
    if value not in {m.value for m in kind}:
        out.fail(name, ErrorCode.INVALID_CHOICE)
        return ""
    out.values[name] = value
    return value


def _date(out: Checked, answers: Mapping[str, object], name: str) -> date | None:
    value = _text(answers, name)
    if not value:
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        out.fail(name, ErrorCode.DATE_INVALID)
        return None
    out.values[name] = parsed.isoformat()
    return parsed


def _bounded(out: Checked, answers: Mapping[str, object], name: str, limit: int) -> str:
    value = clean(answers.get(name), RAW_MAX)
    if len(value) > limit:
        out.fail(name, ErrorCode.TOO_LONG)
    out.values[name] = value
    return value


def check_applicant(answers: Mapping[str, object], filer: Filer) -> Checked:
    out = Checked()
    kind = _choice(out, answers, "customer_kind", CustomerKind)
    acting = _choice(out, answers, "acting_as", ActingAs)
    if filer.role == Role.DELEGATE and acting and acting != ActingAs.DELEGATE:
        out.fail("acting_as", ErrorCode.ACTING_AS_NOT_ALLOWED)
    if filer.role == Role.CUSTOMER and acting == ActingAs.DELEGATE:
        out.fail("acting_as", ErrorCode.ACTING_AS_NOT_ALLOWED)
    if filer.staff and acting and acting != ActingAs.SELF:
        out.fail("acting_as", ErrorCode.ACTING_AS_NOT_ALLOWED)
    if filer.staff and kind == CustomerKind.LEGAL_ENTITY:
        # By post or e-mail only private customers may file; legal entities use the portal.
        out.fail("customer_kind", ErrorCode.POSTAL_ONLY_PRIVATE)
    if acting == ActingAs.LEGAL_REPRESENTATIVE and kind == CustomerKind.PERSON:
        out.fail("acting_as", ErrorCode.LEGAL_REP_NEEDS_ENTITY)
    if acting == ActingAs.SELF and kind == CustomerKind.LEGAL_ENTITY:
        out.fail("acting_as", ErrorCode.LEGAL_REP_NEEDS_ENTITY)
    # The customer in person is the account itself; otherwise the form names the customer.
    names_customer = kind == CustomerKind.PERSON and (acting == ActingAs.DELEGATE or filer.staff)
    if names_customer:
        for name in ("customer_first_name", "customer_last_name"):
            result = check_name(_text(answers, name))
            if isinstance(result, ErrorCode):
                out.fail(name, result)
            else:
                out.values[name] = result
        tax = check_tax_code(_text(answers, "customer_tax_code"))
        if isinstance(tax, ErrorCode):
            out.fail("customer_tax_code", tax)
        else:
            out.values["customer_tax_code"] = tax
    elif kind == CustomerKind.PERSON and acting == ActingAs.SELF:
        out.values.update(
            customer_first_name=filer.first_name,
            customer_last_name=filer.last_name,
            customer_tax_code=filer.tax_code,
        )
    if filer.staff:
        # Alerts for a customer without an account go to the address the request gave.
        email = check_email(_text(answers, "customer_email"))
        if isinstance(email, ErrorCode):
            out.fail("customer_email", email)
        else:
            out.values["customer_email"] = email
        language = _text(answers, "customer_language") or "it"
        if language not in ("it", "en"):
            out.fail("customer_language", ErrorCode.INVALID_CHOICE)
        out.values["customer_language"] = language
    if kind == CustomerKind.LEGAL_ENTITY:
        entity = clean(answers.get("entity_name"), 200)
        if not entity:
            out.fail("entity_name", ErrorCode.REQUIRED)
        out.values["entity_name"] = entity
        vat = check_vat(_text(answers, "entity_vat"))
        if isinstance(vat, ErrorCode):
            out.fail("entity_vat", vat)
        else:
            out.values["entity_vat"] = vat
    if acting == ActingAs.DELEGATE:
        if _text(answers, "mandate_to_settle") not in ("on", "yes", "true", "1"):
            out.fail("mandate_to_settle", ErrorCode.MANDATE_MUST_SETTLE)
        out.values["mandate_to_settle"] = "yes"
    return out


def check_supply(answers: Mapping[str, object]) -> Checked:
    out = Checked()
    sector = _choice(out, answers, "sector", Sector)
    if sector:
        for name, result in check_supply_points(
            Sector(sector), answers.get("pod"), answers.get("pdr"), answers.get("water_code")
        ).items():
            if isinstance(result, ErrorCode):
                out.fail(name, result)
            else:
                out.values[name] = result
    for name in ("address", "city"):
        value = _bounded(out, answers, name, ADDRESS_MAX)
        if not value:
            out.fail(name, ErrorCode.REQUIRED)
    postcode = _text(answers, "postcode")
    if not postcode:
        out.fail("postcode", ErrorCode.REQUIRED)
    elif not POSTCODE_RE.match(postcode):
        out.fail("postcode", ErrorCode.POSTCODE_INVALID)
    else:
        out.values["postcode"] = postcode
    return out


def check_company(
    answers: Mapping[str, object], companies: Mapping[str, CompanyChoice], sector: str
) -> Checked:
    out = Checked()
    chosen = _text(answers, "company_id")
    if not chosen:
        out.fail("company_id", ErrorCode.REQUIRED)
        return out
    company = companies.get(chosen)
    if company is None:
        out.fail("company_id", ErrorCode.INVALID_CHOICE)
        return out
    needed = {"electricity", "gas"} if sector == Sector.DUAL else {sector} if sector else set()
    if not needed <= set(company.sectors):
        out.fail("company_id", ErrorCode.COMPANY_NOT_IN_SECTOR)
    out.values["company_id"] = company.id
    return out


def check_complaint_section(
    answers: Mapping[str, object], today: date, wait_days: int
) -> tuple[Checked, date | None]:
    """The prior complaint; also the day the request becomes admissible when it is too early."""
    out = Checked()
    sent = _date(out, answers, "complaint_sent_on")
    answered = _text(answers, "company_answered")
    if answered not in ("yes", "no"):
        out.fail(
            "company_answered", ErrorCode.REQUIRED if not answered else ErrorCode.INVALID_CHOICE
        )
    out.values["company_answered"] = answered
    answered_on = _date(out, answers, "company_answered_on") if answered == "yes" else None
    if answered == "yes" and answered_on is None and "company_answered_on" not in out.errors:
        out.fail("company_answered_on", ErrorCode.REQUIRED)
    if out.errors.get("complaint_sent_on") or out.errors.get("company_answered_on"):
        return out, None
    verdict = check_complaint(sent, answered_on, today, wait_days=wait_days)
    if not verdict.admissible and verdict.reason is not None:
        target = (
            "company_answered_on"
            if verdict.reason in (ErrorCode.ANSWER_BEFORE_COMPLAINT, ErrorCode.ANSWER_IN_FUTURE)
            else "complaint_sent_on"
        )
        out.fail(target, verdict.reason)
        if verdict.admissible_from is not None:
            out.params[target] = {"date": verdict.admissible_from.isoformat()}
    return out, verdict.admissible_from


def parse_amount(value: str) -> Decimal | ErrorCode:
    """Euros as people write them: ``1234.5``, ``1.234,50``, ``€ 80``."""
    text = value.replace("€", "").replace(" ", "").strip()
    if "," in text:
        text = text.replace(".", "").replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return ErrorCode.AMOUNT_INVALID
    if not amount.is_finite() or amount < 0 or amount > AMOUNT_MAX:
        return ErrorCode.AMOUNT_INVALID
    return amount.quantize(Decimal("0.01"))


def check_dispute(answers: Mapping[str, object]) -> Checked:
    out = Checked()
    _choice(out, answers, "dispute_category", DisputeCategory)
    for name, limit in (("description", DESCRIPTION_MAX), ("claim", CLAIM_MAX)):
        if not _bounded(out, answers, name, limit):
            out.fail(name, ErrorCode.REQUIRED)
    amount = _text(answers, "amount")
    if amount:
        parsed = parse_amount(amount)
        if isinstance(parsed, ErrorCode):
            out.fail("amount", parsed)
        else:
            out.values["amount"] = str(parsed)
    return out


def check_meeting(answers: Mapping[str, object]) -> Checked:
    out = Checked()
    _choice(out, answers, "meeting_mode", MeetingMode)
    raw = answers.get("availability")
    chosen = [v for v in raw if isinstance(v, str)] if isinstance(raw, list) else []
    if any(v not in ALL_SLOTS for v in chosen):
        out.fail("availability", ErrorCode.INVALID_CHOICE)
    slots = [s for s in ALL_SLOTS if s in chosen]
    notes = _bounded(out, answers, "notes", NOTES_MAX)
    if not slots and not notes:
        out.fail("availability", ErrorCode.AVAILABILITY_REQUIRED)
    out.values["availability"] = slots
    return out


@dataclass(frozen=True)
class Context:
    """What checking a request needs beyond the answers."""

    filer: Filer
    companies: Mapping[str, CompanyChoice]
    today: date
    complaint_wait_days: int = 40


def check_section(section: Section, answers: Mapping[str, object], context: Context) -> Checked:
    """One section, given all the answers so far (the company depends on the sector)."""
    if section == Section.APPLICANT:
        return check_applicant(answers, context.filer)
    if section == Section.SUPPLY:
        return check_supply(answers)
    if section == Section.COMPANY:
        return check_company(answers, context.companies, _text(answers, "sector"))
    if section == Section.COMPLAINT:
        return check_complaint_section(answers, context.today, context.complaint_wait_days)[0]
    if section == Section.DISPUTE:
        return check_dispute(answers)
    return check_meeting(answers)


def check_request(answers: Mapping[str, object], context: Context) -> dict[Section, Checked]:
    return {s: check_section(s, answers, context) for s in SECTIONS}


def required_documents(answers: Mapping[str, object]) -> list[Category]:
    """The attachments the answers make mandatory, in the order the summary lists them."""
    needed = [Category.COMPLAINT]
    if _text(answers, "company_answered") == "yes":
        needed.append(Category.COMPANY_ANSWER)
    needed.append(Category.IDENTITY)
    acting = _text(answers, "acting_as")
    if acting == ActingAs.DELEGATE:
        needed.append(Category.DELEGATION)
    if (
        acting == ActingAs.LEGAL_REPRESENTATIVE
        or _text(answers, "customer_kind") == CustomerKind.LEGAL_ENTITY
    ):
        needed.append(Category.CHAMBER_CERTIFICATE)
    return needed


def customer_key(answers: Mapping[str, object]) -> str:
    """Who the customer is, for telling whether a dispute was filed before."""
    if _text(answers, "customer_kind") == CustomerKind.LEGAL_ENTITY:
        return "VAT:" + _text(answers, "entity_vat")
    return "CF:" + _text(answers, "customer_tax_code").upper()


def supply_point(answers: Mapping[str, object]) -> str:
    parts = [_text(answers, n).replace(" ", "").upper() for n in ("pod", "pdr", "water_code")]
    return "+".join(p for p in parts if p)


def customer_name(answers: Mapping[str, object]) -> str:
    if _text(answers, "customer_kind") == CustomerKind.LEGAL_ENTITY:
        return _text(answers, "entity_name")
    return f"{_text(answers, 'customer_first_name')} {_text(answers, 'customer_last_name')}".strip()
