"""A fuzzer (hypothesis) over what strangers send: uploaded files and their names, and the
payloads of the meeting room's Socket.IO events.

Each property says what the code under test must do with *any* input: answer with a verdict
or one of the project's own errors, never another exception, and within a deadline (no hang).
The upload validators get damaged copies of real samples of every accepted type (truncated,
overwritten, 1-byte, empty) besides random bytes; the payload checker gets arbitrary JSON
values, alone and under each event's own keys; and a real server receives such payloads from
a participant's Socket.IO client, whose every acknowledgement must be a documented answer.
"""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases.uploads import (
    CONCILIATION_EXTENSIONS,
    HELPDESK_EXTENSIONS,
    NAME_MAX,
    check_content,
    check_extension,
    extension,
    sanitize_name,
)
from core.errors import ErrorCode, ProtocolError
from signaling.protocol import EVENTS, NUMBER_MAX, check_payload
from tests.rooms_support import Meet, admitted
from web.streams import content_disposition

FAST = settings(
    max_examples=300,
    deadline=500,  # ms: a validator that takes longer on a few KiB is as good as hung
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
EXTENSIONS = sorted(CONCILIATION_EXTENSIONS | HELPDESK_EXTENSIONS)
REFUSALS = {ErrorCode.FILE_EMPTY, ErrorCode.FILE_CONTENT_MISMATCH, ErrorCode.FILE_ARCHIVE_TOO_BIG}


def _zip(entries: dict[str, bytes], *, utf8_names: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED
            if utf8_names:
                info.flag_bits |= 0x800  # the names say they are UTF-8
            archive.writestr(info, data)
    return buffer.getvalue()


def _odf(kind: str) -> bytes:
    mime = f"application/vnd.oasis.opendocument.{kind}".encode()
    return _zip({"mimetype": mime, "content.xml": b"<office:document-content/>" * 20})


def _ooxml(part: str) -> bytes:
    return _zip({"[Content_Types].xml": b"<Types/>" * 10, f"{part}document.xml": b"<w/>" * 50})


FLAT = b'<?xml version="1.0"?><office:document office:mimetype="application/vnd.oasis.opendocument.'
# One genuine-looking start of a file of each accepted type: the seeds the fuzzer damages.
SEEDS: dict[str, bytes] = {
    ".pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n",
    ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9",
    ".jpeg": b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xd9",
    ".png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06",
    ".bmp": b"BM6\x00\x00\x00\x00\x00\x00\x006\x00\x00\x00(\x00",
    ".tiff": b"II*\x00\x08\x00\x00\x00\x01\x00",
    ".mp3": b"\xff\xfb\x90\x64\x00\x00\x00\x00\x00\x00",
    ".wav": b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00",
    ".mwa": b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c",
    ".doc": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(24),
    ".xls": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(24),
    ".txt": "Gentile fornitore, è la terza volta che scrivo.\n".encode(),
    ".eml": b"From: mario@example.org\r\nSubject: Reclamo\r\n\r\nTesto",
    ".html": b"<!doctype html><html><body>Risposta</body></html>",
    ".xml": b'\xef\xbb\xbf<?xml version="1.0"?><fattura/>',
    ".fods": FLAT + b'spreadsheet">',
    ".fodp": FLAT + b'presentation">',
    ".fodg": FLAT + b'graphics">',
    ".p7m": b"\x30\x82\x05\x10\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02",
    ".docx": _ooxml("word/"),
    ".xlsx": _ooxml("xl/"),
    ".pptx": _ooxml("ppt/"),
    ".odt": _odf("text"),
    ".ods": _odf("spreadsheet"),
    ".odp": _odf("presentation"),
    ".odg": _odf("graphics"),
}


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A file of an accepted extension: a seed cut short, overwritten in places, or anything."""
    ext = draw(st.sampled_from(EXTENSIONS))
    data = SEEDS[ext]
    how = draw(st.sampled_from(["truncate", "overwrite", "one_byte", "random", "utf8_zip"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "overwrite":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            patch = draw(st.binary(min_size=1, max_size=8))
            data = data[:at] + patch + data[at + len(patch) :]
    elif how == "one_byte":
        data = data[:1] if draw(st.booleans()) else draw(st.binary(min_size=1, max_size=1))
    elif how == "utf8_zip":
        # Entry names that are not valid UTF-8 although the archive says they are.
        name = draw(st.binary(min_size=1, max_size=6)).decode("latin-1")
        data = _zip({"[Content_Types].xml": b"<T/>", name: b"x" * 10}, utf8_names=True)
        data = data.replace(name.encode(), b"\xff\xfe" + name.encode()[2:])
    else:
        data = draw(st.binary(max_size=300))
    return ext, data


@FAST
@given(sample=damaged())
def test_content_checks_answer_a_verdict_for_any_damaged_file(
    tmp_path: Path, sample: tuple[str, bytes]
) -> None:
    ext, data = sample
    path = tmp_path / f"upload{ext}"
    path.write_bytes(data)
    verdict = check_content(path, ext)
    if not data:
        assert verdict.code == ErrorCode.FILE_EMPTY
    assert verdict.ok or verdict.code in REFUSALS, verdict


def test_the_seeds_themselves_are_accepted(tmp_path: Path) -> None:
    """The fuzzer starts from files the checks accept (else it would only test refusals)."""
    for ext, data in SEEDS.items():
        path = tmp_path / f"seed{ext}"
        path.write_bytes(data)
        assert check_content(path, ext).ok, ext


def test_a_one_byte_mp3_frame_start_is_refused_not_a_crash(tmp_path: Path) -> None:
    """What the fuzzer found first: ``\\xff`` alone read the header's second byte."""
    path = tmp_path / "a.mp3"
    path.write_bytes(b"\xff")
    assert check_content(path, ".mp3").code == ErrorCode.FILE_CONTENT_MISMATCH


def test_the_sanitizer_joins_letters_and_marks_once_and_never_ends_a_cut_on_a_space() -> None:
    """The fuzzer's third and fourth finds: a combining mark after a removed joiner was
    composed only by a second pass, and the cut to ``NAME_MAX`` could end on a space."""
    assert sanitize_name("caff\u200de\u0301.pdf") == "caff\u00e9.pdf"
    cut = sanitize_name("a" * (NAME_MAX - 1) + " b")
    assert cut == "a" * (NAME_MAX - 1)


def test_an_office_zip_with_undecodable_names_is_refused_not_a_crash(tmp_path: Path) -> None:
    """The fuzzer's second find: a UTF-8-flagged entry name that is not UTF-8."""
    data = _zip({"[Content_Types].xml": b"<T/>", "word/x.xml": b"<w/>"}, utf8_names=True)
    path = tmp_path / "a.docx"
    path.write_bytes(data.replace(b"word/x.xml", b"\xfford/x.xml"))
    assert check_content(path, ".docx").code == ErrorCode.FILE_CONTENT_MISMATCH


def st_suffix(text: str) -> str:
    return ".pdf" if len(text) % 2 else ""


NAMES = st.one_of(
    st.text(max_size=400),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200).map(lambda t: t + ".pdf"),
    st.lists(
        st.sampled_from(["..", "/", "\\", ".", " ", "\u202e", "\u200d", "e", "\u0301", "a", "pdf"]),
        max_size=60,
    ).map("".join),
    # Long names: what is left at the cut to the longest name allowed.
    st.text(alphabet=" .abé\u0301", min_size=NAME_MAX - 10, max_size=NAME_MAX + 20).map(
        lambda t: t + st_suffix(t)
    ),
)


@FAST
@given(raw=NAMES)
def test_sanitized_names_are_safe_and_stable(raw: str) -> None:
    name = sanitize_name(raw)
    assert 0 < len(name) <= NAME_MAX
    assert "/" not in name and "\\" not in name
    assert not set(name) & set('<>:"|?*')
    assert name == name.strip(" ."), name
    assert all(c == " " or (not c.isspace() and c.isprintable()) for c in name), repr(name)
    assert sanitize_name(name) == name, (raw, name)  # sanitizing twice changes nothing
    if len(raw) <= NAME_MAX // 2 and extension(raw) and "/" not in raw and "\\" not in raw:
        assert extension(name) in {extension(raw), ""}
    check_extension(name, CONCILIATION_EXTENSIONS)
    header = content_disposition(name)
    assert "\r" not in header and "\n" not in header
    assert header.isascii()


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
BIG = st.integers(min_value=-(2**70), max_value=2**70)
UUIDS = st.uuids().map(str)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[str, Any]:
    """An event and a payload: any JSON, or the event's own keys with values of any kind."""
    event = draw(st.sampled_from(sorted(EVENTS)))
    model = EVENTS[event]
    if draw(st.booleans()):
        return event, draw(JSON)
    keys = list(model.model_fields)
    chosen = draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []
    value = st.one_of(JSON, BIG, UUIDS, st.text(min_size=1, max_size=30))
    data: dict[str, Any] = {key: draw(value) for key in chosen}
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.text(max_size=8))] = draw(JSON)
    return event, data


