"""A spooled large mail parses to the same mail as the ordinary parse, while its large
attachments go from the file straight into the store; what the walk cannot follow falls back
to the ordinary parse, and broken base64 is a parse error (quarantine), never a crash."""

from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path

import pytest

from maild.domain.errors import ParseError
from maild.domain.message import InboundMessage
from maild.ingest import large_mail
from maild.ingest.parse import parse_message, parse_stored
from maild.store.blobs import BlobStore

RNG = random.Random(5)
PDF = b"%PDF-1.7\n" + RNG.randbytes(600_000) + b"\n%%EOF\n"
ZIP = b"PK\x03\x04" + RNG.randbytes(400_000)


def b64(data: bytes, eol: str) -> str:
    return base64.encodebytes(data).decode().replace("\n", eol)


def thunderbird_with_attachments(eol: str = "\r\n", closing: bool = True, pdf: bytes = PDF) -> bytes:
    """Thunderbird: multipart/mixed, text in multipart/alternative, two attachments, one of
    them inside an attached folder of its own (multipart/mixed with a filename)."""
    text = ("Dobrý den,\r\nposílám výpis a fotky. Lines below start with a dot:\r\n.\r\n..done\r\n"
            "--outer-b-more is not a boundary of ours: a longer one that begins like it.\r\n")
    parts = [
        "--outer-b\r\nContent-Type: multipart/alternative; boundary=\"alt-b\"\r\n\r\n"
        "--alt-b\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + text +
        "--alt-b\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "<html><body><p>Dobrý den,</p><p>posílám výpis.</p></body></html>\r\n--alt-b--\r\n\r\n",
        "--outer-b\r\nContent-Type: application/pdf; name=\"vypis-účtu.pdf\"\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''v%C3%BDpis-%C3%BA%C4%8Dtu.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + b64(pdf, "\r\n"),
        "--outer-b\r\nContent-Type: multipart/mixed; boundary=\"inner-b\"; name=\"folder\"\r\n"
        "Content-Disposition: attachment; filename=\"folder\"\r\n\r\n"
        "--inner-b\r\nContent-Type: application/zip; name=\"logs.zip\"\r\n"
        "Content-Disposition: attachment; filename=\"logs.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b64(ZIP, "\r\n") + "--inner-b\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n"
        "Content-Disposition: attachment; filename=\"notes.txt\"\r\n\r\n" + "note line\r\n" * 40_000 +
        "--inner-b--\r\n",
    ]
    head = ("From: =?UTF-8?Q?Tere=C5=BEa_Nov=C3=A1kov=C3=A1?= <tereza@firma.test>\r\n"
            "To: support@example.com\r\nSubject: =?UTF-8?Q?V=C3=BDpis_=C3=BA=C4=8Dtu?=\r\n"
            "Message-ID: <3f1c-large@firma.test>\r\nDate: Tue, 01 Dec 2026 09:12:00 +0100\r\n"
            "User-Agent: Mozilla Thunderbird\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"outer-b\"\r\n\r\n"
            "This is a multi-part message in MIME format.\r\n")
    mail = head + "".join(parts) + ("--outer-b--\r\n" if closing else "")
    return mail.replace("\r\n", eol).encode()


