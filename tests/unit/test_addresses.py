"""Which addresses maild keeps and writes (maild.headers): plain, internationalized (RFC 6531),
and the forms they travel in (issue 20 §2)."""

from __future__ import annotations

import pytest

from maild.headers import ascii_address, idna_domain, is_mail_address, is_plain_address, normalize_address


@pytest.mark.parametrize("address", [
    "jane@acme.test", "first.last+tag@mail.acme.test", "jiří@příklad.example", "jiri@příklad.example",
    "δοκιμή@παράδειγμα.δοκιμή", "用户@例子.广告", "почта@пример.рф", "joerg@faß.de",
])
def test_mail_addresses(address: str) -> None:
    assert is_mail_address(address)


@pytest.mark.parametrize("address", [
    "jiří dvořák@příklad.example",  # a space
    'jiří"@příklad.example', "ji<ří@x.test", "jiří,x@x.test", "jiří@x.test>",  # specials that end an address
    "jiří\r\n@x.test", "jiří\u2028@x.test", "jiří\x85@x.test",  # line breaks, C1
    "jiří@příklad..example", "jiří@", "@příklad.example", "jiří", "jiří@-příklad.example",
    "ü" * 250 + "@x.test",  # 500 octets: beyond the path limit
])
def test_not_mail_addresses(address: str) -> None:
    assert not is_mail_address(address)


def test_ascii_forms() -> None:
    assert ascii_address("jiri@příklad.example") == "jiri@xn--pklad-zsa96e.example"
    assert ascii_address("jane@acme.test") == "jane@acme.test"
    assert ascii_address("jiří@příklad.example") is None  # reached with SMTPUTF8 only
    assert idna_domain("faß.de") == "xn--fa-hia.de"  # IDNA 2008: not fass.de
    assert idna_domain("příklad..example") is None
    assert is_plain_address("jiri@xn--pklad-zsa96e.example") and not is_plain_address("jiri@příklad.example")


@pytest.mark.parametrize(("written", "kept"), [
    ("Jiří@Příklad.Example", "jiří@příklad.example"),
    ("jiří@XN--PKLAD-ZSA96E.example", "jiří@příklad.example"),  # as an MTA may rewrite the domain
    ("jiri@xn--pklad-zsa96e.example", "jiri@příklad.example"),
    ("ji\u0301ri@x.test", "jíri@x.test"),  # NFD from one client, NFC from another: one contact
    ("a@xn--zz.test", "a@xn--zz.test"),  # not valid IDNA: kept as written
    ("Jane@ACME.test", "jane@acme.test"),
])
def test_one_mailbox_one_form(written: str, kept: str) -> None:
    assert normalize_address(written) == kept
