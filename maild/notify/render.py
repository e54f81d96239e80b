"""Jinja2 rendering of mail templates: subject, text and HTML from one file per event kind.

Two environments share one loader: the HTML one autoescapes everything, the text one
escapes nothing. Admin templates in `templates_dir` shadow the built-in ones by name. The
template contract is in the README (Templates).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

import maild
from maild.headers import clean_subject


def builtin_templates_dir() -> Path:
    """`maild/templates` in an installed wheel, `templates/` beside the package in a checkout."""
    for candidate in (Path(maild.__file__).parent / "templates",
                      Path(maild.__file__).parent.parent / "templates"):
        if (candidate / "layout.j2").exists():
            return candidate
    raise FileNotFoundError("maild's templates folder is missing from the installation")


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


class _Environment(jinja2.Environment):
    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as a plain dict rather than Jinja's ChainMap over the
        environment's: every render and import copies or compares them, and a ChainMap does
        that in Python. maild never changes an environment's globals after creating it."""
        return {**self.globals, **(d or {})}


class TemplateRenderer:
    """Renders a template in two passes: the text environment's (which also gives the subject,
    its `subject` block rendered in the same context) and the HTML environment's.

    Templates are read once (no `auto_reload`): a changed admin template takes effect with
    the next Runtime, which SIGHUP builds.
    """

    def __init__(self, override_dir: Path | None = None):
        dirs = [str(override_dir)] if override_dir else []
        dirs.append(str(builtin_templates_dir()))
        loader = jinja2.FileSystemLoader(dirs)
        common = {"loader": loader, "undefined": jinja2.StrictUndefined, "keep_trailing_newline": False,
                  "auto_reload": False, "cache_size": -1}  # -1: a plain dict, no LRU bookkeeping
        self._text = _Environment(autoescape=False, **common)  # the plain-text part
        self._html = _Environment(autoescape=True, **common)
        self._templates: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}

    def _compiled(self, name: str) -> tuple[jinja2.Template, jinja2.Template]:
        pair = self._templates.get(name)
        if pair is None:
            template = f"{name}.j2"
            pair = self._templates[name] = (self._text.get_template(template), self._html.get_template(template))
        return pair

    def preload(self) -> None:
        """Compiles every template in the folders now (one that does not compile fails when a
        mail needs it), so that later changes to the files wait for a new renderer."""
        for name in self._text.list_templates(extensions=["j2"]):
            try:
                self._compiled(name.removesuffix(".j2"))
            except jinja2.TemplateError:
                continue

    def render(self, name: str, context: dict[str, Any]) -> RenderedMail:
        text_template, html_template = self._compiled(name)
        ctx = text_template.new_context({**context, "part": "text"})
        try:
            text = "".join(text_template.root_render_func(ctx))
            subject_block = ctx.blocks.get("subject")
            subject = "".join(subject_block[0](ctx)) if subject_block else None
        except Exception:
            self._text.handle_exception()  # raises, with the template's file and line in the traceback
        if subject is None:  # a layout of the admin's own without a subject block
            subject = text_template.render(**{**context, "part": "subject"})
        html = html_template.render(**{**context, "part": "html"})
        # One line whatever the template or case.subject held: no line break, no control (SPEC §11).
        return RenderedMail(subject=clean_subject(subject), text=text.strip() + "\n", html=html)


_UNREAD = object()  # an attribute the recipient lacks


class _Watched:
    """The recipient as a template sees it, noting which attributes the template reads.
    Any other use of the object (printing, comparing it) makes the render its own."""

    __slots__ = ("_read", "_target", "_whole")  # underscored: a template reads the recipient's own names

    def __init__(self, target: object):
        self._target = target
        self._read: dict[str, object] = {}
        self._whole = False

    def __getattr__(self, name: str) -> object:
        try:
            value = getattr(self._target, name)
        except AttributeError:
            self._read[name] = _UNREAD
            raise
        self._read[name] = value
        return value

    def _used_whole(self) -> object:
        self._whole = True
        return self._target

    def __str__(self) -> str:
        return str(self._used_whole())

    def __repr__(self) -> str:
        return repr(self._used_whole())

    def __format__(self, spec: str) -> str:
        return format(self._used_whole(), spec)

    def __eq__(self, other: object) -> bool:
        return self._used_whole() == other

    def __hash__(self) -> int:
        return hash(self._used_whole())


class SharedRenders:
    """The mails of one fan-out that would read alike render once.

    Several agents often get the same notification: the same template and context but for
    the recipient, of whom the template reads only the kind. Each render notes what it read
    of its recipient (a template is a function of its context); a later mail of the same
    template, with an equal rest of the context and a recipient equal in what was read, gets
    the same subject, text and HTML. The Reply-To token, which differs, is not rendered."""

    def __init__(self, renderer: TemplateRenderer):
        self._renderer = renderer
        self._done: list[tuple[str, object, dict[str, object], RenderedMail]] = []

    def render(self, name: str, context: dict[str, Any], key: str | None = None) -> RenderedMail:
        """`key`: what stands for the rest of the context in comparisons (the outbox row's
        context as stored, which is equal exactly when the context is)."""
        recipient = context["recipient"]
        rest = {k: v for k, v in context.items() if k != "recipient"}
        same: object = rest if key is None else key
        for done_name, done_rest, read, rendered in self._done:
            if done_name == name and done_rest == same and \
                    all(getattr(recipient, k, _UNREAD) == v for k, v in read.items()):
                return rendered
        watched = _Watched(recipient)
        rendered = self._renderer.render(name, {**rest, "recipient": watched})
        if not watched._whole:
            self._done.append((name, same, watched._read, rendered))
        return rendered
