"""The minutes (*verbale*) of a conciliation meeting, laid out as an A4 PDF.

The room fills the plain dataclasses below when a meeting ends; ``render_minutes`` turns them
into a PDF in the case's language (times in Rome's time), and ``rooms.seal`` seals it. Every
value that people typed — names, the agreement text — is rendered as text: it is escaped before
it reaches ReportLab's paragraph parser, so markup in it shows literally.

The font is DejaVu Sans from the Debian package ``fonts-dejavu-core`` (Latin with every accent,
Greek, Cyrillic, €, typographic quotes), embedded as a subset in each file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from xml.sax.saxutils import escape

from babel.dates import format_date
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    HRFlowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from cases.request import MeetingMode
from cases.supply import Sector
from core.clock import ROME
from core.i18n import N_, I18n

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian package fonts-dejavu-core
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
BABEL_LOCALE = {"it": "it_IT", "en": "en_GB"}
MARGIN = 20 * mm

# C0 controls other than tab and newline, DEL and C1 controls: a PDF shows nothing sensible
# for them and ReportLab's parser rejects some, so typed text loses them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")


class Party(StrEnum):
    """In which capacity someone took part in the meeting."""

    CUSTOMER = "customer"
    DELEGATE = "delegate"
    COMPANY = "company"
    CONCILIATOR = "conciliator"


class SessionKind(StrEnum):
    JOINT = "joint"  # the conciliator with both parties
    SEPARATE = "separate"  # the conciliator with one party


class Outcome(StrEnum):
    AGREEMENT = "agreement"
    NO_AGREEMENT = "no_agreement"
    ADJOURNED = "adjourned"
    APPLICANT_ABSENT = "applicant_absent"
    COMPANY_ABSENT = "company_absent"


PARTY = {
    Party.CUSTOMER: N_("Customer"),
    Party.DELEGATE: N_("Delegate"),
    Party.COMPANY: N_("Company representative"),
    Party.CONCILIATOR: N_("Conciliator"),
}
SESSION = {SessionKind.JOINT: N_("Joint session"), SessionKind.SEPARATE: N_("Separate session")}
OUTCOME = {
    Outcome.AGREEMENT: N_("Agreement reached"),
    Outcome.NO_AGREEMENT: N_("No agreement"),
    Outcome.ADJOURNED: N_("Adjourned to another meeting"),
    Outcome.APPLICANT_ABSENT: N_("The applicant did not attend"),
    Outcome.COMPANY_ABSENT: N_("The company did not attend"),
}
# The same message ids as the pages' labels (web/labels.py), which this package may not import.
SECTOR = {
    Sector.ELECTRICITY: N_("Electricity"),
    Sector.GAS: N_("Gas"),
    Sector.DUAL: N_("Dual fuel (electricity and gas)"),
    Sector.WATER: N_("Water"),
}
MODE = {MeetingMode.CHAT: N_("Chat room"), MeetingMode.VIDEO: N_("Video meeting")}


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True)
class Attendance:
    """One stay in the room: a person who rejoined has one row per stay."""

    name: str
    party: Party
    joined_at: datetime
    left_at: datetime | None = None  # None: still there when the meeting ended

    def __post_init__(self) -> None:
        _aware("joined_at", self.joined_at)
        _aware("left_at", self.left_at)


@dataclass(frozen=True)
class SessionSpan:
    """A joint or separate session: who was in it, from when to when."""

    kind: SessionKind
    started_at: datetime
    ended_at: datetime | None
    participants: tuple[str, ...]

    def __post_init__(self) -> None:
        _aware("started_at", self.started_at)
        _aware("ended_at", self.ended_at)


@dataclass(frozen=True)
class Acceptance:
    """A party's acceptance of the agreement, confirmed by a one-time code sent by e-mail.

    ``email`` is the address the code went to; the minutes show it masked (``mask_email``).
    """

    name: str
    party: Party
    accepted_at: datetime
    email: str

    def __post_init__(self) -> None:
        _aware("accepted_at", self.accepted_at)


@dataclass(frozen=True)
class MinutesData:
    """Everything the minutes say. Times are timezone-aware (UTC in the database)."""

    case_code: str
    language: str  # "it" or "en": the case's language
    sector: Sector
    customer: str
    company: str
    conciliator: str
    slot_start: datetime
    slot_end: datetime
    mode: MeetingMode
    outcome: Outcome
    generated_at: datetime
    delegate: str | None = None
    attendance: tuple[Attendance, ...] = ()
    sessions: tuple[SessionSpan, ...] = ()
    proposal_requested_at: datetime | None = None  # when both parties had asked for one
    agreement_text: str = ""
    acceptances: tuple[Acceptance, ...] = ()

    def __post_init__(self) -> None:
        for name in ("slot_start", "slot_end", "generated_at", "proposal_requested_at"):
            _aware(name, getattr(self, name))


def mask_email(address: str) -> str:
    """The address with its local part hidden but its first character: ``m***@example.org``."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return "***"
    return f"{local[0]}***@{domain}"


