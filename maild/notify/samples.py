"""Every template rendered with sample data, so `check-config` finds a broken one before a
customer does."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import jinja2

from maild.config import Config
from maild.notify.render import TemplateRenderer

TEMPLATE_KINDS = ("case_created",)


def sample_context(cfg: Config) -> dict[str, object]:
    mailbox = cfg.mailboxes[0].address if cfg.mailboxes else "support@example.com"
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    requester = SimpleNamespace(email="jane@acme.test", name="Jane Customer")
    case = SimpleNamespace(number=42, subject="Printer <b>on</b> fire", stage="new", queue="support",
                           priority="normal", type="question", assignee=None, requester=requester,
                           created_at=now, updated_at=now, mailbox=mailbox)
    return {"case": case, "requester": requester, "recipient": requester, "mailbox": mailbox,
            "mailbox_name": "Support"}


def render_all_templates(cfg: Config) -> list[str]:
    try:
        renderer = TemplateRenderer(cfg.path(cfg.templates_dir) if cfg.templates_dir else None)
    except FileNotFoundError as e:
        return [f"{cfg.source}: templates: {e}"]
    problems = []
    for kind in TEMPLATE_KINDS:
        try:
            renderer.render(kind, sample_context(cfg))
        except jinja2.TemplateSyntaxError as e:
            problems.append(f"{e.filename or kind}:{e.lineno}: template syntax error: {e.message}")
        except jinja2.TemplateError as e:
            problems.append(f"template {kind}.j2: {type(e).__name__}: {e}")
    return problems
