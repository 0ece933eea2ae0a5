"""The service's electronic seal on the minutes: a PAdES certification signature (pyHanko).

``Sealer.seal`` adds a PAdES baseline B-B signature (B-T when a timestamp authority is
configured) as a *certification* signature whose DocMDP policy allows no change at all, so any
later change — a flipped byte, an incremental update — is detectable; ``verify_minutes`` says
whether a file is still the sealed original and who sealed it.

Keys: in production a PKCS#12 file, or a PEM key and certificate, from the settings; in
development and tests, when none is configured, a self-signed key and certificate generated once
into ``<var_dir>/minutes-seal.p12`` (mode 0600) and reused on every start.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from core.settings import Settings

log = logging.getLogger(__name__)

SealKey: TypeAlias = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
FIELD = "ServiceSeal"
DEV_SEAL_FILE = "minutes-seal.p12"
DEV_SEAL_NAME = "Concilia minutes seal (development, self-signed)"
DEV_SEAL_YEARS = 10
# A seal certificate says non-repudiation (content commitment) or digital signature; either will do.
KEY_USAGE = KeyUsageConstraints(
    key_usage={"non_repudiation", "digital_signature"}, match_all_key_usages=False
)


def _asn1_cert(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def _public_der(holder: SealKey | x509.Certificate) -> bytes:
    return holder.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def subject_name(certificate: asn1_x509.Certificate) -> str:
    """The certificate's common name, or its whole subject when it has none."""
    common: object = certificate.subject.native.get("common_name")
    if isinstance(common, list):
        common = common[0] if common else None
    return str(common) if common else str(certificate.subject.human_friendly)


