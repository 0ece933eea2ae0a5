"""The meeting minutes: the PDF says everything in the case's language."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pypdf import PdfReader

from cases.request import MeetingMode
from cases.supply import Sector
from core.i18n import I18n
from rooms.minutes import (
    Acceptance,
    Attendance,
    MinutesData,
    Outcome,
    Party,
    SessionKind,
    SessionSpan,
    mask_email,
    render_minutes,
)

# Monday 30 March 2026, the day after Italy moved to summer time: 09:00 in Rome is 07:00 UTC.
SUMMER = datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
# Friday 27 March 2026, still winter time: 09:00 in Rome is 08:00 UTC.
WINTER = datetime(2026, 3, 27, 8, 0, tzinfo=UTC)

AGREEMENT = (
    "L'azienda Enèrgia S.p.A. riconosce al cliente un rimborso di 1.234,56 € "
    "«a saldo» entro 30 giorni.\n"
    "Il pagamento avverrà con bonifico; così è, perché è giusto.\n"
    "\n"
    "Le parti dichiarano di non avere altro a pretendere per la fattura n. 42/2026."
)


@pytest.fixture(scope="module")
def i18n() -> I18n:
    return I18n()


def minutes(start: datetime = SUMMER, **changes: object) -> MinutesData:
    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    data = MinutesData(
        case_code="CONC-2026-000042",
        language="it",
        sector=Sector.ELECTRICITY,
        customer="Mario Rossi",
        delegate="Lucia Ferrà",
        company="Enèrgia S.p.A.",
        conciliator="Giulia Bianchi",
        slot_start=start,
        slot_end=at(90),
        mode=MeetingMode.VIDEO,
        attendance=(
            Attendance("Giulia Bianchi", Party.CONCILIATOR, at(0), None),
            Attendance("Lucia Ferrà", Party.DELEGATE, at(3), at(81)),
            Attendance("Paolo Neri", Party.COMPANY, at(7), at(79)),
        ),
        sessions=(
            SessionSpan(
                SessionKind.JOINT, at(8), at(25), ("Giulia Bianchi", "Lucia Ferrà", "Paolo Neri")
            ),
            SessionSpan(SessionKind.SEPARATE, at(26), at(38), ("Giulia Bianchi", "Lucia Ferrà")),
            SessionSpan(SessionKind.SEPARATE, at(39), at(51), ("Giulia Bianchi", "Paolo Neri")),
        ),
        proposal_requested_at=at(52),
        outcome=Outcome.AGREEMENT,
        agreement_text=AGREEMENT,
        acceptances=(
            Acceptance("Lucia Ferrà", Party.DELEGATE, at(72) + timedelta(seconds=5), "lucia@x.it"),
            Acceptance("Paolo Neri", Party.COMPANY, at(74) + timedelta(seconds=9), "p.neri@en.it"),
        ),
        generated_at=at(84) + timedelta(seconds=30),
    )
    return replace(data, **changes)  # type: ignore[arg-type]


def pages_of(pdf: bytes) -> list[str]:
    """Each page's text with runs of white space made one space (lines wrap anywhere)."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages]


def text_of(pdf: bytes) -> str:
    return " ".join(pages_of(pdf))


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("start", "day"), [(SUMMER, "lunedì 30 marzo 2026"), (WINTER, "venerdì 27 marzo 2026")]
)
def test_italian_minutes_say_everything_in_rome_time(i18n: I18n, start: datetime, day: str) -> None:
    pages = pages_of(render_minutes(minutes(start), i18n))
    text = " ".join(pages)
    expected = [
        "Verbale dell'incontro di conciliazione",
        "Pratica CONC-2026-000042",
        "Settore Energia elettrica",
        "Cliente Mario Rossi",
        "Delegato Lucia Ferrà",
        "Azienda Enèrgia S.p.A.",
        "Conciliatore Giulia Bianchi",
        f"Data {day}",
        "Ora 09:00–10:30",
        "Modalità Videoconferenza",
        "Gli orari sono espressi in ora italiana (Europe/Rome).",
        # participants, by arrival, with their role and times in Rome
        "Nome Ruolo Entrata Uscita",
        "Giulia Bianchi Conciliatore 09:00 —",
        "Lucia Ferrà Delegato 09:03 10:21",
        "Paolo Neri Rappresentante dell'azienda 09:07 10:19",
        # sessions: who was in each, from and to
        "Sessione congiunta 09:08 09:25 Giulia Bianchi, Lucia Ferrà, Paolo Neri",
        "Sessione separata 09:26 09:38 Giulia Bianchi, Lucia Ferrà",
        "Sessione separata 09:39 09:51 Giulia Bianchi, Paolo Neri",
        "Entrambe le parti hanno chiesto al conciliatore una proposta di accordo alle 09:52.",
        "Esito Accordo raggiunto",
        "Testo dell'accordo",
        flat(AGREEMENT),
        "Lucia Ferrà (Delegato) ha accettato l'accordo il "
        f"{day.split(' ', 1)[1]} alle 10:12:05, con conferma tramite codice monouso "
        "inviato a l***@x.it.",
        "Paolo Neri (Rappresentante dell'azienda) ha accettato l'accordo il "
        f"{day.split(' ', 1)[1]} alle 10:14:09, con conferma tramite codice monouso "
        "inviato a p***@en.it.",
        f"Verbale generato dal servizio il {day.split(' ', 1)[1]} alle 10:24:30 (ora italiana).",
        *(f"Pagina {n} di {len(pages)}" for n in range(1, len(pages) + 1)),
    ]
    missing = [piece for piece in expected if piece not in text]
    assert missing == [], text
    # The e-mail addresses themselves never appear.
    assert "lucia@x.it" not in text and "p.neri@en.it" not in text


