"""The meeting minutes: the PDF says everything in the case's language; the seal shows tampering."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pypdf import PdfReader

from cases.request import MeetingMode
from cases.supply import Sector
from core.i18n import I18n
from core.settings import Settings
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
from rooms.seal import DEV_SEAL_FILE, DEV_SEAL_NAME, Sealer, verify_minutes

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


# --- the seal ---------------------------------------------------------------------------------


def seal_settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(env="test", var_dir=tmp_path / "var", **values)


@pytest.fixture
def sealer(tmp_path: Path) -> Sealer:
    return Sealer.from_settings(seal_settings(tmp_path))


@pytest.fixture(scope="module")
def rendered(i18n: I18n) -> bytes:
    return render_minutes(minutes(), i18n)


async def test_sealed_minutes_verify_intact_and_signed_by_the_service(
    sealer: Sealer, rendered: bytes
) -> None:
    sealed = await sealer.seal(rendered)
    assert sealed.startswith(rendered)  # an incremental update: the original bytes stay
    check = await verify_minutes(sealed, sealer.certificate)
    assert check.ok
    assert check.sealed and check.intact and check.trusted and check.certified
    assert not check.modified_after_signing and not check.timestamped
    assert check.signed_by == sealer.name == DEV_SEAL_NAME
    assert check.signed_at is not None
    assert abs(check.signed_at - datetime.now(UTC)) < timedelta(minutes=5)
    # The sealed file still reads the same.
    assert text_of(sealed) == text_of(rendered)
    # Without a trust anchor the integrity is judged, trust is not.
    untrusted = await verify_minutes(sealed)
    assert untrusted.intact and not untrusted.trusted and not untrusted.ok


async def test_an_unsealed_or_broken_file_is_not_sealed(rendered: bytes) -> None:
    check = await verify_minutes(rendered)
    assert not check.sealed and not check.ok and check.problem == "no signature"
    garbage = await verify_minutes(b"not a pdf at all")
    assert not garbage.sealed and garbage.problem.startswith("unreadable PDF")


async def test_one_flipped_byte_in_the_signed_range_is_tampering(
    sealer: Sealer, rendered: bytes
) -> None:
    sealed = await sealer.seal(rendered)
    # A byte of the agreement page's content stream, well inside the signed range.
    stream = re.search(rb"stream\r?\n", sealed)
    assert stream is not None
    at = stream.end() + 20
    tampered = sealed[:at] + bytes([sealed[at] ^ 0x01]) + sealed[at + 1 :]
    check = await verify_minutes(tampered, sealer.certificate)
    assert check.sealed and not check.intact and not check.ok
    # A byte of the signature itself.
    at = sealed.index(b"/Contents <") + 40
    digit = b"1" if sealed[at : at + 1] == b"0" else b"0"
    check = await verify_minutes(sealed[:at] + digit + sealed[at + 1 :], sealer.certificate)
    assert check.sealed and not check.intact and not check.ok
    assert check.problem.startswith("invalid signature")


async def test_an_incremental_update_changing_a_page_is_detected(
    sealer: Sealer, rendered: bytes
) -> None:
    sealed = await sealer.seal(rendered)
    writer = IncrementalPdfFileWriter(io.BytesIO(sealed))
    overlay = generic.StreamObject(stream_data=b"BT /F1 18 Tf 72 400 Td (Nessun accordo) Tj ET")
    writer.add_stream_to_page(0, writer.add_object(overlay))  # type: ignore[no-untyped-call]
    out = io.BytesIO()
    writer.write(out)  # type: ignore[no-untyped-call]
    check = await verify_minutes(out.getvalue(), sealer.certificate)
    # The signed revision itself is intact, but something was appended after it.
    assert check.intact and check.trusted
    assert check.modified_after_signing and not check.ok


async def test_another_key_is_not_trusted(tmp_path: Path, sealer: Sealer, rendered: bytes) -> None:
    other = Sealer.from_settings(seal_settings(tmp_path / "other"))
    assert other.certificate != sealer.certificate
    check = await verify_minutes(await other.seal(rendered), sealer.certificate)
    assert check.intact and not check.trusted and not check.ok


def test_dev_key_is_created_once_and_reused(tmp_path: Path) -> None:
    first = Sealer.from_settings(seal_settings(tmp_path))
    path = tmp_path / "var" / DEV_SEAL_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    content = path.read_bytes()
    second = Sealer.from_settings(seal_settings(tmp_path))
    assert second.certificate == first.certificate
    assert path.read_bytes() == content


def test_production_needs_a_configured_seal(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CONCILIA_MINUTES_SEAL_P12"):
        Sealer.from_settings(Settings(env="prod", var_dir=tmp_path))
    assert not (tmp_path / DEV_SEAL_FILE).exists()


def certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    timestamping: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca and not timestamping,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if timestamping:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


async def test_configured_pkcs12_is_used(tmp_path: Path, rendered: bytes) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = certificate("Servizio Conciliazione — sigillo", key)
    path = tmp_path / "seal.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"seal", key, cert, None, serialization.BestAvailableEncryption(b"s3gret")
        )
    )
    settings = seal_settings(
        tmp_path, minutes_seal_p12=path, minutes_seal_passphrase=SecretStr("s3gret")
    )
    sealer = Sealer.from_settings(settings)
    assert sealer.certificate == cert
    assert sealer.name == "Servizio Conciliazione — sigillo"
    assert not (tmp_path / "var" / DEV_SEAL_FILE).exists()
    check = await verify_minutes(await sealer.seal(rendered), cert)
    assert check.ok and check.signed_by == "Servizio Conciliazione — sigillo"

    wrong = seal_settings(
        tmp_path, minutes_seal_p12=path, minutes_seal_passphrase=SecretStr("wrong")
    )
    with pytest.raises(ValueError, match="CONCILIA_MINUTES_SEAL_P12") as refused:
        Sealer.from_settings(wrong)
    assert "wrong" not in str(refused.value)  # the passphrase is never echoed
    with pytest.raises(ValueError, match="cannot read"):
        Sealer.from_settings(seal_settings(tmp_path, minutes_seal_p12=tmp_path / "none.p12"))


async def test_configured_pem_key_with_its_chain(tmp_path: Path, rendered: bytes) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certificate("Test root CA", root_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("Concilia seal", key, (root, root_key))
    pem = serialization.Encoding.PEM
    (tmp_path / "seal.key").write_bytes(
        key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    (tmp_path / "seal.crt").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "chain.pem").write_bytes(root.public_bytes(pem))
    values: dict[str, Any] = {
        "minutes_seal_key": tmp_path / "seal.key",
        "minutes_seal_cert": tmp_path / "seal.crt",
        "minutes_seal_chain": tmp_path / "chain.pem",
        "minutes_seal_passphrase": SecretStr("pass"),
    }
    sealer = Sealer.from_settings(seal_settings(tmp_path, **values))
    check = await verify_minutes(await sealer.seal(rendered), root)  # trusting the root
    assert check.ok and check.signed_by == "Concilia seal"

    # A key that is not the certificate's is refused when the sealer is built.
    stranger = certificate("Someone else", ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "stranger.crt").write_bytes(stranger.public_bytes(pem))
    values["minutes_seal_cert"] = tmp_path / "stranger.crt"
    with pytest.raises(ValueError, match="does not belong"):
        Sealer.from_settings(seal_settings(tmp_path, **values))


async def test_timestamp_authority_makes_it_pades_b_t(tmp_path: Path, rendered: bytes) -> None:
    # pyHanko's in-process timestamp authority stands in for a real one (none in tests).
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certificate("Test root CA", root_key, ca=True)
    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # RSA: the dummy TSA
    tsa = certificate("Test TSA", tsa_key, (root, root_key), timestamping=True)
    seal_key = ec.generate_private_key(ec.SECP256R1())
    seal = certificate("Concilia seal", seal_key, (root, root_key))
    stamped_at = datetime(2026, 3, 30, 8, 25, 31, tzinfo=UTC)
    der = serialization.Encoding.DER
    timestamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(tsa.public_bytes(der)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(
            tsa_key.private_bytes(
                der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        ),
        fixed_dt=stamped_at,
    )
    sealer = Sealer(seal_key, seal, [root], timestamper=timestamper)
    check = await verify_minutes(await sealer.seal(rendered), root)
    assert check.ok and check.timestamped and check.signed_at == stamped_at