class Sealer:
    """Seals PDF files with one key and certificate; safe to share between tasks."""

    def __init__(
        self,
        key: SealKey,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        timestamper: TimeStamper | None = None,
    ) -> None:
        if _public_der(key) != _public_der(certificate):
            raise ValueError("the seal's private key does not belong to its certificate")
        self.certificate = certificate
        self._timestamper = timestamper
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        store = SimpleCertificateStore()  # type: ignore[no-untyped-call]
        store.register_multiple([_asn1_cert(c) for c in chain])
        self._signer = signers.SimpleSigner(
            signing_cert=_asn1_cert(certificate),
            signing_key=asn1_keys.PrivateKeyInfo.load(der),
            cert_registry=store,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        """The configured seal; in development and tests, the generated one when none is."""
        passphrase = settings.minutes_seal_passphrase
        secret = passphrase.get_secret_value().encode() if passphrase is not None else None
        chain = _read_chain(settings.minutes_seal_chain) if settings.minutes_seal_chain else []
        if settings.minutes_seal_p12 is not None:
            key, certificate, more = _read_pkcs12(
                settings.minutes_seal_p12, secret, "CONCILIA_MINUTES_SEAL_P12"
            )
            chain = [*more, *chain]
        elif settings.minutes_seal_key is not None and settings.minutes_seal_cert is not None:
            key = _read_pem_key(settings.minutes_seal_key, secret)
            certificate = _read_pem_cert(settings.minutes_seal_cert)
        elif settings.env in ("dev", "test"):
            path = ensure_dev_seal(settings.var_dir)
            key, certificate, chain = _read_pkcs12(path, None, str(path))
        else:
            raise ValueError(
                "set CONCILIA_MINUTES_SEAL_P12, or CONCILIA_MINUTES_SEAL_KEY and "
                "CONCILIA_MINUTES_SEAL_CERT, to seal the minutes in production"
            )
        timestamper = None
        if settings.minutes_tsa_url:
            timestamper = RequestsHTTPTimeStamper(  # type: ignore[no-untyped-call]
                settings.minutes_tsa_url, timeout=10
            )
        return cls(key, certificate, chain, timestamper)

    @property
    def name(self) -> str:
        """Who the seal says signed: the certificate's common name."""
        return subject_name(_asn1_cert(self.certificate))

    async def seal(self, pdf: bytes) -> bytes:
        """The PDF with the service's certification signature appended (an incremental update).

        Runs in a worker thread: hashing, signing and any call to the timestamp authority stay
        off the event loop.
        """
        return await asyncio.to_thread(self._seal, pdf)

    def _seal(self, pdf: bytes) -> bytes:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
        meta = signers.PdfSignatureMetadata(
            field_name=FIELD,
            certify=True,
            docmdp_permissions=MDPPerm.NO_CHANGES,
            subfilter=SigSeedSubFilter.PADES,
            md_algorithm="sha256",
        )
        out = signers.sign_pdf(writer, meta, signer=self._signer, timestamper=self._timestamper)
        data: bytes = out.getvalue()
        return data


@dataclass(frozen=True)
class SealCheck:
    """What ``verify_minutes`` found.

    ``intact``: the signed bytes are unchanged and the signature over them is valid.
    ``modified_after_signing``: bytes were appended after the signature (an incremental
    update); with a seal that allows no change, any such update is a change to the document.
    ``trusted``: the signer's certificate is the trusted one (``False`` when none was given).
    ``certified``: the signature is a certification allowing no change, as the service seals.
    ``sealed`` is False for a file without a signature; ``problem`` says why a check failed.
    """

    sealed: bool
    intact: bool = False
    trusted: bool = False
    certified: bool = False
    modified_after_signing: bool = False
    timestamped: bool = False
    signed_by: str = ""
    signed_at: datetime | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        """The file is the untouched original sealed by the trusted certificate."""
        return (
            self.sealed
            and self.intact
            and self.trusted
            and self.certified
            and not self.modified_after_signing
        )


async def verify_minutes(pdf: bytes, trust: x509.Certificate | None = None) -> SealCheck:
    """Check a sealed file's first (certification) signature, in a worker thread.

    With ``trust`` (the service's certificate, ``Sealer.certificate``) the signer must be that
    certificate or chain to it; without it only integrity is judged and ``trusted`` is False.
    """
    return await asyncio.to_thread(_verify, pdf, trust)


def _verify(pdf: bytes, trust: x509.Certificate | None) -> SealCheck:
    try:
        reader = PdfFileReader(io.BytesIO(pdf))  # strict: a seal check tolerates no oddity
        has_form = "/AcroForm" in reader.root  # where signature fields are
    except Exception as exc:  # whatever the bytes are, they are not a sealed PDF
        return SealCheck(sealed=False, problem=f"unreadable PDF ({type(exc).__name__})")
    if not has_form:
        return SealCheck(sealed=False, problem="no signature")
    try:
        found = reader.embedded_regular_signatures
        if not found:
            return SealCheck(sealed=False, problem="no signature")
        signature = found[0]
        signer_cert = signature.signer_cert
        # Without a trust anchor the signer's own certificate stands in, so that path building
        # does not fail noisily; the check then says nothing about trust.
        anchor = _asn1_cert(trust) if trust is not None else signer_cert
        context = ValidationContext(trust_roots=[anchor], allow_fetching=False)
        status = validate_pdf_signature(
            signature, signer_validation_context=context, key_usage_settings=KEY_USAGE
        )
    except Exception as exc:  # a damaged signature container or signed range
        log.info("minutes seal check failed", extra={"error": type(exc).__name__})
        return SealCheck(sealed=True, problem=f"invalid signature ({type(exc).__name__})")
    stamp = status.timestamp_validity
    timestamped = stamp is not None and stamp.intact and stamp.valid
    return SealCheck(
        sealed=True,
        intact=bool(status.intact and status.valid),
        trusted=trust is not None and bool(status.trusted),
        certified=signature.docmdp_level == MDPPerm.NO_CHANGES,
        modified_after_signing=status.coverage != SignatureCoverageLevel.ENTIRE_FILE,
        timestamped=timestamped,
        signed_by=subject_name(signer_cert),
        signed_at=stamp.timestamp
        if stamp is not None and timestamped
        else status.signer_reported_dt,
    )


def ensure_dev_seal(var_dir: Path) -> Path:
    """The development seal (key and self-signed certificate), generated on first use."""
    path = var_dir / DEV_SEAL_FILE
    if path.exists():
        return path
    var_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, DEV_SEAL_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Concilia"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "IT"),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365 * DEV_SEAL_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    data = pkcs12.serialize_key_and_certificates(
        DEV_SEAL_NAME.encode(), key, certificate, None, serialization.NoEncryption()
    )
    # Written whole under a temporary name, then linked into place: a process starting at the
    # same time either wins or reads the complete file of the winner.
    tmp = path.with_name(f".{DEV_SEAL_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path} ({exc.strerror})") from None


def _seal_key(key: object, setting: str) -> SealKey:
    if isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        return key
    raise ValueError(f"{setting}: the key must be RSA, EC, Ed25519 or Ed448")


def _read_pkcs12(
    path: Path, passphrase: bytes | None, setting: str
) -> tuple[SealKey, x509.Certificate, list[x509.Certificate]]:
    data = _read(path, setting)
    try:
        key, certificate, more = pkcs12.load_key_and_certificates(data, passphrase)
    except (ValueError, TypeError):
        raise ValueError(f"{setting}: {path} is not a PKCS#12 file this passphrase opens") from None
    if key is None or certificate is None:
        raise ValueError(f"{setting}: {path} must hold the key and its certificate")
    return _seal_key(key, setting), certificate, list(more)


def _read_pem_key(path: Path, passphrase: bytes | None) -> SealKey:
    setting = "CONCILIA_MINUTES_SEAL_KEY"
    data = _read(path, setting)
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except (ValueError, TypeError):
        raise ValueError(
            f"{setting}: {path} is not a PEM private key this passphrase opens"
        ) from None
    return _seal_key(key, setting)


def _read_pem_cert(path: Path) -> x509.Certificate:
    setting = "CONCILIA_MINUTES_SEAL_CERT"
    data = _read(path, setting)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"{setting}: {path} is not a PEM certificate") from None


def _read_chain(path: Path) -> list[x509.Certificate]:
    setting = "CONCILIA_MINUTES_SEAL_CHAIN"
    data = _read(path, setting)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{setting}: {path} is not a list of PEM certificates") from None
