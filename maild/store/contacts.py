"""Contacts and organizations as mail creates them (SPEC §7). Never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_dict, set_committed_value

from maild.config import OrganizationsConfig
from maild.headers import clean_name
from maild.store.models import Contact, Organization, OrganizationDomain
from maild.store.rows import columns, insert_persistent, load, update_row
from maild.store.transaction import tx_state

# Statements of every mail, built once: building one costs more than running it.
_ORG_BY_DOMAIN = select(Organization).join(OrganizationDomain).where(OrganizationDomain.domain == bindparam("domain"))
_CONTACT_ROW_BY_EMAIL = (select(*columns(Contact), *columns(Organization))
                         .outerjoin(Organization, Contact.organization_id == Organization.id)
                         .where(Contact.email == bindparam("email")))


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
    insert_persistent(session, org)  # written now (store.rows): no flush
    org_domain = OrganizationDomain(organization_id=org.id, domain=domain)
    insert_persistent(session, org_domain, loaded={"organization": org})
    set_committed_value(org, "domains", [org_domain])
    return org


def unmailed_contacts(session: Session) -> set[str]:
    """Addresses first seen in this transaction that no mail has been queued to yet: rate
    limits need not ask the outbox about them."""
    return tx_state(session).unmailed_contacts


def ensure_contact(session: Session, address: str, name: str, settings: OrganizationsConfig,
                   now: datetime, last_mail_at: datetime | None = None) -> Contact:
    """The contact of an address, created from its first mail and named from its From header.
    Its organization is loaded with it (mail to agents names it). Rows are written at once
    (store.rows), not left for a flush. The name is cleaned here too (maild.headers): whoever
    calls, no contact keeps a name that would break a header of the mail it gets."""
    address = address.lower()
    name = clean_name(name) if name else ""
    contact = _contact_by_email(session, address)
    if contact is None:
        org = ensure_organization(session, address.rpartition("@")[2], settings, now)
        contact = Contact(email=address, name=name or "", organization_id=org.id if org is not None else None,
                          created_at=now, state="active", fields={}, last_mail_at=last_mail_at)
        insert_persistent(session, contact, loaded={"organization": org, "tags": [], "notes": []})
        unmailed_contacts(session).add(address)
    else:
        if name and not contact.name:
            contact.name = name
        if last_mail_at is not None:
            update_row(session, contact, last_mail_at=last_mail_at)  # now, rather than by a flush
    return contact


def _contact_by_email(session: Session, address: str) -> Contact | None:
    """The contact with its organization. Every mail asks, so through store.rows (half the
    ORM query's cost); objects still pending are flushed first, as the ORM's autoflush would."""
    if session.new:
        session.flush()
    for contact, org in load(session, _CONTACT_ROW_BY_EMAIL, {"email": address}, (Contact, Organization)):
        assert isinstance(contact, Contact)
        if "organization" not in instance_dict(contact):
            set_committed_value(contact, "organization", org)
        return contact
    return None
