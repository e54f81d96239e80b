"""Contacts as an admin manages them (SPEC §7): add and change them with every value checked,
tag them with colors, write internal notes, and find them again by segment.

Mail creates contacts through maild.store.contacts; this module is the deliberate side (the
CLI and CSV import share its checks). Functions never commit: the command owns the transaction.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from maild.config import Config
from maild.crm.fields import FieldValueError, field_spec, parse_field_value
from maild.crm.organizations import (
    CrmError,
    check_type,
    get_organization,
    missing_required,
    set_fields,
)
from maild.domain.stages import OPEN_STAGES
from maild.headers import is_mail_address, normalize_address
from maild.store.contacts import ensure_organization
from maild.store.models import Case, CaseParticipant, Contact, ContactNote, ContactTag, Organization

# Stricter than the config's address check: an import must not let "jane@acme" or "a b@c.d" in.
EMAIL_RE = re.compile(r"^(?!\.)(?!.*\.\.)[^@\s<>\"(),;:\[\]\\]{1,64}(?<!\.)@"
                      r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][\w-]{0,62}$")
TAG_RE = re.compile(r"^[^\W_][\w\-.]{0,127}$")  # like case tags, but ':' introduces the color
COLOR_RE = re.compile(r"^(?:#[0-9a-f]{3}|#[0-9a-f]{6}|[a-z]{3,20})$")
STATES = ("active", "inactive", "bouncing")
SET_STATES = ("active", "inactive")  # "bouncing" is set by bounces, not by hand


def normalize_email(value: str) -> str:
    email = normalize_address(value.strip())
    if not EMAIL_RE.match(email) or not is_mail_address(email):  # what a header can carry (RFC 6531 included)
        raise CrmError(f"{value.strip()!r} is not an email address")
    return email


def parse_tag(text: str) -> tuple[str, str | None]:
    """'vip:red' -> ('vip', 'red'); colors are a CSS name or #rgb / #rrggbb."""
    tag, _, color = text.strip().partition(":")
    tag, color = tag.strip().lower(), color.strip().lower()
    if not TAG_RE.match(tag):
        raise CrmError(f"{tag!r} is not a tag (letters, digits, '-', '_' and '.', a letter or digit first)")
    if color and not COLOR_RE.match(color):
        raise CrmError(f"tag {tag!r}: {color!r} is not a color (a name like 'red', or #rgb / #rrggbb)")
    return tag, color or None


def get_contact(session: Session, email: str) -> Contact:
    contact = session.scalars(select(Contact).where(Contact.email == email.strip().lower())).first()
    if contact is None:
        raise CrmError(f"no contact {email.strip()!r}")
    return contact


def add_tag(contact: Contact, tag: str, color: str | None) -> None:
    """Adds a tag or, given a color, recolors the one the contact has."""
    existing = next((t for t in contact.tags if t.tag == tag), None)
    if existing is None:
        contact.tags.append(ContactTag(tag=tag, color=color))
    elif color:
        existing.color = color


def change_tags(contact: Contact, words: Iterable[str]) -> list[str]:
    """Applies '+tag[:color]' / '-tag' / 'tag' words, all or none; returns what changed."""
    plan = []
    for word in words:
        sign, text = (word[0], word[1:]) if word[:1] in "+-" and word else ("+", word)
        plan.append((sign, *parse_tag(text)))
    done = []
    for sign, tag, color in plan:
        if sign == "+":
            add_tag(contact, tag, color)
            done.append(f"+{tag}" + (f":{color}" if color else ""))
            continue
        existing = next((t for t in contact.tags if t.tag == tag), None)
        if existing is None:
            raise CrmError(f"{contact.email} has no tag {tag!r}")
        contact.tags.remove(existing)
        done.append(f"-{tag}")
    return done


def add_contact(session: Session, cfg: Config, email: str, *, name: str = "", org: str | None = None,
                type_: str | None = None, fields: Iterable[tuple[str, str]] = (), tags: Iterable[str] = (),
                now: datetime) -> Contact:
    email = normalize_email(email)
    if session.scalars(select(Contact.id).where(Contact.email == email)).first():
        raise CrmError(f"contact {email} already exists (change it with 'maild contact set')")
    values = set_fields(cfg.contact_fields, {}, fields)
    missing = missing_required(cfg.contact_fields, values)
    if missing:
        raise CrmError(f"field {missing[0]!r} is required (give --field {missing[0]} VALUE)")
    organization = (get_organization(session, org) if org
                    else ensure_organization(session, email.rpartition("@")[2], cfg.organizations, now))
    contact = Contact(email=email, name=name.strip(), organization=organization, state="active", fields=values,
                      type=check_type(cfg, type_) if type_ else None, created_at=now)
    for t in tags:
        add_tag(contact, *parse_tag(t))
    session.add(contact)
    session.flush()
    return contact


