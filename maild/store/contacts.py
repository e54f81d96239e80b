"""Contacts and organizations as mail creates them (SPEC §7). Never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, joinedload

from maild.config import OrganizationsConfig
from maild.store.models import Contact, Organization, OrganizationDomain
from maild.store.rows import update_row

# Statements of every mail, built once: building one costs more than running it.
_ORG_BY_DOMAIN = select(Organization).join(OrganizationDomain).where(OrganizationDomain.domain == bindparam("domain"))
_CONTACT_BY_EMAIL = select(Contact).options(joinedload(Contact.organization)).where(
    Contact.email == bindparam("email"))


def organization_for_domain(session: Session, domain: str) -> Organization | None:
    return session.scalars(_ORG_BY_DOMAIN, {"domain": domain.lower()}).first()


def ensure_organization(session: Session, domain: str, settings: OrganizationsConfig,
                        now: datetime) -> Organization | None:
    """The organization of a mail domain, created unless free-mail or auto-creation is off."""
    domain = domain.lower().strip(".")
    org = organization_for_domain(session, domain)
    if org is not None or not settings.auto_create or not domain:
        return org
    if domain in {d.lower() for d in settings.free_mail_domains}:
        return None
    org = Organization(name=domain, created_at=now, fields={})
    org.domains.append(OrganizationDomain(domain=domain))
    session.add(org)  # flushed with what refers to it (or by the next query)
    return org


def unmailed_contacts(session: Session) -> set[str]:
    """Addresses first seen in this transaction that no mail has been queued to yet: rate
    limits need not ask the outbox about them."""
    return session.info.setdefault("maild.unmailed_contacts", set())


def ensure_contact(session: Session, address: str, name: str, settings: OrganizationsConfig,
                   now: datetime, last_mail_at: datetime | None = None) -> Contact:
    """The contact of an address, created from its first mail and named from its From header.
    Its organization is loaded with it (mail to agents names it). A new contact is pending: it
    is flushed with what refers to it (the case) or by the next query."""
    address = address.lower()
    contact = session.scalars(_CONTACT_BY_EMAIL, {"email": address}).first()
    if contact is None:
        org = ensure_organization(session, address.rpartition("@")[2], settings, now)
        contact = Contact(email=address, name=name or "", organization=org, created_at=now,
                          state="active", fields={}, last_mail_at=last_mail_at)
        unmailed_contacts(session).add(address)
        session.add(contact)
    else:
        if name and not contact.name:
            contact.name = name
        if last_mail_at is not None:
            update_row(session, contact, last_mail_at=last_mail_at)  # now, rather than by a flush
    return contact
