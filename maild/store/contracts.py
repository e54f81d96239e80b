"""Which clients a contract serves, and which contract a case takes (SPEC §8). Never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from maild.config import Config, ContractConfig
from maild.domain.errors import MaildError
from maild.domain.stages import OPEN_STAGES
from maild.store.models import Case, Contact, ContractClient, Organization, OrganizationDomain


class ContractError(MaildError):
    """A refused contract change, with a reason a person can act on."""


def find_organization(session: Session, name_or_domain: str) -> Organization | None:
    key = name_or_domain.strip().lower()
    org = session.scalars(select(Organization).join(OrganizationDomain).where(OrganizationDomain.domain == key)).first()
    return org or session.scalars(select(Organization).where(func.lower(Organization.name) == key)).first()


def find_contact(session: Session, email: str) -> Contact | None:
    return session.scalars(select(Contact).where(Contact.email == email.strip().lower())).first()


def contract_names_of(session: Session, contact: Contact) -> list[str]:
    q = select(ContractClient.contract).where(or_(
        ContractClient.contact_id == contact.id,
        ContractClient.organization_id == contact.organization_id if contact.organization_id else False))
    return list(dict.fromkeys(session.scalars(q)))


def contract_for(session: Session, cfg: Config, contact: Contact) -> ContractConfig | None:
    """The requester's (or its organization's) contract with the highest rating."""
    contracts = [c for name in contract_names_of(session, contact) if (c := cfg.contract(name)) is not None]
    return max(contracts, key=lambda c: c.rating, default=None)


def _client_filter(org: Organization | None, contact: Contact | None) -> object:
    return ContractClient.organization_id == org.id if org else ContractClient.contact_id == contact.id  # type: ignore[union-attr]


def add_client(session: Session, contract: str, org: Organization | None, contact: Contact | None,
               now: datetime) -> bool:
    exists = session.scalars(select(ContractClient).where(ContractClient.contract == contract,
                                                          _client_filter(org, contact))).first()
    if exists:
        return False
    session.add(ContractClient(contract=contract, organization_id=org.id if org else None,
                               contact_id=contact.id if contact else None, created_at=now))
    return True


def remove_client(session: Session, contract: str, org: Organization | None, contact: Contact | None) -> bool:
    rows = session.scalars(select(ContractClient).where(ContractClient.contract == contract,
                                                        _client_filter(org, contact))).all()
    for r in rows:
        session.delete(r)
    return bool(rows)


def open_cases_of(session: Session, org: Organization | None, contact: Contact | None) -> list[int]:
    q = select(Case.number).where(Case.stage.in_(OPEN_STAGES))
    q = q.where(Case.organization_id == org.id) if org else q.where(Case.requester_id == contact.id)  # type: ignore[union-attr]
    return list(session.scalars(q.order_by(Case.number)))


def move_client(session: Session, source: str, target: str, org: Organization | None, contact: Contact | None,
                now: datetime) -> None:
    open_cases = open_cases_of(session, org, contact)
    if open_cases:
        shown = ", ".join(f"#{n}" for n in open_cases[:10]) + (" …" if len(open_cases) > 10 else "")
        raise ContractError(f"refused: the client has {len(open_cases)} open case(s) ({shown}) under its contract; "
                            "resolve or close them first, or add the new contract beside the old one")
    if not remove_client(session, source, org, contact):
        raise ContractError(f"the client is not in contract {source!r}")
    add_client(session, target, org, contact, now)


def clients_of(session: Session, contract: str) -> list[tuple[str, str]]:
    """(kind, name) of each client: ("organization", "acme.test") or ("contact", "jane@acme.test")."""
    out = []
    for row in session.scalars(select(ContractClient).where(ContractClient.contract == contract)):
        if row.organization_id:
            org = session.get(Organization, row.organization_id)
            out.append(("organization", org.name if org else f"#{row.organization_id}"))
        elif row.contact_id:
            contact = session.get(Contact, row.contact_id)
            out.append(("contact", contact.email if contact else f"#{row.contact_id}"))
    return out
