"""The private names of other packages maild relies on are still there (issue 22 §6).

aiosmtpd's public API cannot read DATA in blocks and spool it to disk (ingest.smtp), so
pyproject pins it to the minor version tested, and this test names each private attribute
that disappears or changes shape in an upgrade, before a mail meets it. (SQLAlchemy's
private names that store.rows read are gone: it uses the public API since issue 22.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP

from maild.ingest.smtp import MaildSMTP

# aiosmtpd.smtp.SMTP, as ingest.smtp.MaildSMTP uses it: name -> what maild does with it
AIOSMTPD_METHODS = {
    "_set_post_data_state": "resets the envelope after DATA (MaildSMTP.smtp_DATA)",
    "_call_handler_hook": "calls the handler's handle_DATA (MaildSMTP.smtp_DATA)",
    "_timeout_cb": "the idle timeout, extended while a DATA is arriving (MaildSMTP._timeout_cb)",
    "_reset_timeout": "re-arms the idle timeout (MaildSMTP._timeout_cb)",
    "_getaddr": "the full address parser, behind the fast path (MaildSMTP._getaddr)",
}
AIOSMTPD_INSTANCE = {
    "_reader": "the session's StreamReader, read in blocks by ingest.smtp_data",
    "_writer": "the session's StreamWriter, closed when the connection is lost during DATA",
    "_original_transport": "None until STARTTLS: the session gate counts a session once",
    "_timeout_duration": "the idle timeout in seconds (MaildSMTP._timeout_cb)",
}


def _missing(owner: object, names: dict[str, str]) -> list[str]:
    return [f"{name} ({why})" for name, why in names.items() if not hasattr(owner, name)]


def test_aiosmtpd_smtp_still_has_the_private_methods_maild_overrides_or_calls() -> None:
    missing = _missing(SMTP, AIOSMTPD_METHODS)
    assert not missing, "aiosmtpd.smtp.SMTP lacks private names maild relies on: " + "; ".join(missing)
    for name in AIOSMTPD_METHODS:
        assert callable(getattr(SMTP, name)), f"aiosmtpd.smtp.SMTP.{name} is no longer a method"
    assert asyncio.iscoroutinefunction(SMTP._call_handler_hook), "aiosmtpd's _call_handler_hook is no longer async"
    for name in ("__smtp_syntax__", "__smtp_syntax_extended__"):
        assert hasattr(SMTP.smtp_MAIL, name), f"aiosmtpd.smtp.SMTP.smtp_MAIL lacks {name} (MaildSMTP.smtp_MAIL)"


@pytest.fixture
def session() -> Iterator[tuple[MaildSMTP, asyncio.AbstractEventLoop]]:
    """A MaildSMTP attached to one end of a socket pair, as a server attaches it to a
    connection it accepted, without listening anywhere."""
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()

    class Handler:
        pass

    async def attach() -> MaildSMTP:
        _, proto = await loop.connect_accepted_socket(lambda: MaildSMTP(Handler(), hostname="pins.test"), ours)
        assert isinstance(proto, MaildSMTP)
        return proto

    proto = loop.run_until_complete(attach())
    try:
        yield proto, loop
    finally:
        proto.transport.close()  # type: ignore[union-attr]
        theirs.close()
        loop.run_until_complete(asyncio.sleep(0.05))
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_an_aiosmtpd_session_still_has_the_private_attributes_maild_reads(
        session: tuple[MaildSMTP, asyncio.AbstractEventLoop]) -> None:
    proto, _ = session
    missing = _missing(proto, AIOSMTPD_INSTANCE)
    assert not missing, "an aiosmtpd session lacks private names maild relies on: " + "; ".join(missing)
    assert isinstance(proto._reader, asyncio.StreamReader), "aiosmtpd's _reader is no longer a StreamReader"
    assert isinstance(proto._writer, asyncio.StreamWriter), "aiosmtpd's _writer is no longer a StreamWriter"
    # asyncio's StreamReader has no setter for its buffer limit: MaildSMTP raises it for DATA
    assert isinstance(getattr(proto._reader, "_limit", None), int), \
        "asyncio.StreamReader._limit is gone (MaildSMTP.smtp_DATA raises the limit for DATA)"
    assert proto._reader._limit == MaildSMTP.line_length_limit