def update_contact(session: Session, cfg: Config, contact: Contact, *, name: str | None = None,
                   type_: str | None = None, state: str | None = None,
                   fields: Iterable[tuple[str, str]] = (), org: str | None = None) -> None:
    """Changes what is given; `org` moves the contact ('none' takes it out of its organization)."""
    if state is not None and state.strip().lower() not in SET_STATES:
        raise CrmError(f"state {state!r} is not one of {', '.join(SET_STATES)}")
    new_fields = set_fields(cfg.contact_fields, contact.fields, fields)
    if org is not None:
        contact.organization = None if org.strip().lower() in ("", "none") else get_organization(session, org)
    if name is not None:
        contact.name = name.strip()
    if type_ is not None:
        contact.type = check_type(cfg, type_) if type_.strip() else None
    if state is not None:
        contact.state = state.strip().lower()
    contact.fields = new_fields
    session.flush()


def add_note(contact: Contact, author: str, body: str, now: datetime) -> ContactNote:
    if not body.strip():
        raise CrmError("a note needs text")
    note = ContactNote(author=author, body=body.strip(), created_at=now)
    contact.notes.append(note)
    return note


# --- segments ----------------------------------------------------------------------------

FILTER_KEYS = ("org", "tag", "state", "type", "field", "last_mail_before", "last_mail_after", "open_cases_min")


