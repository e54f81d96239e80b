"""Every template rendered with sample data for every kind of recipient, so `check-config`
finds a broken one before a customer does."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import jinja2

from maild.config import Config
from maild.notify.render import TemplateRenderer

TEMPLATE_KINDS = ("case_created", "post_public", "post_internal", "case_updated", "command_errors", "forward",
                  "stage_changed", "queue_changed", "assigned", "tags_changed", "attachment_added",
                  "attachment_removed", "priority_changed", "due_changed", "sla_warning", "sla_breached", "closed",
                  "held_agent_mail")
RECIPIENT_KINDS = ("customer", "agent")


def sample_context(cfg: Config, recipient_kind: str = "customer") -> dict[str, Any]:
    mailbox = cfg.mailboxes[0].address if cfg.mailboxes else "support@example.com"
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    requester = SimpleNamespace(email="jane@acme.test", name="Jane Customer")
    organization = SimpleNamespace(name="Acme", domains=["acme.test"])
    tags = [SimpleNamespace(tag="vip"), SimpleNamespace(tag="printer")]
    case = SimpleNamespace(number=42, subject="Printer <b>on</b> fire", stage="open", queue="support",
                           priority="high", type="incident", assignee="alice@example.com", requester=requester,
                           organization=organization, tags=tags, created_at=now, updated_at=now, mailbox=mailbox)
    post = SimpleNamespace(author="jane@acme.test", author_kind="customer", visibility="public", created_at=now,
                           body="It <script>alert(1)</script> still burns.\nSecond line.", attachments=[])
    recipient = (SimpleNamespace(email="jane@acme.test", name="Jane Customer", kind="customer")
                 if recipient_kind == "customer" else
                 SimpleNamespace(email="alice@example.com", name="Alice Agent", kind="agent"))
    history = [SimpleNamespace(field="stage", old_value="new", new_value="open", actor="alice@example.com",
                               created_at=now)]
    changes = [{"kind": "stage_changed", "actor": "alice@example.com", "old": "open", "new": "pending"},
               {"kind": "tags_changed", "actor": "alice@example.com", "added": ["vip"], "removed": ["spam"]},
               {"kind": "assigned", "actor": "alice@example.com", "old": None, "new": "bob@example.com"}]
    errors = [SimpleNamespace(line=1, source="/frobnicate", reason="unknown command /frobnicate")]
    held = {"subject": "Re: [#42] Printer", "text": "Fixed it.\nAlice", "reason": "no agent token",
            "attachments": ["log.txt"]}
    return {"case": case, "requester": requester, "recipient": recipient, "mailbox": mailbox,
            "mailbox_name": "Support", "post": post, "changes": changes, "actor_name": "Alice Agent",
            "errors": errors, "posts": [post], "history": history, "held": held}


def render_all_templates(cfg: Config, renderer: TemplateRenderer | None = None) -> list[str]:
    """Problems of the built-in templates, the admin's overrides, and every template a rule's
    auto_reply names. With the daemon's own `renderer`, this also compiles every template before
    the first mail needs one."""
    override = cfg.path(cfg.templates_dir) if cfg.templates_dir else None
    if override is not None and not override.is_dir():
        return [f"{cfg.source}: templates_dir: {override} is not a folder"]
    if renderer is None:
        try:
            renderer = TemplateRenderer(override)
        except FileNotFoundError as e:
            return [f"{cfg.source}: templates: {e}"]
    problems = []
    auto_replies = [str(r.then["auto_reply"]) for r in cfg.rules if r is not None and r.then.get("auto_reply")]
    for kind in (*TEMPLATE_KINDS, *dict.fromkeys(auto_replies)):
        for recipient_kind in RECIPIENT_KINDS:
            try:
                renderer.render(kind, sample_context(cfg, recipient_kind))
            except jinja2.TemplateSyntaxError as e:
                problems.append(f"{e.filename or kind}:{e.lineno}: template syntax error: {e.message}")
                break
            except jinja2.TemplateNotFound as e:
                problems.append(f"{cfg.source}: template {e.name!r} not found in "
                                f"{override or 'the built-in templates'}")
                break
            except jinja2.TemplateError as e:
                problems.append(f"template {kind}.j2 (to a {recipient_kind}): {type(e).__name__}: {e}")
                break
    return list(dict.fromkeys(problems))  # a broken base template is one problem, not one per child