def plain(text: str) -> str:
    """Typed text made safe for a ReportLab paragraph: controls dropped, markup escaped."""
    return escape(_CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


def paragraphs(text: str) -> list[str]:
    """Typed text as paragraph markup: blank lines part paragraphs, single newlines break lines."""
    cleaned = plain(text).strip()
    if not cleaned:
        return []
    return [
        "<br/>".join(line.strip() for line in block.split("\n"))
        for block in _BLANK_LINES.split(cleaned)
    ]


def ensure_fonts() -> None:
    """Register the DejaVu fonts with ReportLab once per process."""
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    regular, bold = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
    for path in (regular, bold):
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: install the Debian package fonts-dejavu-core")
    pdfmetrics.registerFont(TTFont(FONT, str(regular)))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(bold)))
    pdfmetrics.registerFontFamily(
        FONT, normal=FONT, bold=FONT_BOLD, italic=FONT, boldItalic=FONT_BOLD
    )


def _styles() -> dict[str, ParagraphStyle]:
    body = ParagraphStyle("body", fontName=FONT, fontSize=10, leading=14, spaceAfter=6)
    return {
        "body": body,
        "title": ParagraphStyle(
            "title", parent=body, fontName=FONT_BOLD, fontSize=16, leading=20, spaceAfter=2
        ),
        "subtitle": ParagraphStyle("subtitle", parent=body, fontSize=12, leading=16),
        "heading": ParagraphStyle(
            "heading",
            parent=body,
            fontName=FONT_BOLD,
            fontSize=12,
            leading=16,
            spaceBefore=10,
            spaceAfter=6,
            keepWithNext=1,
        ),
        "outcome": ParagraphStyle("outcome", parent=body, fontName=FONT_BOLD, fontSize=11),
        "cell": ParagraphStyle("cell", parent=body, fontSize=9, leading=12, spaceAfter=0),
        "head": ParagraphStyle(
            "head", parent=body, fontName=FONT_BOLD, fontSize=9, leading=12, spaceAfter=0
        ),
        "note": ParagraphStyle(
            "note", parent=body, fontSize=8.5, leading=11, textColor=colors.dimgrey
        ),
        "closing": ParagraphStyle("closing", parent=body, fontSize=9, alignment=TA_CENTER),
    }


