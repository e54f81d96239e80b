"""A queued mail as data, and that data made into the mail's bytes (issue 22 §5).

The commit that changes a case writes, per recipient, the template's name (the row's `kind`),
its variables (notify.mailcontext) and the headers' values decided then: recipient, From,
Reply-To with its token, the VERP return path, In-Reply-To and References, the Message-ID and
the date. Nothing is rendered in the commit, so a template that fails cannot cost the mail
that set it off. The outbox worker calls build_mail just before sending; a failure there is
that row's (notify.outbox marks it failed with the error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from maild.notify.audiences import Recipient
from maild.notify.compose import compose_mail
from maild.notify.mailcontext import load_context
from maild.notify.render import SharedRenders, TemplateRenderer
from maild.store.blobs import BlobStore


@dataclass
class Headers:
    """What compose_mail needs besides the rendered parts, the Message-ID and the date."""

    to: str  # as written (the row's recipient is lowercased)
    to_name: str
    to_kind: str  # customer | agent: the template's recipient.kind
    mail_from: str  # the From address (a mailbox)
    from_name: str
    reply_to: str
    in_reply_to: str | None
    references: list[str]
    auto_submitted: str | None
    attachments: list[tuple[str, str, str]] = field(default_factory=list)  # file name, type, sha256

    def as_json(self) -> dict[str, Any]:
        return {"to": self.to, "to_name": self.to_name, "to_kind": self.to_kind, "from": self.mail_from,
                "from_name": self.from_name, "reply_to": self.reply_to, "in_reply_to": self.in_reply_to,
                "references": self.references, "auto_submitted": self.auto_submitted,
                "attachments": [list(a) for a in self.attachments]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Headers:
        return cls(to=data["to"], to_name=data["to_name"], to_kind=data["to_kind"], mail_from=data["from"],
                   from_name=data["from_name"], reply_to=data["reply_to"], in_reply_to=data["in_reply_to"],
                   references=list(data["references"]), auto_submitted=data["auto_submitted"],
                   attachments=[(a[0], a[1], a[2]) for a in data.get("attachments", [])])


class QueuedMail(Protocol):
    """An outbox row as the worker claims it (store.outbox.Claimed) or as a model."""

    kind: str
    message_id: str
    context: str | None
    headers: dict[str, Any] | None
    created_at: datetime | None


class MailNotBuilt(Exception):
    """The mail's template failed, or an attachment of it is gone: the row fails with this."""


def build_mail(row: QueuedMail, renderer: TemplateRenderer | SharedRenders, attachments: BlobStore) -> bytes:
    """The mail's bytes as the commit that queued it would have written them (its date is the
    commit's); MailNotBuilt says why not. The same row gives the same bytes while the templates
    stay the same: a retry sends the same mail."""
    assert row.context is not None and row.headers is not None and row.created_at is not None
    h = Headers.from_json(row.headers)
    context = load_context(row.context)
    context["recipient"] = Recipient(h.to, h.to_name, h.to_kind)
    try:
        if isinstance(renderer, SharedRenders):
            rendered = renderer.render(row.kind, context, key=row.context)
        else:
            rendered = renderer.render(row.kind, context)
    except Exception as e:
        raise MailNotBuilt(f"template {row.kind}.j2 failed to render: {type(e).__name__}: {e}") from e
    files = []
    for filename, content_type, sha256 in h.attachments:
        try:
            files.append((filename, content_type, attachments.get(sha256)))
        except OSError as e:
            raise MailNotBuilt(f"attachment {filename!r} ({sha256}) could not be read: {e}") from e
    try:
        return compose_mail(
            mail_from=h.mail_from, from_name=h.from_name, to=h.to, to_name=h.to_name, reply_to=h.reply_to,
            subject=rendered.subject, text=rendered.text, html=rendered.html, message_id=row.message_id,
            in_reply_to=h.in_reply_to, references=h.references, now=row.created_at,
            auto_submitted=h.auto_submitted, attachments=files, boundary_seed=row.message_id)
    except ValueError as e:
        raise MailNotBuilt(f"mail not composed: {e}") from e
