"""Is a mail fit to travel? A byte-by-byte check of what maild hands to a relay (issue 20 §3).

Relays that forbid bare newlines (Postfix `smtpd_forbid_bare_newline = reject`, set against
SMTP smuggling), break lines over 998 octets or refuse 8-bit bytes the envelope did not
announce lose or garble a mail that a lenient test sink would take. The test sink runs
`wire_problems` on every mail it catches, so any test that makes maild send a mail also checks
it; the problems are sentences a person can act on, naming the line and the header.
"""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
import os
import re
from collections.abc import Iterable
from email.message import Message
from pathlib import Path

MAX_LINE = 998  # octets, not counting CRLF (RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6)
REQUIRED_ONCE = ("From", "Date", "Message-ID")  # RFC 5322 §3.6; Message-ID: SPEC §4, threading needs it
AT_MOST_ONCE = ("Sender", "Reply-To", "To", "Cc", "Bcc", "In-Reply-To", "References", "Subject")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # printable ASCII but the colon (RFC 5322 §3.6.8)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # a header may hold HT, no other control
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
NUL = b"\x00"
_SHOWN = 5  # problems of one kind shown before "and N more"


def wire_problems(raw: bytes, mail_options: Iterable[str] = ()) -> list[str]:
    """What is wrong with `raw` as it travels after DATA (dot-unstuffed, final CRLF included),
    sent with the MAIL FROM parameters `mail_options` (e.g. ["SMTPUTF8", "BODY=8BITMIME"]).
    An empty list: every relay takes it as it is."""
    options = {o.upper() for o in mail_options}
    smtputf8 = "SMTPUTF8" in options
    body_8bit = smtputf8 or "BODY=8BITMIME" in options
    problems: list[str] = []
    if not raw:
        return ["the mail is empty"]
    if NUL in raw:
        problems.append(f"a NUL octet at offset {raw.index(NUL)}")

    lines = raw.split(b"\r\n")
    if lines[-1]:
        problems.append(f"the last line does not end in CRLF: {_show(lines[-1])}")
    else:
        lines.pop()
    head_end = next((i for i, line in enumerate(lines) if line == b""), None)
    if head_end is None:
        problems.append("no empty line ends the header section")
        head_end = len(lines)

    bare_lf: list[str] = []
    bare_cr: list[str] = []
    too_long: list[str] = []
    field = ""  # the header a line belongs to, for the problems' wording
    for number, line in enumerate(lines, 1):
        in_head = number <= head_end
        if in_head and line and line[:1] not in b" \t":
            field = line.split(b":", 1)[0].decode("ascii", "replace")
        where = f"line {number} ({field} header)" if in_head else f"line {number} (body)"
        if b"\n" in line:
            bare_lf.append(f"{where}: {_show(line)}")
        if b"\r" in line:
            bare_cr.append(f"{where}: {_show(line)}")
        if len(line) > MAX_LINE:
            too_long.append(f"{where} has {len(line)} octets: {_show(line[:60])}...")
    _report(problems, "a bare LF (a line break without CR)", bare_lf)
    _report(problems, "a bare CR (not followed by LF)", bare_cr)
    _report(problems, f"a line longer than {MAX_LINE} octets", too_long)

    head = lines[:head_end]
    problems += _header_lines(head, smtputf8)
    body = b"\r\n".join(lines[head_end + 1:])
    eight_bit = _EIGHT_BIT.search(body)
    if eight_bit and not body_8bit:
        problems.append(f"8-bit octets in the body (first at body offset {eight_bit.start()}) but the envelope "
                        f"announced neither BODY=8BITMIME nor SMTPUTF8 (options: {sorted(options) or 'none'})")
    problems += _parsed(raw, smtputf8)
    return list(dict.fromkeys(problems))  # a defect the parser finds in each token is said once


