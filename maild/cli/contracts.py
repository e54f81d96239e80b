"""`maild contract …`: putting organizations and contacts into the contracts of the config."""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from maild.cli.common import config_option, engine, load, print_json
from maild.config import Config, ContractConfig


def _contract(cfg: Config, name: str) -> ContractConfig:
    contract = cfg.contract(name)
    if contract is None:
        known = ", ".join(c.name for c in cfg.contracts) or "none configured"
        raise click.ClickException(f"no contract {name!r} in {cfg.source} (contracts: {known})")
    return contract


def _client(session: Session, org: str | None, contact: str | None, create: bool = False) -> tuple:  # type: ignore[type-arg]
    from maild.runtime import utc_now
    from maild.store.contracts import find_contact, find_organization
    from maild.store.models import Organization, OrganizationDomain

    if bool(org) == bool(contact):
        raise click.UsageError("give exactly one of --org or --contact")
    if org:
        found = find_organization(session, org)
        if found is None and create and "." in org and " " not in org:
            found = Organization(name=org.lower(), created_at=utc_now(), fields={})
            found.domains.append(OrganizationDomain(domain=org.lower()))
            session.add(found)
            session.flush()
        if found is None:
            raise click.ClickException(f"no organization named or with the domain {org!r}")
        return found, None
    found_contact = find_contact(session, contact or "")
    if found_contact is None:
        raise click.ClickException(f"no contact {contact!r}")
    return None, found_contact


@click.group(help="Contracts: which clients each serves (contracts are declared in the config).")
def contract() -> None:
    pass


@contract.command("list", help="Contracts with their team, calendar, rating and clients.")
@config_option
@click.option("--json", "as_json", is_flag=True)
def contract_list(config_path: str | None, as_json: bool) -> None:
    from maild.store.contracts import clients_of

    cfg = load(config_path)
    with Session(engine(cfg, reading=True)) as session:
        data = [{"name": c.name, "team": c.team, "agent": c.agent, "tag": c.tag, "calendar": c.calendar,
                 "rating": c.rating, "sla": c.sla,
                 "clients": [{"kind": k, "name": n} for k, n in clients_of(session, c.name)]}
                for c in sorted(cfg.contracts, key=lambda c: -c.rating)]
    if as_json:
        print_json(data)
        return
    for c in data:
        clients = ", ".join(x["name"] for x in c["clients"]) or "no clients"
        click.echo(f"{c['name']:<16} rating {c['rating']:<4} team {c['team'] or '-':<10} {c['calendar']:<10} {clients}")


@contract.command("add-client", help="Put an organization or a contact into a contract.")
@config_option
@click.argument("name")
@click.option("--org", help="organization name or domain")
@click.option("--contact", help="contact email")
def add_client_cmd(config_path: str | None, name: str, org: str | None, contact: str | None) -> None:
    from maild.runtime import utc_now
    from maild.store.contracts import add_client

    cfg = load(config_path)
    target = _contract(cfg, name)
    with Session(engine(cfg)) as session, session.begin():
        o, c = _client(session, org, contact, create=True)
        added = add_client(session, target.name, o, c, utc_now())
    who = org or contact
    click.echo(f"{who} is {'now' if added else 'already'} in contract {target.name}")


@contract.command("remove-client", help="Take an organization or a contact out of a contract.")
@config_option
@click.argument("name")
@click.option("--org")
@click.option("--contact")
def remove_client_cmd(config_path: str | None, name: str, org: str | None, contact: str | None) -> None:
    from maild.store.contracts import remove_client

    cfg = load(config_path)
    target = _contract(cfg, name)
    with Session(engine(cfg)) as session, session.begin():
        o, c = _client(session, org, contact)
        if not remove_client(session, target.name, o, c):
            raise click.ClickException(f"{org or contact} is not in contract {target.name}")
    click.echo(f"{org or contact} removed from contract {target.name}")


@contract.command("move-client", help="Move a client to another contract; refused while it has open cases.")
@config_option
@click.option("--org")
@click.option("--contact")
@click.option("--from", "source", required=True)
@click.option("--to", "target", required=True)
def move_client_cmd(config_path: str | None, org: str | None, contact: str | None, source: str, target: str) -> None:
    from maild.runtime import utc_now
    from maild.store.contracts import ContractError, move_client

    cfg = load(config_path)
    a, b = _contract(cfg, source), _contract(cfg, target)
    with Session(engine(cfg)) as session, session.begin():
        o, c = _client(session, org, contact)
        try:
            move_client(session, a.name, b.name, o, c, utc_now())
        except ContractError as e:
            raise click.ClickException(str(e)) from None
    click.echo(f"{org or contact} moved from {a.name} to {b.name}")
