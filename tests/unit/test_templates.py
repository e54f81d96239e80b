"""Mail templates (SPEC §10) and mail HTML sanitizing (SPEC §11): every built-in template
renders for every kind of recipient into a one-line subject, plain text and well-formed,
autoescaped HTML; admin overrides replace built-ins and a broken one is reported."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from maild.config import Config
from maild.ingest.sanitize import sanitize_html
from maild.notify.render import RenderedMail, TemplateRenderer
from maild.notify.samples import RECIPIENT_KINDS, TEMPLATE_KINDS, render_all_templates, sample_context

# What goes to the customer side; post_internal and command_errors go to agents only, and a
# /forward is an agent's choice to share the case with whoever it names.
CUSTOMER_KINDS = ("case_created", "post_public", "case_updated")
AGENT_ADDRESS = "alice@example.com"  # the sample case's assignee and the actor of its changes
SCRIPT = "<script>alert(1)</script>"  # in the sample post body
BOLD = "<b>on</b>"  # in the sample case subject

VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                 "wbr"}


class WellFormedChecker(HTMLParser):
    """Fails on an end tag that does not close the innermost open element, and on elements
    left open at the end; void elements need no end tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, tuple[int, int]]] = []
        self.errors: list[str] = []
        self.doctype: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID_ELEMENTS:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <br/>: opens nothing

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_ELEMENTS:
            self.errors.append(f"line {self.getpos()[0]}: end tag of void element </{tag}>")
        elif not self.stack:
            self.errors.append(f"line {self.getpos()[0]}: </{tag}> closes nothing")
        elif self.stack[-1][0] != tag:
            open_tag, (line, _) = self.stack[-1]
            self.errors.append(f"line {self.getpos()[0]}: </{tag}> but <{open_tag}> of line {line} is open")
            if any(t == tag for t, _ in self.stack):  # recover: close up to the matching element
                while self.stack.pop()[0] != tag:
                    pass
        else:
            self.stack.pop()

    def check(self, markup: str) -> list[str]:
        self.feed(markup)
        self.close()
        return self.errors + [f"<{t}> of line {line} is never closed" for t, (line, _) in self.stack]


def html_problems(markup: str) -> list[str]:
    return WellFormedChecker().check(markup)


def test_the_checker_catches_mismatched_and_unclosed_tags() -> None:
    assert html_problems("<!DOCTYPE html><html><body><p>a<br>b<img src=x></p><hr></body></html>") == []
    assert html_problems("<div><p>a</div></p>")
    assert html_problems("<div><p>a</p>")
    assert html_problems("<p>a</p></p>")
    assert html_problems("<p>a<br></br></p>")


CASES = [(kind, recipient) for kind in TEMPLATE_KINDS for recipient in RECIPIENT_KINDS]


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], RenderedMail]:
    renderer = TemplateRenderer()
    return {(kind, recipient): renderer.render(kind, sample_context(Config(), recipient))
            for kind, recipient in CASES}


@pytest.mark.parametrize(("kind", "recipient"), CASES)
def test_the_subject_is_one_line_about_the_case(rendered: dict[tuple[str, str], RenderedMail], kind: str,
                                               recipient: str) -> None:
    subject = rendered[kind, recipient].subject
    assert subject.strip()
    assert subject.startswith("[#42]") or subject.startswith("Fwd: [#42]"), subject
    assert "\n" not in subject and "\r" not in subject
    assert subject == subject.strip()
    assert "Printer <b>on</b> fire" in subject  # a subject is plain text: nothing to escape


def test_forward_and_note_subjects_say_what_they_are(rendered: dict[tuple[str, str], RenderedMail]) -> None:
    assert rendered["forward", "agent"].subject.startswith("Fwd: [#42] ")
    assert rendered["post_internal", "agent"].subject.startswith("[#42] Note: ")


@pytest.mark.parametrize(("kind", "recipient"), CASES)
def test_the_html_part_is_a_well_formed_document(rendered: dict[tuple[str, str], RenderedMail], kind: str,
                                                recipient: str) -> None:
    html = rendered[kind, recipient].html
    checker = WellFormedChecker()
    assert checker.check(html) == []
    assert checker.doctype is not None and checker.doctype.lower() == "doctype html"
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert '<meta charset="utf-8">' in html
    assert "#42" in html