def _header_lines(head: list[bytes], smtputf8: bool) -> list[str]:
    """Field names, folding, control characters and 8-bit octets, line by line."""
    problems: list[str] = []
    for number, line in enumerate(head, 1):
        if line[:1] in (b" ", b"\t"):
            if number == 1:
                problems.append(f"header line 1 starts with white space, continuing nothing: {_show(line)}")
            elif not line.strip(b" \t"):
                problems.append(f"header line {number} is a folded line of white space only (RFC 5322 §3.2.2)")
        else:
            name, colon, _ = line.partition(b":")
            if not colon:
                problems.append(f"header line {number} is neither a field (no colon) nor a continuation "
                                f"(does not start with SP or HT): {_show(line)}")
            elif not _FIELD_NAME.fullmatch(name):
                problems.append(f"header line {number}: field name {name!r} is not printable ASCII without colon")
        if _CONTROL.search(line.replace(b"\r", b"").replace(b"\n", b"")):  # CR and LF: reported above
            problems.append(f"header line {number} holds a control character: {_show(line)}")
        if _EIGHT_BIT.search(line):
            if not smtputf8:
                problems.append(f"header line {number} holds raw 8-bit octets but the envelope did not use "
                                f"SMTPUTF8 (RFC 6532 needs it; else RFC 2047 encoded words): {_show(line)}")
            else:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    problems.append(f"header line {number} holds 8-bit octets that are not UTF-8: {_show(line)}")
    return problems


def _parsed(raw: bytes, smtputf8: bool) -> list[str]:
    """What the standard library's parser finds: defects of the message and of every header of
    every MIME part, and the fields RFC 5322 wants once. With SMTPUTF8 the mail is read as UTF-8
    text (BytesParser would read raw UTF-8 as undecodable bytes) under policy.SMTPUTF8."""
    if smtputf8:
        msg = email.parser.Parser(policy=email.policy.SMTPUTF8).parsestr(raw.decode("utf-8", "surrogateescape"))
    else:
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    problems: list[str] = []
    for part_number, part in enumerate(msg.walk()):
        where = "" if part_number == 0 else f"MIME part {part_number}: "
        problems += [f"{where}{type(d).__name__}: {d}" for d in part.defects]
        for name, value in part.items():
            for defect in getattr(value, "defects", ()):
                if smtputf8 and isinstance(defect, email.errors.NonASCIILocalPartDefect):
                    continue  # an internationalized address: exactly what SMTPUTF8 carries
                problems.append(f"{where}{name} header: {type(defect).__name__}: {defect} in {str(value)!r}")
    problems += _counts(msg)
    return problems


def _counts(msg: Message) -> list[str]:
    names = [n.lower() for n in msg]
    problems = [f"{n} header appears {names.count(n.lower())} times; it must appear once"
                for n in REQUIRED_ONCE if names.count(n.lower()) != 1]
    problems += [f"{n} header appears {names.count(n.lower())} times; at most once is allowed"
                 for n in AT_MOST_ONCE if names.count(n.lower()) > 1]
    return problems


def _report(problems: list[str], kind: str, found: list[str]) -> None:
    if not found:
        return
    more = f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    problems.append(f"{kind} on {len(found)} line(s): " + "; ".join(found[:_SHOWN]) + more)


def _show(line: bytes) -> str:
    return repr(line[:120]) + ("..." if len(line) > 120 else "")


def maildir_problems(root: Path) -> list[str]:
    """Every mail in the Maildirs under `root` (a folder holding cur/, new/ and tmp/), checked
    as it would travel: one paragraph per faulty file. maild's Maildir transport writes the wire
    form with Return-Path and Delivered-To in front and keeps no envelope, so the file is checked
    as if sent with SMTPUTF8: raw UTF-8 headers pass (as long as they are UTF-8), 8-bit bodies
    do not."""
    problems: list[str] = []
    for folder, dirs, _files in os.walk(root):
        if not {"cur", "new", "tmp"} <= set(dirs):
            continue
        for sub in ("new", "cur"):
            for path in sorted((Path(folder) / sub).iterdir()):
                raw = path.read_bytes()
                found = wire_problems(raw, ["SMTPUTF8"])
                if _EIGHT_BIT.search(raw.partition(b"\r\n\r\n")[2]):
                    found.append("8-bit octets in the body: maild's bodies travel as quoted-printable or base64")
                if found:
                    problems.append(f"{path}:\n" + "\n".join(f"    - {p}" for p in found))
    return problems
