"""Upload rules: the service's extensions, content that matches them, no zip bombs, safe names."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from cases.uploads import (
    CONCILIATION_EXTENSIONS,
    HELPDESK_EXTENSIONS,
    check_content,
    check_extension,
    extension,
    sanitize_name,
)
from core.errors import ErrorCode


def _zip(entries: dict[str, bytes], *, stored_first: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if stored_first is not None:
            archive.writestr(
                zipfile.ZipInfo(stored_first), entries.pop(stored_first), zipfile.ZIP_STORED
            )
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


FLAT = b'<?xml version="1.0"?><office:document office:mimetype="application/vnd.oasis.opendocument.'
SAMPLES: dict[str, bytes] = {
    ".pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
    ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    ".jpeg": b"\xff\xd8\xff\xe1\x00\x10Exif\x00",
    ".png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    ".bmp": b"BM6\x00\x00\x00\x00\x00",
    ".tiff": b"II*\x00\x08\x00\x00\x00",
    ".mp3": b"ID3\x04\x00\x00\x00\x00\x00",
    ".wav": b"RIFF$\x00\x00\x00WAVEfmt ",
    ".mwa": b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9",
    ".doc": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00",
    ".xls": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00",
    ".txt": "Gentile fornitore, è la terza volta che scrivo.\n".encode(),
    ".eml": b"From: mario@example.org\r\nTo: reclami@example.org\r\nSubject: Reclamo\r\n\r\nTesto",
    ".html": b"<!doctype html><html><body>Risposta</body></html>",
    ".xml": b'\xef\xbb\xbf<?xml version="1.0"?><fattura/>',
    ".fods": FLAT + b'spreadsheet">',
    ".fodp": FLAT + b'presentation">',
    ".fodg": FLAT + b'graphics">',
    ".p7m": b"\x30\x82\x05\x10\x06\x09\x2a\x86\x48",
    ".docx": _zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"}),
    ".xlsx": _zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"}),
    ".pptx": _zip({"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"}),
    ".odt": _zip(
        {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"},
        stored_first="mimetype",
    ),
    ".ods": _zip(
        {"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": b"<x/>"},
        stored_first="mimetype",
    ),
    ".odp": _zip(
        {"mimetype": b"application/vnd.oasis.opendocument.presentation", "content.xml": b"<x/>"},
        stored_first="mimetype",
    ),
    ".odg": _zip(
        {"mimetype": b"application/vnd.oasis.opendocument.graphics", "content.xml": b"<x/>"},
        stored_first="mimetype",
    ),
}


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return path


def test_every_allowed_extension_has_a_sample() -> None:
    assert set(SAMPLES) == CONCILIATION_EXTENSIONS | HELPDESK_EXTENSIONS


@pytest.mark.parametrize("ext", sorted(SAMPLES))
def test_genuine_files_are_accepted(tmp_path: Path, ext: str) -> None:
    assert check_content(_write(tmp_path, SAMPLES[ext]), ext).ok


@pytest.mark.parametrize("ext", sorted(SAMPLES))
def test_a_renamed_executable_is_refused(tmp_path: Path, ext: str) -> None:
    executable = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 64
    verdict = check_content(_write(tmp_path, executable), ext)
    assert not verdict.ok and verdict.code == ErrorCode.FILE_CONTENT_MISMATCH


def test_a_docx_that_is_not_a_zip_or_lacks_its_parts(tmp_path: Path) -> None:
    assert (
        check_content(_write(tmp_path, b"PK\x03\x04 but broken"), ".docx").code
        == ErrorCode.FILE_CONTENT_MISMATCH
    )
    odt_as_docx = SAMPLES[".odt"]
    assert (
        check_content(_write(tmp_path, odt_as_docx), ".docx").code
        == ErrorCode.FILE_CONTENT_MISMATCH
    )
    assert (
        check_content(_write(tmp_path, SAMPLES[".ods"]), ".odt").code
        == ErrorCode.FILE_CONTENT_MISMATCH
    )


def test_zip_bomb_is_refused_without_decompressing(tmp_path: Path) -> None:
    bomb = _zip(
        {"[Content_Types].xml": b"<Types/>", "word/document.xml": b"\x00" * (30 * 1024 * 1024)}
    )
    assert len(bomb) < 100 * 1024
    verdict = check_content(_write(tmp_path, bomb), ".docx")
    assert not verdict.ok and verdict.code == ErrorCode.FILE_ARCHIVE_TOO_BIG


def test_zip_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    entries = {"[Content_Types].xml": b"<Types/>"} | {
        f"word/part{n}.xml": b"<p/>" for n in range(2100)
    }
    verdict = check_content(_write(tmp_path, _zip(entries)), ".docx")
    assert verdict.code == ErrorCode.FILE_ARCHIVE_TOO_BIG


def test_empty_file_and_binary_text(tmp_path: Path) -> None:
    assert check_content(_write(tmp_path, b""), ".pdf").code == ErrorCode.FILE_EMPTY
    assert (
        check_content(_write(tmp_path, b"abc\x00def"), ".txt").code
        == ErrorCode.FILE_CONTENT_MISMATCH
    )


@pytest.mark.parametrize("ext", [".exe", ".js", ".svg", ".zip", ".doc", ".wav", ".php", ""])
def test_refused_extensions_for_conciliation(ext: str) -> None:
    assert (
        check_extension(f"file{ext}", CONCILIATION_EXTENSIONS).code
        == ErrorCode.FILE_TYPE_NOT_ALLOWED
    )


def test_extensions_are_case_insensitive() -> None:
    assert check_extension("FATTURA.PDF", CONCILIATION_EXTENSIONS).ok
    assert check_extension("Reclamo.DocX", CONCILIATION_EXTENSIONS).ok
    assert not check_extension("reclamo.docx", frozenset({".doc"})).ok
    assert check_extension("registrazione.WAV", HELPDESK_EXTENSIONS).ok


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\mario\\bolletta.pdf", "bolletta.pdf"),
        ("bolletta\x00.pdf", "bolletta.pdf"),
        ("fattura\u202efdp.exe", "fatturafdp.exe"),  # right-to-left override removed
        ("  .hidden.txt  ", "hidden.txt"),
        ("a<b>c:d|e?.pdf", "a_b_c_d_e_.pdf"),
        ("", "document"),
        ("../", "document"),
        ("Reclamo n° 3 — risposta.pdf", "Reclamo n° 3 — risposta.pdf"),
    ],
)
def test_names_are_sanitized(raw: str, clean: str) -> None:
    assert sanitize_name(raw) == clean


def test_long_names_keep_their_extension() -> None:
    name = sanitize_name("x" * 400 + ".pdf")
    assert len(name) == 150 and extension(name) == ".pdf"