@pytest.mark.parametrize(("kind", "recipient"), CASES)
def test_the_html_part_escapes_the_subject_and_the_post(rendered: dict[tuple[str, str], RenderedMail], kind: str,
                                                       recipient: str) -> None:
    html = rendered[kind, recipient].html
    assert "<script" not in html.lower()
    assert BOLD not in html
    assert "Printer &lt;b&gt;on&lt;/b&gt; fire" in html  # in <title> at least
    if "still burns" in html:
        assert "It &lt;script&gt;alert(1)&lt;/script&gt; still burns." in html


@pytest.mark.parametrize(("kind", "recipient"), CASES)
def test_the_text_part_is_plain_text_and_not_escaped(rendered: dict[tuple[str, str], RenderedMail], kind: str,
                                                    recipient: str) -> None:
    text = rendered[kind, recipient].text
    assert "&lt;" not in text and "&gt;" not in text and "&amp;" not in text
    assert "<p>" not in text and "<html" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "Case #42" in text  # the signature of every mail


@pytest.mark.parametrize(("kind", "recipient"), [
    ("case_created", "agent"), ("post_public", "customer"), ("post_public", "agent"), ("post_internal", "agent"),
    ("forward", "customer"), ("forward", "agent"),
])
def test_the_post_is_shown_literally_in_the_text_part(rendered: dict[tuple[str, str], RenderedMail], kind: str,
                                                     recipient: str) -> None:
    assert f"It {SCRIPT} still burns.\nSecond line." in rendered[kind, recipient].text


def test_the_acknowledgement_shows_the_subject_literally_and_never_quotes_the_body(
        rendered: dict[tuple[str, str], RenderedMail]) -> None:
    ack = rendered["case_created", "customer"]
    assert BOLD in ack.text
    assert "still burns" not in ack.text and "still burns" not in ack.html
    assert "alert(1)" not in ack.text and "alert(1)" not in ack.html


@pytest.mark.parametrize("kind", CUSTOMER_KINDS)
def test_customer_mails_do_not_show_agent_addresses_or_internals(rendered: dict[tuple[str, str], RenderedMail],
                                                                 kind: str) -> None:
    mail = rendered[kind, "customer"]
    for part in (mail.subject, mail.text, mail.html):
        assert AGENT_ADDRESS not in part
        assert "internal" not in part.lower()
        assert "#note" not in part and "/stage" not in part  # no agent command hints


def test_agent_mails_say_who_changed_what(rendered: dict[tuple[str, str], RenderedMail]) -> None:
    for kind in ("post_public", "case_updated"):
        mail = rendered[kind, "agent"]
        assert f"(by {AGENT_ADDRESS})" in mail.text
        assert f"(by {AGENT_ADDRESS})" in mail.html


def test_an_internal_note_renders_for_an_agent_and_says_it_is_internal(
        rendered: dict[tuple[str, str], RenderedMail]) -> None:
    note = rendered["post_internal", "agent"]
    assert "(internal)" in note.text
    assert "<em>(internal)</em>" in note.html
    assert "#public" in note.text  # replies to a note stay internal unless marked


def test_command_errors_name_the_line_and_the_reason(rendered: dict[tuple[str, str], RenderedMail]) -> None:
    mail = rendered["command_errors", "agent"]
    assert "line 1: /frobnicate" in mail.text
    assert "unknown command /frobnicate" in mail.text
    assert "<code>/frobnicate</code>" in mail.html


# --- check-config and overrides -------------------------------------------------------------

def test_the_built_in_templates_have_no_problems() -> None:
    assert render_all_templates(Config()) == []


def test_a_broken_override_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "post_public.j2").write_text(
        '{% extends "layout.j2" %}\n{% block text %}\n{% if %}\nHello\n{% endblock %}\n')
    problems = render_all_templates(Config(templates_dir="tpl", base_dir=tmp_path))
    assert len(problems) == 1, problems
    assert "post_public.j2:3:" in problems[0]
    assert "template syntax error" in problems[0]


def test_an_unclosed_block_in_an_override_is_reported(tmp_path: Path) -> None:
    (tmp_path / "case_updated.j2").write_text(
        '{% extends "layout.j2" %}\n{% block text %}\n{% if recipient %}\nHello\n{% endblock %}\n')
    problems = render_all_templates(Config(templates_dir=str(tmp_path)))
    assert len(problems) == 1, problems
    assert "case_updated.j2:" in problems[0]


