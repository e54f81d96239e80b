"""Jinja2 rendering of mail templates: subject, text and HTML from one file per event kind.

Two environments share one loader: the HTML one autoescapes everything, the text one
escapes nothing. Admin templates in `templates_dir` shadow the built-in ones by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

import maild


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


class TemplateRenderer:
    def __init__(self, override_dir: Path | None = None):
        dirs = [str(override_dir)] if override_dir else []
        dirs.append(str(builtin_templates_dir()))
        loader = jinja2.FileSystemLoader(dirs)
        common = {"loader": loader, "undefined": jinja2.StrictUndefined, "keep_trailing_newline": False}
        self._text = jinja2.Environment(autoescape=False, **common)  # the plain-text part
        self._html = jinja2.Environment(autoescape=True, **common)

    def render(self, name: str, context: dict[str, Any]) -> RenderedMail:
        template = f"{name}.j2"
        subject = self._text.get_template(template).render(part="subject", **context)
        text = self._text.get_template(template).render(part="text", **context)
        html = self._html.get_template(template).render(part="html", **context)
        return RenderedMail(subject=" ".join(subject.split()), text=text.strip() + "\n", html=html)
