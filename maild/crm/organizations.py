"""Organizations as an admin manages them (SPEC §7): found by a domain or a name, several
domains each, a domain in one organization only, custom fields checked on every write.

Mail creates organizations through maild.store.contacts; this module is the deliberate side
(the CLI and CSV import). Functions never commit: the command owns the transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from maild.config import Config, OrganizationsConfig
from maild.crm.fields import FieldValueError, field_spec, parse_field_value
from maild.domain.stages import OPEN_STAGES
from maild.store.models import Case, Contact, Organization, OrganizationDomain

DOMAIN_RE = re.compile(r"^(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][\w-]{0,62}$")
CHUNK = 500  # values per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


class CrmError(ValueError):
    """A request refused with a reason a person can act on (the CLI prints it as is)."""


def looks_like_domain(value: str) -> bool:
    return bool(DOMAIN_RE.match(value.strip().lower()))


def normalize_domain(value: str) -> str:
    domain = value.strip().lower().strip(".").removeprefix("@")
    if not looks_like_domain(domain):
        raise CrmError(f"{value!r} is not a domain name")
    return domain


def chunks(values: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def find_organization(session: Session, ref: str) -> Organization | None:
    """The organization a person means by `ref`: one of its domains, else its name (any case)."""
    ref = ref.strip()
    if looks_like_domain(ref):
        org = session.scalars(select(Organization).join(OrganizationDomain)
                              .where(OrganizationDomain.domain == ref.lower().strip("."))).first()
        if org is not None:
            return org
    found = session.scalars(select(Organization).where(func.lower(Organization.name) == ref.lower())
                            .order_by(Organization.id)).all()
    if len(found) > 1:
        raise CrmError(f"{len(found)} organizations are named {ref!r}; name one by a domain")
    return found[0] if found else None


def get_organization(session: Session, ref: str) -> Organization:
    org = find_organization(session, ref)
    if org is None:
        raise CrmError(f"no organization {ref!r} (a domain or a name; see 'maild org list')")
    return org


def check_type(cfg: Config, value: str) -> str:
    """A contact or organization type from `[contacts] types`, in the configured spelling."""
    match = next((t for t in cfg.contacts.types if t.casefold() == value.strip().casefold()), None)
    if match is None:
        raise CrmError(f"type {value!r} is not one of {', '.join(cfg.contacts.types)}")
    return match


def set_fields(specs: list, current: dict, pairs: Iterable[tuple[str, str]]) -> dict:
    """A new fields dict with `pairs` applied, each parsed by its declared type; "" removes."""
    result = dict(current or {})
    for name, raw in pairs:
        try:
            value = parse_field_value(field_spec(specs, name.strip().lower()), raw)
        except FieldValueError as e:
            raise CrmError(str(e)) from None
        if value is None:
            result.pop(name.strip().lower(), None)
        else:
            result[name.strip().lower()] = value
    return result


def missing_required(specs: list, fields: dict) -> list[str]:
    return [f.name for f in specs if f.required and fields.get(f.name) in (None, "")]


def _claim_domain(session: Session, org: Organization, domain: str, settings: OrganizationsConfig) -> None:
    domain = normalize_domain(domain)
    if domain in {d.domain for d in org.domains}:
        raise CrmError(f"{domain} is already a domain of {org.name!r}")
    if domain in {d.lower() for d in settings.free_mail_domains}:
        raise CrmError(f"{domain} is a free-mail domain: its senders are not one organization "
                       "(remove it from [organizations] free_mail_domains to allow this)")
    owner = session.scalars(select(OrganizationDomain).where(OrganizationDomain.domain == domain)).first()
    if owner is not None:
        raise CrmError(f"domain {domain} already belongs to organization {owner.organization.name!r}")
    org.domains.append(OrganizationDomain(domain=domain))


def add_organization(session: Session, cfg: Config, name: str, domains: Iterable[str], type_: str | None,
                     fields: Iterable[tuple[str, str]], now: datetime) -> Organization:
    name = name.strip()
    if not name:
        raise CrmError("an organization needs a name")
    if session.scalars(select(Organization.id).where(func.lower(Organization.name) == name.lower())).first():
        raise CrmError(f"organization {name!r} already exists")
    org = Organization(name=name, created_at=now, fields=set_fields(cfg.org_fields, {}, fields),
                       type=check_type(cfg, type_) if type_ else None)
    missing = missing_required(cfg.org_fields, org.fields)
    if missing:
        raise CrmError(f"field {missing[0]!r} is required (give --field {missing[0]} VALUE)")
    for d in domains:
        _claim_domain(session, org, d, cfg.organizations)
    session.add(org)
    session.flush()
    return org


def add_domain(session: Session, cfg: Config, org: Organization, domain: str) -> None:
    _claim_domain(session, org, domain, cfg.organizations)
    session.flush()


def remove_domain(session: Session, org: Organization, domain: str) -> None:
    wanted = domain.strip().lower().strip(".")
    row = next((d for d in org.domains if d.domain == wanted), None)
    if row is None:
        have = ", ".join(d.domain for d in org.domains) or "none"
        raise CrmError(f"{wanted} is not a domain of {org.name!r} (its domains: {have})")
    org.domains.remove(row)
    session.flush()


def update_organization(session: Session, cfg: Config, org: Organization, name: str | None,
                        type_: str | None, fields: Iterable[tuple[str, str]]) -> None:
    if name is not None and name.strip().lower() != org.name.lower():
        clash = session.scalars(select(Organization.id).where(func.lower(Organization.name) == name.strip().lower(),
                                                              Organization.id != org.id)).first()
        if clash:
            raise CrmError(f"organization {name.strip()!r} already exists")
    if name is not None:
        if not name.strip():
            raise CrmError("an organization needs a name")
        org.name = name.strip()
    if type_ is not None:
        org.type = check_type(cfg, type_) if type_.strip() else None
    org.fields = set_fields(cfg.org_fields, org.fields, fields)


def organizations_for_domains(session: Session, domains: Iterable[str], settings: OrganizationsConfig,
                              now: datetime) -> dict[str, Organization | None]:
    """`ensure_organization` for many mail domains at once (CSV import): the same rules (free-mail
    and `auto_create`), with a query per few hundred domains instead of one per domain."""
    wanted = sorted({d.lower().strip(".") for d in domains if d})
    result: dict[str, Organization | None] = {}
    for part in chunks(wanted):
        q = select(OrganizationDomain).options(selectinload(OrganizationDomain.organization))
        for row in session.scalars(q.where(OrganizationDomain.domain.in_(part))):
            result[row.domain] = row.organization
    free = {d.lower() for d in settings.free_mail_domains}
    for domain in wanted:
        if domain in result:
            continue
        if not settings.auto_create or domain in free:
            result[domain] = None
            continue
        org = Organization(name=domain, created_at=now, fields={})
        org.domains.append(OrganizationDomain(domain=domain))
        session.add(org)
        result[domain] = org
    return result


def organization_summary(org: Organization, contacts: int = 0, open_cases: int = 0) -> dict[str, Any]:
    return {"name": org.name, "type": org.type, "domains": [d.domain for d in org.domains],
            "fields": org.fields or {}, "contacts": contacts, "open_cases": open_cases}


def list_organizations(session: Session) -> list[dict[str, Any]]:
    contacts = dict(session.execute(select(Contact.organization_id, func.count())
                                    .where(Contact.organization_id.is_not(None))
                                    .group_by(Contact.organization_id)).all())
    cases = dict(session.execute(select(Case.organization_id, func.count())
                                 .where(Case.organization_id.is_not(None), Case.stage.in_(OPEN_STAGES))
                                 .group_by(Case.organization_id)).all())
    orgs = session.scalars(select(Organization).options(selectinload(Organization.domains))
                           .order_by(func.lower(Organization.name), Organization.id))
    return [organization_summary(o, contacts.get(o.id, 0), cases.get(o.id, 0)) for o in orgs]


def organization_detail(session: Session, org: Organization) -> dict[str, Any]:
    people = session.scalars(select(Contact).where(Contact.organization_id == org.id).order_by(Contact.email)).all()
    cases = session.scalars(select(Case).where(Case.organization_id == org.id, Case.stage.in_(OPEN_STAGES))
                            .order_by(Case.number)).all()
    data = organization_summary(org, len(people), len(cases))
    data["contacts"] = [{"email": c.email, "name": c.name, "type": c.type, "state": c.state} for c in people]
    data["open_cases"] = [{"number": c.number, "subject": c.subject, "stage": c.stage,
                           "requester": c.requester.email} for c in cases]
    return data