def single_part_pdf(pdf: bytes = PDF) -> bytes:
    """A scanner's mail: the whole message is the PDF."""
    return ("From: scanner@office.test\r\nTo: support@example.com\r\nSubject: Scan\r\n"
            "Message-ID: <scan-1@office.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: application/pdf; name=\"scan.pdf\"\r\n"
            "Content-Disposition: attachment; filename=\"scan.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + b64(pdf, "\r\n")).encode()


def both_ways(raw: bytes, tmp_path: Path, held: bool = False) -> tuple[InboundMessage, InboundMessage, BlobStore]:
    """The ordinary parse, and parse_stored of the mail spooled to a file (or held in memory)."""
    store = BlobStore(tmp_path / "attachments")
    if held:
        return parse_message(raw), parse_stored(raw, store), store
    spool = tmp_path / "smtp-1.eml"
    spool.write_bytes(raw)
    return parse_message(raw), parse_stored(spool, store), store


def assert_same_mail(whole: InboundMessage, large: InboundMessage, store: BlobStore) -> None:
    assert large.raw_mail.data == b"" and large.sha256 == whole.sha256 and large.size == whole.size
    for name in ("message_id", "sender", "to", "subject", "text", "html", "headers", "in_reply_to"):
        assert getattr(large, name) == getattr(whole, name), name
    assert len(large.attachments) == len(whole.attachments)
    for a, b in zip(whole.attachments, large.attachments, strict=True):
        assert (b.filename, b.content_type, b.sha256, b.size, b.inline) == \
               (a.filename, a.content_type, a.sha256, a.size, a.inline)
        assert b.data is None or b.data == a.data
        if b.data is None:
            assert store.get(b.sha256) == a.data


@pytest.mark.parametrize("held", [False, True], ids=["spooled", "held"])
@pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])
def test_large_attachments_are_stored_while_read_and_the_mail_is_the_same(eol: str, held: bool,
                                                                         tmp_path: Path) -> None:
    whole, large, store = both_ways(thunderbird_with_attachments(eol), tmp_path, held)
    assert_same_mail(whole, large, store)
    by_name = {a.filename: a for a in large.attachments}
    assert by_name["výpis-účtu.pdf"].data is None  # taken out of the file into the store
    assert by_name["notes.txt"].data is not None  # a text part stays: it may be a body too
    assert by_name["logs.zip"].data is not None  # inside an attached folder, which keeps its parts
    assert by_name["výpis-účtu.pdf"].sha256 == hashlib.sha256(PDF).hexdigest()


@pytest.mark.parametrize("held", [False, True], ids=["spooled", "held"])
def test_a_mail_that_is_one_large_attachment(held: bool, tmp_path: Path) -> None:
    whole, large, store = both_ways(single_part_pdf(), tmp_path, held)
    assert_same_mail(whole, large, store)
    assert large.attachments[0].data is None


def test_without_closing_boundary_the_whole_mail_is_parsed_the_ordinary_way(tmp_path: Path) -> None:
    raw = thunderbird_with_attachments(closing=False)
    assert large_mail.skeleton_of(_spooled(raw, tmp_path), BlobStore(tmp_path / "a")) is None
    whole, large, store = both_ways(raw, tmp_path)
    assert_same_mail(whole, large, store)


def test_broken_base64_in_a_large_attachment_is_a_parse_error(tmp_path: Path) -> None:
    raw = single_part_pdf(PDF[:600_000]) + b"Q\r\n"  # no padding, one character past the last quantum
    with pytest.raises(ParseError, match=r"scan\.pdf.*cannot be decoded"):
        parse_stored(_spooled(raw, tmp_path), BlobStore(tmp_path / "attachments"))
    with pytest.raises(ParseError, match=r"scan\.pdf.*cannot be decoded"):
        parse_stored(raw, BlobStore(tmp_path / "attachments"))
    with pytest.raises(ParseError, match="cannot be decoded"):
        parse_message(raw)
    assert not any(p.is_file() for p in (tmp_path / "attachments").rglob("*"))  # no half blob left


def _spooled(raw: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "smtp-x.eml"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parent.parent / "eml").glob("*.eml")))
def test_every_client_mail_parses_the_same_held_and_taken_apart(name: str, tmp_path: Path) -> None:
    raw = (Path(__file__).parent.parent / "eml" / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    try:
        whole = parse_message(raw)
    except ParseError:
        with pytest.raises(ParseError):
            parse_stored(raw, BlobStore(tmp_path / "a"))
        return
    assert_same_mail(whole, parse_stored(raw, BlobStore(tmp_path / "a")), BlobStore(tmp_path / "a"))