def parse_when(value: object, what: str) -> datetime:
    """A date (its midnight, UTC) or an ISO datetime (UTC when it names no zone)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise CrmError(f"{what}: {value!r} is not a date (write YYYY-MM-DD)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass
class ContactFilter:
    """What `maild contact list` and `export` keep; every constraint must hold.

    `last_mail_before` D keeps contacts whose last mail came before D's midnight, `after` D those
    whose last mail came at or after it; contacts that never wrote match neither."""

    orgs: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    states: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    last_mail_before: datetime | None = None
    last_mail_after: datetime | None = None
    open_cases_min: int | None = None

    def merged(self, other: ContactFilter) -> ContactFilter:
        """Both filters at once (a saved segment plus options given on the command line)."""
        before = [d for d in (self.last_mail_before, other.last_mail_before) if d]
        after = [d for d in (self.last_mail_after, other.last_mail_after) if d]
        counts = [n for n in (self.open_cases_min, other.open_cases_min) if n is not None]
        return ContactFilter(self.orgs + other.orgs, self.tags + other.tags, {**self.fields, **other.fields},
                             self.states + other.states, self.types + other.types,
                             min(before) if before else None, max(after) if after else None,
                             max(counts) if counts else None)


def filter_from(values: dict[str, Any], where: str = "") -> ContactFilter:
    """A filter from a segment's `filters` table (or the CLI's options in the same shape)."""
    def listed(key: str) -> list[str]:
        v = values.get(key)
        if v is None:
            return []
        return [str(x) for x in v] if isinstance(v, list | tuple) else [str(v)]

    unknown = sorted(set(values) - set(FILTER_KEYS))
    if unknown:
        raise CrmError(f"{where}unknown filter {unknown[0]!r} (filters: {', '.join(FILTER_KEYS)})")
    fields = values.get("field") or {}
    if not isinstance(fields, dict):
        raise CrmError(f"{where}field: expected a table of field = value, got {fields!r}")
    states = [s.lower() for s in listed("state")]
    bad = [s for s in states if s not in STATES]
    if bad:
        raise CrmError(f"{where}state {bad[0]!r} is not one of {', '.join(STATES)}")
    flt = ContactFilter(orgs=listed("org"), tags=[t.lower() for t in listed("tag")],
                        fields={str(k): "" if v is None else str(v) for k, v in fields.items()},
                        states=states, types=listed("type"))
    for key in ("last_mail_before", "last_mail_after"):
        if values.get(key) not in (None, ""):
            label = f"{where}{key}" if where else f"--{key.replace('_', '-')}"
            setattr(flt, key, parse_when(values[key], label))
    if values.get("open_cases_min") is not None:
        try:
            flt.open_cases_min = int(values["open_cases_min"])
        except (TypeError, ValueError):
            raise CrmError(f"{where}open_cases_min: {values['open_cases_min']!r} is not a number") from None
    return flt


def check_segment_configs(cfg: Config) -> list[str]:
    """The saved segments' filters ([[segments]]), as `maild check-config` reports them
    (composed by maild.config_checks)."""
    problems = []
    for i, segment in enumerate(cfg.segments):
        if segment is None:
            continue
        try:
            filter_from(dict(segment.filters), f"segments[{i}] ({segment.name!r}).filters: ")
        except CrmError as e:
            problems.append(str(e))
    return problems


def segment_filter(cfg: Config, name: str) -> ContactFilter:
    segment = next((s for s in cfg.segments if s is not None and s.name.casefold() == name.casefold()), None)
    if segment is None:
        known = ", ".join(s.name for s in cfg.segments if s is not None) or "none configured"
        raise CrmError(f"no segment {name!r} (segments: {known})")
    return filter_from(dict(segment.filters), f"segment {segment.name!r}: ")


def select_contacts(session: Session, cfg: Config, flt: ContactFilter) -> list[Contact]:
    q = select(Contact).options(selectinload(Contact.tags),
                                selectinload(Contact.organization).selectinload(Organization.domains))
    for ref in flt.orgs:
        q = q.where(Contact.organization_id == get_organization(session, ref).id)
    for tag in flt.tags:
        q = q.where(Contact.tags.any(ContactTag.tag == tag))
    if flt.states:
        q = q.where(Contact.state.in_(flt.states))
    for t in flt.types:
        q = q.where(Contact.type == check_type(cfg, t))
    if flt.last_mail_before:
        q = q.where(Contact.last_mail_at < flt.last_mail_before)
    if flt.last_mail_after:
        q = q.where(Contact.last_mail_at >= flt.last_mail_after)
    if flt.open_cases_min is not None and flt.open_cases_min > 0:
        busy = (select(Case.requester_id).where(Case.stage.in_(OPEN_STAGES)).group_by(Case.requester_id)
                .having(func.count() >= flt.open_cases_min))
        q = q.where(Contact.id.in_(busy))
    wanted = {}
    for name, raw in flt.fields.items():
        try:
            spec = field_spec(cfg.contact_fields, name.strip().lower())
            wanted[spec.name] = parse_field_value(dataclasses.replace(spec, required=False), raw)
        except FieldValueError as e:
            raise CrmError(str(e)) from None
    # Field values are JSON, compared in Python: the same on SQLite and PostgreSQL, and typed.
    return [c for c in session.scalars(q.order_by(Contact.email))
            if all((c.fields or {}).get(k) == v for k, v in wanted.items())]


# --- views -------------------------------------------------------------------------------

def open_case_counts(session: Session) -> dict[int, int]:
    return dict(session.execute(select(Case.requester_id, func.count()).where(Case.stage.in_(OPEN_STAGES))
                                .group_by(Case.requester_id)).all())


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def contact_summary(c: Contact, open_cases: int = 0) -> dict[str, Any]:
    org = c.organization
    return {"email": c.email, "name": c.name, "type": c.type, "state": c.state,
            "organization": {"name": org.name, "domains": [d.domain for d in org.domains]} if org else None,
            "tags": [{"tag": t.tag, "color": t.color} for t in c.tags], "fields": c.fields or {},
            "last_mail_at": _time(c.last_mail_at), "open_cases": open_cases}


def contact_detail(session: Session, c: Contact) -> dict[str, Any]:
    """Everything `maild contact show` prints: the contact, its notes and its cases."""
    own = session.scalars(select(Case).where(Case.requester_id == c.id)).all()
    cc = session.scalars(select(Case).join(CaseParticipant, CaseParticipant.case_number == Case.number)
                         .where(CaseParticipant.contact_id == c.id)).all()
    cases = sorted([(x, "requester") for x in own] + [(x, "participant") for x in cc if x not in own],
                   key=lambda pair: pair[0].number)
    data = contact_summary(c, sum(1 for x in own if x.stage in OPEN_STAGES))
    data["created_at"] = _time(c.created_at)
    data["notes"] = [{"author": n.author, "body": n.body, "created_at": _time(n.created_at)} for n in c.notes]
    data["cases"] = [{"number": x.number, "subject": x.subject, "stage": x.stage, "role": role}
                     for x, role in cases]
    return data