class _Writer:
    """The minutes' words in one language: translated labels, Rome dates and times."""

    def __init__(self, data: MinutesData, gettext: Callable[[str], str]) -> None:
        self.data = data
        self._ = gettext
        self.locale = BABEL_LOCALE.get(data.language, BABEL_LOCALE["it"])
        self.day = data.slot_start.astimezone(ROME).date()
        self.style = _styles()

    def date(self, when: date, format: str = "long") -> str:
        return format_date(when, format, locale=self.locale)

    def clock(self, when: datetime | None, seconds: bool = False) -> str:
        """A time of the meeting's day as ``09:05``; another day's with its date."""
        if when is None:
            return "—"
        local = when.astimezone(ROME)
        text = local.strftime("%H:%M:%S" if seconds else "%H:%M")
        if local.date() != self.day:
            return f"{self.date(local.date(), 'short')} {text}"
        return text

    def para(self, text: str, style: str = "body") -> Paragraph:
        """A paragraph of our own words (escaped too: a translation may hold an ampersand)."""
        return Paragraph(plain(text), self.style[style])

    def table(self, head: list[str], rows: list[list[str]], widths: list[float]) -> Table:
        cells: list[list[Flowable]] = [[self.para(h, "head") for h in head]]
        cells += [[self.para(value, "cell") for value in row] for row in rows]
        table = Table(cells, colWidths=widths, repeatRows=1, hAlign="LEFT")
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("TOPPADDING", (0, 0), (-1, -1), 3),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
                ]
            )
        )
        return table

    def story(self, width: float) -> list[Flowable]:
        _, data = self._, self.data
        story: list[Flowable] = [
            self.para(_("Minutes of the conciliation meeting"), "title"),
            self.para(_("Case %(code)s") % {"code": data.case_code}, "subtitle"),
            Spacer(1, 4 * mm),
        ]
        start, end = data.slot_start.astimezone(ROME), data.slot_end.astimezone(ROME)
        facts = [
            (_("Case"), data.case_code),
            (_("Sector"), _(SECTOR[data.sector])),
            (_("Customer"), data.customer),
            *([(_("Delegate"), data.delegate)] if data.delegate else []),
            (_("Company"), data.company),
            (_("Conciliator"), data.conciliator),
            (_("Date"), self.date(start.date(), "full")),
            (_("Time"), f"{start:%H:%M}–{end:%H:%M}"),
            (_("Mode"), _(MODE[data.mode])),
        ]
        table = Table(
            [[self.para(label, "head"), self.para(value, "cell")] for label, value in facts],
            colWidths=[0.28 * width, 0.72 * width],
            hAlign="LEFT",
        )
        table.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.lightgrey),
                    ("TOPPADDING", (0, 0), (-1, -1), 2),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                ]
            )
        )
        story += [
            table,
            Spacer(1, 2 * mm),
            self.para(_("All times are Italian time (Europe/Rome)."), "note"),
        ]
        story += self._participants(width)
        story += self._sessions(width)
        story.append(self.para(_("Settlement proposal"), "heading"))
        if data.proposal_requested_at is not None:
            story.append(
                self.para(
                    _("Both parties asked the conciliator for a settlement proposal at %(time)s.")
                    % {"time": self.clock(data.proposal_requested_at)}
                )
            )
        else:
            story.append(
                self.para(
                    _("The parties did not both ask the conciliator for a settlement proposal.")
                )
            )
        story += [
            self.para(_("Outcome"), "heading"),
            self.para(_(OUTCOME[data.outcome]), "outcome"),
        ]
        story += self._agreement()
        story += [
            Spacer(1, 6 * mm),
            HRFlowable(width="100%", thickness=0.5, color=colors.grey),
            Spacer(1, 2 * mm),
            self.para(
                _("Minutes generated by the service on %(date)s at %(time)s (Italian time).")
                % {
                    "date": self.date(data.generated_at.astimezone(ROME).date()),
                    "time": f"{data.generated_at.astimezone(ROME):%H:%M:%S}",
                },
                "closing",
            ),
        ]
        return story

    def _participants(self, width: float) -> list[Flowable]:
        _ = self._
        out: list[Flowable] = [self.para(_("Participants"), "heading")]
        if not self.data.attendance:
            return [*out, self.para(_("Nobody joined the meeting."))]
        rows = [
            [a.name, _(PARTY[a.party]), self.clock(a.joined_at), self.clock(a.left_at)]
            for a in sorted(self.data.attendance, key=lambda a: a.joined_at)
        ]
        head = [_("Name"), _("Role"), _("Joined"), _("Left")]
        return [*out, self.table(head, rows, [w * width for w in (0.38, 0.3, 0.16, 0.16)])]

    def _sessions(self, width: float) -> list[Flowable]:
        _ = self._
        out: list[Flowable] = [self.para(_("Sessions"), "heading")]
        if not self.data.sessions:
            return [*out, self.para(_("No session was held."))]
        rows = [
            [
                _(SESSION[s.kind]),
                self.clock(s.started_at),
                self.clock(s.ended_at),
                ", ".join(s.participants),
            ]
            for s in sorted(self.data.sessions, key=lambda s: s.started_at)
        ]
        head = [_("Session"), _("Started"), _("Ended"), _("Present")]
        return [*out, self.table(head, rows, [w * width for w in (0.22, 0.13, 0.13, 0.52)])]

    def _agreement(self) -> list[Flowable]:
        _, data = self._, self.data
        out: list[Flowable] = []
        text = paragraphs(data.agreement_text)
        if text:
            out.append(self.para(_("Text of the agreement"), "heading"))
            # Already escaped by paragraphs(); only its <br/> are markup.
            out += [Paragraph(block, self.style["body"]) for block in text]
        if data.acceptances or data.outcome == Outcome.AGREEMENT:
            out.append(self.para(_("Acceptance of the agreement"), "heading"))
            if not data.acceptances:
                out.append(self.para(_("No party has accepted the agreement.")))
        for accepted in sorted(data.acceptances, key=lambda a: a.accepted_at):
            local = accepted.accepted_at.astimezone(ROME)
            out.append(
                self.para(
                    _(
                        "%(name)s (%(role)s) accepted the agreement on %(date)s at %(time)s, "
                        "confirmed by a one-time code sent to %(email)s."
                    )
                    % {
                        "name": accepted.name,
                        "role": _(PARTY[accepted.party]),
                        "date": self.date(local.date()),
                        "time": f"{local:%H:%M:%S}",
                        "email": mask_email(accepted.email),
                    }
                )
            )
        return out

    def decorate(self, pages: int | None) -> Callable[[Canvas, SimpleDocTemplate], None]:
        """Header and footer of every page; ``pages`` is the total, once known."""
        _ = self._

        def draw(canvas: Canvas, doc: SimpleDocTemplate) -> None:
            width, height = A4
            canvas.saveState()
            canvas.setFont(FONT, 8)
            canvas.setFillColor(colors.dimgrey)
            canvas.setStrokeColor(colors.lightgrey)
            top = height - MARGIN + 6 * mm
            canvas.drawString(MARGIN, top, _("Online conciliation service"))
            canvas.drawRightString(width - MARGIN, top, self.data.case_code)
            canvas.line(MARGIN, top - 2 * mm, width - MARGIN, top - 2 * mm)
            canvas.line(MARGIN, MARGIN - 6 * mm, width - MARGIN, MARGIN - 6 * mm)
            footer = _("Page %(page)s of %(pages)s") % {
                "page": canvas.getPageNumber(),
                "pages": pages if pages is not None else "",
            }
            canvas.drawCentredString(width / 2, MARGIN - 10 * mm, footer)
            canvas.restoreState()

        return draw

    def build(self, pages: int | None) -> tuple[bytes, int]:
        buffer = io.BytesIO()
        doc = SimpleDocTemplate(
            buffer,
            pagesize=A4,
            leftMargin=MARGIN,
            rightMargin=MARGIN,
            topMargin=MARGIN,
            bottomMargin=MARGIN,
            title=self._("Minutes of the conciliation meeting") + f" — {self.data.case_code}",
            author=self._("Online conciliation service"),
            subject=self.data.case_code,
            creator="concilia",
            lang=self.data.language,
        )
        decorate = self.decorate(pages)
        # The frame pads its content by 6 points on each side.
        doc.build(self.story(doc.width - 12), onFirstPage=decorate, onLaterPages=decorate)
        return buffer.getvalue(), doc.page


def render_minutes(data: MinutesData, i18n: I18n | None = None) -> bytes:
    """The minutes as an A4 PDF in the case's language.

    CPU-bound (tens of milliseconds a page): call it through ``asyncio.to_thread`` from the
    event loop. ``i18n`` is the application's catalogs; without it they are loaded here.
    """
    ensure_fonts()
    writer = _Writer(data, (i18n or I18n()).gettext(data.language))
    # The footer says "page X of Y": a first pass counts the pages, the second prints the count.
    # Header and footer sit outside the frame, so both passes break pages at the same places.
    _draft, pages = writer.build(None)
    pdf, _pages = writer.build(pages)
    return pdf