def test_an_override_that_fails_to_render_is_reported_with_the_recipient_kind(tmp_path: Path) -> None:
    (tmp_path / "forward.j2").write_text(
        '{% extends "layout.j2" %}\n{% block text %}{{ case.no_such_field }}{% endblock %}\n')
    problems = render_all_templates(Config(templates_dir=str(tmp_path)))
    assert len(problems) == 1, problems
    assert "forward.j2" in problems[0]
    assert "customer" in problems[0]
    assert "no_such_field" in problems[0]


CUSTOM_CASE_CREATED = """\
{% extends "layout.j2" %}
{% block text %}Thanks, {{ recipient.name }}! We filed it as case {{ case.number }}.{% endblock %}
{% block html %}<p>Thanks, <em>{{ recipient.name }}</em>! We filed <q>{{ case.subject }}</q>.</p>{% endblock %}
"""


def test_an_override_replaces_the_built_in_template(tmp_path: Path) -> None:
    (tmp_path / "case_created.j2").write_text(CUSTOM_CASE_CREATED)
    assert render_all_templates(Config(templates_dir=".", base_dir=tmp_path)) == []

    renderer = TemplateRenderer(tmp_path)
    mail = renderer.render("case_created", sample_context(Config(), "customer"))
    assert mail.subject == "[#42] Printer <b>on</b> fire"  # the layout's subject block
    assert mail.text.startswith("Thanks, Jane Customer! We filed it as case 42.\n")
    assert "we have received" not in mail.text
    assert "Support <support@localhost>" in mail.text  # the built-in layout around it
    assert "<p>Thanks, <em>Jane Customer</em>! We filed <q>Printer &lt;b&gt;on&lt;/b&gt; fire</q>.</p>" in mail.html
    assert html_problems(mail.html) == []

    other = renderer.render("post_public", sample_context(Config(), "customer"))
    assert other == TemplateRenderer().render("post_public", sample_context(Config(), "customer"))


def test_an_override_sets_its_own_subject_from_its_own_variables(tmp_path: Path) -> None:
    # the subject block is rendered with the text part: it sees the template's top-level sets
    # and the layout's block through super()
    (tmp_path / "case_created.j2").write_text(
        '{% extends "layout.j2" %}\n{% set urgent = "fire" in case.subject.lower() %}\n'
        "{% block subject %}{{ super() }}{% if urgent %} (urgent){% endif %}{% endblock %}\n"
        "{% block text %}{% if urgent %}We are on it.{% endif %}{% endblock %}\n"
        "{% block html %}<p>{% if urgent %}We are on it.{% endif %}</p>{% endblock %}\n")
    mail = TemplateRenderer(tmp_path).render("case_created", sample_context(Config(), "customer"))
    assert mail.subject == "[#42] Printer <b>on</b> fire (urgent)"
    assert mail.text.startswith("We are on it.\n")
    assert "<p>We are on it.</p>" in mail.html


def test_an_admin_layout_is_used_for_every_part(tmp_path: Path) -> None:
    (tmp_path / "layout.j2").write_text(
        '{%- if part == "subject" -%}{% block subject %}Case {{ case.number }}: {{ case.subject }}{% endblock %}\n'
        '{%- elif part == "text" -%}{% block text %}{% endblock %}\n\nAcme Help Desk\n'
        "{%- else -%}<!DOCTYPE html><html><body>{% block html %}{% endblock %}<p>Acme Help Desk</p></body></html>"
        "{%- endif -%}\n")
    mail = TemplateRenderer(tmp_path).render("case_created", sample_context(Config(), "customer"))
    assert mail.subject == "Case 42: Printer <b>on</b> fire"
    assert mail.text.startswith("Hello Jane Customer,") and mail.text.endswith("\n\nAcme Help Desk\n")
    assert mail.html.endswith("<p>Acme Help Desk</p></body></html>") and html_problems(mail.html) == []