@FAST
@given(sample=payloads())
def test_every_event_payload_is_the_model_or_a_protocol_error(sample: tuple[str, Any]) -> None:
    event, data = sample
    try:
        payload = check_payload(EVENTS[event], data)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.BAD_REQUEST
        fields = exc.params["fields"]
        assert isinstance(fields, list) and fields and all(isinstance(f, str) for f in fields)
        return
    assert isinstance(payload, EVENTS[event])
    for value in payload.model_dump().values():
        if isinstance(value, int) and not isinstance(value, bool):
            assert 0 <= value <= NUMBER_MAX  # nothing the database cannot hold


# ---- through a real server ------------------------------------------------------------------


def drawn(count: int) -> list[tuple[str, Any]]:
    """``count`` payloads drawn by hypothesis (derandomized: the same every run)."""
    found: list[tuple[str, Any]] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None)
    @given(sample=payloads())
    def collect(sample: tuple[str, Any]) -> None:
        event, data = sample
        if event in {"close", "media_leave", "join"}:  # keep the party in the room
            return
        try:
            orjson.dumps(data)  # what a client's JSON can carry (no integer past 64 bits)
        except TypeError:
            return
        found.append(sample)

    collect()
    return found


async def test_a_participant_sending_fuzzed_payloads_gets_only_documented_answers(
    meet: Meet,
) -> None:
    """Every acknowledgement is ``ok`` or a documented error code, never ``internal``; the
    connection survives (sent at the allowed rate) and the room still works afterwards."""
    _chair, (party,) = await admitted(meet, meet.customer)
    codes = {code.value for code in ErrorCode} | {"media_elsewhere"}
    answers: dict[str, int] = {}
    for event, data in drawn(120):
        async with asyncio.timeout(10):  # a hang is a failure
            answer = await party.call(event, data)
        assert answer["ok"] or answer["error"]["code"] in codes, (event, data, answer)
        assert answer["ok"] or answer["error"]["code"] != ErrorCode.INTERNAL, (event, data)
        key = "ok" if answer["ok"] else answer["error"]["code"]
        answers[key] = answers.get(key, 0) + 1
        await asyncio.sleep(0.1)  # the allowed rate: this test is about payloads, not floods
    assert answers.get(ErrorCode.BAD_REQUEST.value, 0) > 10, answers
    for big in (2**31, 2**53, 2**63 - 1):  # past the database's integers: refused at the edge
        answer = await party.call("history", {"after": big})
        assert answer["error"]["code"] == ErrorCode.BAD_REQUEST, answer
        assert answer["error"]["params"]["fields"] == ["after"]
    said = await party.say("ancora qui")
    assert said["ok"], said


