"""What an uploaded document may be: extension, content matching it, a safe name.

The service lists the extensions it accepts. A file's first bytes must be those of its type;
office documents (OOXML, ODF) must be real zip archives with the parts of their type, and
archives past sane limits (entries, uncompressed size, compression ratio) are refused before
anything is decompressed, so a zip bomb costs nothing. Names are kept only as metadata.
"""

from __future__ import annotations

import re
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from core.errors import ErrorCode

MB = 1024 * 1024
CONCILIATION_MAX_FILE = 15 * MB
HELPDESK_MAX_FILES = 5
HELPDESK_MAX_TOTAL = 15 * MB

CONCILIATION_EXTENSIONS = frozenset(
    {
        ".docx",
        ".xlsx",
        ".odt",
        ".ods",
        ".pdf",
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".mp3",
        ".tiff",
        ".txt",
        ".eml",
        ".fods",
        ".odp",
        ".fodp",
        ".pptx",
        ".odg",
        ".fodg",
        ".p7m",
        ".html",
        ".xml",
    }
)
HELPDESK_EXTENSIONS = frozenset(
    {
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".odt",
        ".ods",
        ".pdf",
        ".jpg",
        ".png",
        ".bmp",
        ".mp3",
        ".wav",
        ".mwa",
    }
)

ZIP_MAX_ENTRIES = 2000
ZIP_MAX_TOTAL = 200 * MB
ZIP_MAX_RATIO = 100
NAME_MAX = 150
HEAD = 4096  # bytes of the file's start needed for every check below

OOXML_PART = {".docx": "word/", ".xlsx": "xl/", ".pptx": "ppt/"}
ODF_MIME = {
    ".odt": b"application/vnd.oasis.opendocument.text",
    ".ods": b"application/vnd.oasis.opendocument.spreadsheet",
    ".odp": b"application/vnd.oasis.opendocument.presentation",
    ".odg": b"application/vnd.oasis.opendocument.graphics",
}
FLAT_ODF = {".fods": b"spreadsheet", ".fodp": b"presentation", ".fodg": b"graphics"}
MAGIC: dict[str, tuple[bytes, ...]] = {
    ".pdf": (b"%PDF-",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".bmp": (b"BM",),
    ".tiff": (b"II*\x00", b"MM\x00*"),
    ".doc": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",),
    ".xls": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",),
    # .mwa stands in the service's list beside .wav; audio in an ASF (Windows Media) container.
    ".mwa": (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",),
}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    code: ErrorCode | None = None


ACCEPT = Verdict(True)


def extension(name: str) -> str:
    """The lower-case extension of a (sanitized) name, with its dot; '' when none."""
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def sanitize_name(raw: str) -> str:
    """A display name without path parts, control, format (bidi) or reserved characters."""
    text = re.split(r"[\\/]", raw or "")[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] not in ("C", "Z") or c == " ")
    # Normalized after the filtering, which can bring a base letter and a combining mark
    # together (a zero-width joiner between them): sanitizing twice must change nothing.
    text = unicodedata.normalize("NFC", re.sub(r'[<>:"|?*]', "_", text)).strip(" .")
    if not text:
        return "document"
    if len(text) > NAME_MAX:
        ext = extension(text)
        # The cut may leave a space or a dot at the end, which a name never has.
        text = text[: NAME_MAX - len(ext)].rstrip(" .") + ext
    return text


def check_extension(name: str, allowed: frozenset[str]) -> Verdict:
    ext = extension(name)
    return ACCEPT if ext in allowed else Verdict(False, ErrorCode.FILE_TYPE_NOT_ALLOWED)


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start < len(head) - 4:
            try:
                head.decode("cp1252")
            except UnicodeDecodeError:
                return False
    return True


def _xml_start(head: bytes) -> bytes:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")


# What ``zipfile`` raises on a damaged archive: besides ``BadZipFile``, a name flagged UTF-8
# that is not (``UnicodeDecodeError``, a ``ValueError``), a record cut short (``EOFError``,
# ``struct.error``), bad compressed data (``zlib.error``), an encrypted or unknown method.
ZIP_DAMAGE = (
    zipfile.BadZipFile,
    OSError,
    KeyError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    NotImplementedError,
    RuntimeError,
)


def _check_zip(path: Path, ext: str) -> Verdict:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > ZIP_MAX_ENTRIES:
                return Verdict(False, ErrorCode.FILE_ARCHIVE_TOO_BIG)
            total = sum(e.file_size for e in entries)
            packed = sum(e.compress_size for e in entries)
            if total > ZIP_MAX_TOTAL or total > ZIP_MAX_RATIO * max(packed, 1):
                return Verdict(False, ErrorCode.FILE_ARCHIVE_TOO_BIG)
            for entry in entries:
                if entry.file_size > ZIP_MAX_RATIO * max(entry.compress_size, 1) + 1024:
                    return Verdict(False, ErrorCode.FILE_ARCHIVE_TOO_BIG)
            names = {e.filename for e in entries}
            if ext in OOXML_PART:
                part = OOXML_PART[ext]
                if "[Content_Types].xml" not in names or not any(n.startswith(part) for n in names):
                    return Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
                return ACCEPT
            if "mimetype" not in names:
                return Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
            mimetype = archive.read("mimetype")[:100].strip()  # stored uncompressed, tiny
            return (
                ACCEPT
                if mimetype == ODF_MIME[ext]
                else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
            )
    except ZIP_DAMAGE:
        return Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)


def check_content(path: Path, ext: str) -> Verdict:
    """Whether the stored file at ``path`` really is of type ``ext``."""
    with path.open("rb") as handle:
        head = handle.read(HEAD)
    if not head:
        return Verdict(False, ErrorCode.FILE_EMPTY)
    if ext in MAGIC:
        ok = any(head.startswith(m) for m in MAGIC[ext])
        return ACCEPT if ok else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    if ext in OOXML_PART or ext in ODF_MIME:
        if not head.startswith(b"PK\x03\x04"):
            return Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
        return _check_zip(path, ext)
    if ext == ".mp3":
        # An ID3 tag, or an MPEG audio frame's 11 sync bits (two bytes at least).
        ok = head.startswith(b"ID3") or (
            len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
        )
        return ACCEPT if ok else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    if ext == ".wav":
        ok = head.startswith(b"RIFF") and head[8:12] == b"WAVE"
        return ACCEPT if ok else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    if ext == ".p7m":
        # A CMS signature: DER (a SEQUENCE) or its Base64/PEM form.
        ok = head[:1] == b"\x30" or head.lstrip().startswith((b"-----BEGIN", b"MI"))
        return ACCEPT if ok else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    if not _is_text(head):
        return Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    start = _xml_start(head)
    if ext == ".xml":
        return ACCEPT if start.startswith(b"<") else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    if ext in FLAT_ODF:
        ok = start.startswith(b"<") and b"office:document" in head and FLAT_ODF[ext] in head
        return ACCEPT if ok else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    if ext == ".html":
        return ACCEPT if start.startswith(b"<") else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    if ext == ".eml":
        ok = re.match(rb"^[A-Za-z][A-Za-z0-9-]*:", start) is not None
        return ACCEPT if ok else Verdict(False, ErrorCode.FILE_CONTENT_MISMATCH)
    return ACCEPT  # .txt: any text
