"""A template's variables as plain data: written to the outbox row by the commit, read back by
the outbox worker that renders the mail (SPEC §10; issue 22 §5).

The commit must not hand the worker live ORM objects (they belong to its session and change
after it), so a case, a contact, a post, a history entry or a command error becomes a record of
its values as they were at commit. Templates read a record as they read the object
(`case.number`, `t.tag`, `h.created_at.strftime(...)`): records are SimpleNamespaces, datetimes
come back as aware datetimes. Plain dicts (`changes`, `held`, `case.fields`) stay dicts.

JSON with tags: `{"$r": {...}, "$k": "Case"}` is a record, `{"$t": "ISO time"}` a datetime.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import inspect as sa_inspect

from maild.store.models import Attachment, Case, CaseTag, Contact, HistoryEntry, Organization, Post

RECORD = "$r"
KIND = "$k"
TIME = "$t"


def _time(value: datetime | None) -> dict[str, str] | None:
    return None if value is None else {TIME: value.isoformat()}


def _record(kind: str = "Record", **fields: Any) -> dict[str, Any]:
    return {RECORD: fields, KIND: kind}


class Record(SimpleNamespace):
    """A model object's values; a subclass per kind names it in a template's error
    ("'…Contact object' has no attribute 'nmae'")."""


_KINDS: dict[str, type[Record]] = {}


def _record_class(kind: str) -> type[Record]:
    if kind not in _KINDS:
        _KINDS[kind] = type(kind, (Record,), {"__module__": __name__})
    return _KINDS[kind]


def _loaded(obj: object, name: str) -> bool:
    """Whether a relationship is in memory: one not loaded costs a query, and only templates
    of the admin's own could read it."""
    return name not in sa_inspect(obj).unloaded


def _contact(c: Contact | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return _record("Contact", email=c.email, name=c.name, type=c.type, state=c.state, fields=plain(c.fields or {}))


def _organization(o: Organization | None) -> dict[str, Any] | None:
    if o is None:
        return None
    domains = [d.domain for d in o.domains] if _loaded(o, "domains") else []
    return _record("Organization", name=o.name, type=o.type, fields=plain(o.fields or {}), domains=domains)


def _attachment(a: Attachment) -> dict[str, Any]:
    return _record("Attachment", filename=a.filename, content_type=a.content_type, size=a.size, sha256=a.sha256,
                   inline=a.inline, removed_at=_time(a.removed_at))


def _post(p: Post) -> dict[str, Any]:
    return _record("Post", id=p.id, author=p.author, author_kind=p.author_kind, visibility=p.visibility,
                   source=p.source, body=p.body, created_at=_time(p.created_at),
                   attachments=[_attachment(a) for a in p.attachments])


def _case(c: Case) -> dict[str, Any]:
    return _record(
        "Case", number=c.number, subject=c.subject, mailbox=c.mailbox, queue=c.queue, stage=c.stage, type=c.type,
        priority=c.priority, assignee=c.assignee, contract=c.contract, linked_case=c.linked_case,
        root_cause=c.root_cause, closed_reason=c.closed_reason, fields=plain(c.fields or {}),
        requester=_contact(c.requester), organization=_organization(c.organization),
        tags=[_record("CaseTag", tag=t.tag) for t in c.tags],
        created_at=_time(c.created_at), updated_at=_time(c.updated_at), due_at=_time(c.due_at),
        first_response_due_at=_time(c.first_response_due_at), first_response_at=_time(c.first_response_at),
        resolved_at=_time(c.resolved_at), snoozed_until=_time(c.snoozed_until))


def _history(h: HistoryEntry) -> dict[str, Any]:
    return _record("HistoryEntry", field=h.field, old_value=h.old_value, new_value=h.new_value, actor=h.actor,
                   via=h.via, rule=h.rule, created_at=_time(h.created_at))


_CONVERTERS: dict[type, Any] = {Case: _case, Contact: _contact, Organization: _organization, Post: _post,
                                Attachment: _attachment, HistoryEntry: _history,
                                CaseTag: lambda t: _record("CaseTag", tag=t.tag)}


def plain(value: Any) -> Any:
    """`value` as JSON-ready data in the tagged form above."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    convert = _CONVERTERS.get(type(value))
    if convert is not None:
        return convert(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return _record(type(value).__name__, **fields)
    if isinstance(value, SimpleNamespace):
        return _record(type(value).__name__, **{k: plain(v) for k, v in vars(value).items()})
    return str(value)


def dump_context(context: Mapping[str, Any]) -> str:
    """A template's variables (the recipient apart) as the outbox row's `context`."""
    return json.dumps(plain(context), ensure_ascii=False, separators=(",", ":"))


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and RECORD in obj and KIND in obj:
        return _record_class(obj[KIND])(**obj[RECORD])
    if len(obj) == 1 and TIME in obj:
        return datetime.fromisoformat(obj[TIME])
    return obj


def load_context(text: str) -> dict[str, Any]:
    """The variables dump_context wrote, as templates read them."""
    context: dict[str, Any] = json.loads(text, object_hook=_decode)
    return context