def test_english_minutes(i18n: I18n) -> None:
    data = minutes(
        language="en",
        delegate=None,
        sector=Sector.GAS,
        mode=MeetingMode.CHAT,
        outcome=Outcome.NO_AGREEMENT,
        agreement_text="",
        acceptances=(),
        proposal_requested_at=None,
    )
    text = text_of(render_minutes(data, i18n))
    expected = [
        "Minutes of the conciliation meeting",
        "Case CONC-2026-000042",
        "Sector Gas",
        "Customer Mario Rossi",
        "Company Enèrgia S.p.A.",
        "Date Monday, 30 March 2026",
        "Time 09:00–10:30",
        "Mode Chat room",
        "Lucia Ferrà Delegate 09:03 10:21",
        "Paolo Neri Company representative 09:07 10:19",
        "Joint session 09:08 09:25",
        "Separate session 09:26 09:38 Giulia Bianchi, Lucia Ferrà",
        "The parties did not both ask the conciliator for a settlement proposal.",
        "Outcome No agreement",
        "Minutes generated by the service on 30 March 2026 at 10:24:30 (Italian time).",
        "Page 1 of 1",
    ]
    assert [piece for piece in expected if piece not in text] == [], text
    # Nothing Italian, no delegate row, no agreement or acceptance section.
    for absent in ("Pratica", "Delegato", "Delegate Lucia", "Text of the agreement", "accepted"):
        assert absent not in text


@pytest.mark.parametrize(
    ("outcome", "italian", "english"),
    [
        (Outcome.ADJOURNED, "Rinvio ad altro incontro", "Adjourned to another meeting"),
        (Outcome.APPLICANT_ABSENT, "Assenza del richiedente", "The applicant did not attend"),
        (Outcome.COMPANY_ABSENT, "Assenza dell'azienda", "The company did not attend"),
    ],
)
def test_other_outcomes(i18n: I18n, outcome: Outcome, italian: str, english: str) -> None:
    data = minutes(outcome=outcome, agreement_text="", acceptances=(), attendance=(), sessions=())
    text = text_of(render_minutes(data, i18n))
    assert f"Esito {italian}" in text
    assert "Nessuno ha partecipato all'incontro." in text
    assert "Non si è tenuta alcuna sessione." in text
    assert "Accettazione dell'accordo" not in text
    assert f"Outcome {english}" in text_of(render_minutes(replace(data, language="en"), i18n))


def test_a_long_agreement_spans_pages_numbered_x_of_y(i18n: I18n) -> None:
    clauses = [
        f"Clausola {n}: l'azienda storna la fattura n. {n}/2026 di {n * 10},50 € "
        + "e ricalcola i consumi stimati del periodo indicato. " * 6
        for n in range(1, 61)
    ]
    pdf = render_minutes(minutes(agreement_text="\n\n".join(clauses)), i18n)
    pages = pages_of(pdf)
    total = len(pages)
    assert total >= 4
    for number, page in enumerate(pages, start=1):
        assert f"Pagina {number} di {total}" in page
        assert "Servizio di conciliazione online" in page and "CONC-2026-000042" in page
    text = " ".join(pages)
    # Every clause is there, in order, and the closing line comes after the last one.
    positions = [text.index(f"Clausola {n}:") for n in range(1, 61)]
    assert positions == sorted(positions)
    assert text.index("Verbale generato dal servizio") > positions[-1]
    assert "Verbale generato dal servizio" in pages[-1]


def test_markup_in_typed_text_is_shown_literally(i18n: I18n) -> None:
    typed = (
        "<b>non grassetto</b> &amp; &euro; <para>x</para> <font color='red'>rosso</font>\n"
        '<a href="https://example.org">link</a> <img src="x.png"/> a < b > c & d'
    )
    data = minutes(
        agreement_text=typed,
        customer="<i>Mario</i> & Figli",
        attendance=(Attendance("<br/>Ospite", Party.CUSTOMER, SUMMER, None),),
    )
    text = text_of(render_minutes(data, i18n))
    assert flat(typed) in text
    assert "Cliente <i>Mario</i> & Figli" in text
    assert "<br/>Ospite Cliente 09:00 —" in text
    # The entity stays an entity (not €) and the tags did not become formatting.
    assert "&euro;" in text and "&amp;" in text


def test_unbroken_text_wraps_without_loss(i18n: I18n) -> None:
    word, name = "x" * 5000, "Y" * 600  # a pasted token, a name without spaces
    data = minutes(
        agreement_text=word, attendance=(Attendance(name, Party.CUSTOMER, SUMMER, None),)
    )
    text = text_of(render_minutes(data, i18n)).replace(" ", "")
    assert name in text
    # The word runs over pages: its pieces lie between headers and footers.
    assert sum(len(run) for run in re.findall("x{20,}", text)) == len(word)


def test_control_characters_are_dropped_and_naive_times_refused() -> None:
    pdf = render_minutes(minutes(agreement_text="riga\x00 uno\x07\r\nriga\x1b due"))
    assert "riga uno riga due" in text_of(pdf)
    with pytest.raises(ValueError, match="timezone-aware"):
        minutes(generated_at=datetime(2026, 3, 30, 9, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        Attendance("X", Party.CUSTOMER, datetime(2026, 3, 30, 9, 0))


def test_masked_addresses() -> None:
    assert mask_email("mario.rossi@example.org") == "m***@example.org"
    assert mask_email(" a@b.it ") == "a***@b.it"
    assert mask_email("not-an-address") == "***"
    assert mask_email("@example.org") == "***"