# Frames a hand-made client may send: JSON that does not parse, or not ``[name, ...]``.
MALFORMED_FRAMES = (
    '["say",1e400]',
    '["say",{"client_id":"a","text":"\\ud800"}]',
    "[",
    '"x"',
    "[{}]",
    "[1,2]",
    " 5",  # (a digit right after the ack id would be read as part of it)
    "",
    "[]",
    "[null]",
)


async def test_malformed_frames_get_bad_request_and_log_no_error(
    meet: Meet, caplog: pytest.LogCaptureFixture
) -> None:
    """Each malformed event frame is answered ``bad_request`` (it used to raise inside
    python-socketio, logging an error with its traceback each time, or to leave the client
    without an answer); the connection and the room go on."""
    _chair, (party,) = await admitted(meet, meet.customer)
    answers: list[Any] = []
    for body in MALFORMED_FRAMES:
        done = asyncio.Event()

        def answered(*args: Any, _done: asyncio.Event = done) -> None:
            answers.append(args[0] if args else None)
            _done.set()

        ack = party.sio._generate_ack_id("/meeting", answered)  # a raw frame with an ack id
        await party.sio.eio.send(f"2/meeting,{ack}{body}")
        await asyncio.wait_for(done.wait(), 5)
    assert [a["error"]["code"] for a in answers] == ["bad_request"] * len(MALFORMED_FRAMES)
    for frame in ("9garbage", "xgarbage", "2/meeting," + "1" * 120 + "[]"):
        await party.sio.eio.send(frame)  # not even an event: dropped
    said = await party.say("ancora qui")
    assert said["ok"], said
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