def test_an_admin_layout_without_a_subject_block_still_gives_the_subject(tmp_path: Path) -> None:
    (tmp_path / "layout.j2").write_text(
        '{%- if part == "subject" -%}Acme case {{ case.number }}'
        '{%- elif part == "text" -%}{% block text %}{% endblock %}'
        "{%- else -%}<!DOCTYPE html><html><body>{% block html %}{% endblock %}</body></html>{%- endif -%}\n")
    mail = TemplateRenderer(tmp_path).render("post_public", sample_context(Config(), "agent"))
    assert mail.subject == "Acme case 42"
    assert "still burns" in mail.text and "Acme case" not in mail.text


# --- sanitize_html ------------------------------------------------------------------------

def test_scripts_and_their_content_are_removed() -> None:
    out = sanitize_html("<p>Hello<script>alert(document.cookie)</script> world</p><SCRIPT src=x.js></SCRIPT>")
    assert "script" not in out.lower()
    assert "alert" not in out
    assert "Hello" in out and "world" in out


def test_event_handlers_are_removed() -> None:
    out = sanitize_html('<div onmouseover="steal()"><a href="https://x.test/" onclick="steal()">x</a>'
                        '<img src="cid:logo" onerror="steal()"><body onload="steal()">t</div>')
    assert "steal" not in out
    assert not re.search(r"\son\w+\s*=", out, re.IGNORECASE), out
    assert 'src="cid:logo"' in out


@pytest.mark.parametrize("href", ["javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)",
                                  "jav&#x09;ascript:alert(1)", "vbscript:msgbox(1)"])
def test_script_links_are_neutralized(href: str) -> None:
    out = sanitize_html(f'<a href="{href}">click</a>')
    assert "script:" not in out.lower()
    assert "alert" not in out and "msgbox" not in out
    assert "click" in out


@pytest.mark.parametrize("img", [
    '<img src="http://tracker.test/pixel.gif" alt="a">',
    '<img src="https://tracker.test/pixel.gif" alt="a">',
    '<img src="HTTPS://tracker.test/pixel.gif" alt="a">',
    '<img src="//tracker.test/pixel.gif" alt="a">',
    '<img srcset="https://tracker.test/a.png 1x, https://tracker.test/b.png 2x" alt="a">',
    '<img src="cid:logo" srcset="https://tracker.test/b.png 2x" alt="a">',
])
def test_remote_images_are_dropped(img: str) -> None:
    out = sanitize_html(f"<p>{img}</p>")
    assert "tracker.test" not in out
    assert "<p>" in out


@pytest.mark.parametrize("src", ["cid:part1.ABC@example.com", "data:image/png;base64,iVBORw0KGgo="])
def test_inline_and_embedded_images_stay(src: str) -> None:
    out = sanitize_html(f'<p><img src="{src}" alt="logo"></p>')
    assert f'src="{src}"' in out
    assert 'alt="logo"' in out


def test_a_data_url_that_is_not_an_image_is_no_image() -> None:
    out = sanitize_html('<img src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">')
    assert "data:" not in out


def test_ordinary_links_stay_with_rel_noopener() -> None:
    out = sanitize_html('<p>See <a href="https://example.com/docs?a=1&amp;b=2">the docs</a> or '
                        '<a href="mailto:help@example.com">mail us</a>.</p>')
    assert 'href="https://example.com/docs?a=1&amp;b=2"' in out
    assert 'href="mailto:help@example.com"' in out
    assert out.count('rel="noopener noreferrer"') == 2
    assert "the docs" in out and "mail us" in out


def test_harmless_markup_stays() -> None:
    markup = "<p>Hello <b>bold</b> and <i>italic</i></p><ul><li>one</li></ul>"
    assert sanitize_html(markup) == markup


def test_data_urls_are_not_kept_in_links() -> None:
    out = sanitize_html('<a href="data:text/html,<script>alert(1)</script>">open</a>')
    assert "data:" not in out


def test_missing_templates_dir_and_missing_auto_reply_template_are_reported(tmp_path: Path) -> None:
    from maild.config import RuleConfig

    missing = Config(templates_dir="no-such-folder", base_dir=tmp_path)
    (problem,) = render_all_templates(missing)
    assert "templates_dir" in problem and "no-such-folder" in problem
    rule = RuleConfig(name="vip", then={"auto_reply": "vip_welcome"})
    (problem,) = render_all_templates(Config(rules=[rule]))
    assert "'vip_welcome.j2' not found" in problem
