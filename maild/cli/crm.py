"""`maild contact …` and `maild org …` (SPEC §7, §13): thin click commands over maild.crm.

Every command runs in one transaction: a refused change (a bad field value, a taken domain)
leaves the database as it was and exits 1 with the reason. Listings take --json.
"""

from __future__ import annotations

import getpass
import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from maild.cli.common import config_option, engine, load, print_json
from maild.config import Config
from maild.crm import contacts as crm
from maild.crm import csvio
from maild.crm import organizations as orgs
from maild.crm.organizations import CrmError
from maild.store.db import make_sessionmaker


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _transaction(cfg: Config) -> Iterator[Session]:
    with make_sessionmaker(engine(cfg))() as session:  # objects stay readable after the commit
        try:
            with session.begin():
                yield session
        except CrmError as e:
            raise click.ClickException(str(e)) from None


def _field_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--field", "fields", multiple=True, nargs=2, metavar="NAME VALUE",
                        help="a custom field (repeatable; an empty VALUE removes it)")(f)


def _filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--segment", help="a saved segment from [[segments]]; the options below narrow it"),
        click.option("--org", "orgs_", multiple=True, help="organization (a domain or a name)"),
        click.option("--tag", "tags", multiple=True, help="has this tag (repeatable: all of them)"),
        click.option("--field", "fields", multiple=True, metavar="NAME=VALUE", help="custom field value"),
        click.option("--state", "states", multiple=True, help="active, inactive or bouncing"),
        click.option("--type", "types", multiple=True, help="a type from [contacts] types"),
        click.option("--last-mail-before", metavar="DATE", help="last mail before this date"),
        click.option("--last-mail-after", metavar="DATE", help="last mail on or after this date"),
        click.option("--open-cases-min", type=int, metavar="N", help="at least N open cases"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _select(session: Session, cfg: Config, opts: dict[str, Any]) -> list[Any]:
    pairs = {}
    for item in opts["fields"]:
        name, sep, value = item.partition("=")
        if not sep:
            raise CrmError(f"--field {item!r}: write NAME=VALUE")
        pairs[name.strip()] = value
    flt = crm.filter_from({"org": list(opts["orgs_"]), "tag": list(opts["tags"]), "field": pairs,
                           "state": list(opts["states"]), "type": list(opts["types"]),
                           "last_mail_before": opts["last_mail_before"], "last_mail_after": opts["last_mail_after"],
                           "open_cases_min": opts["open_cases_min"]}, "")
    if opts["segment"]:
        flt = crm.segment_filter(cfg, opts["segment"]).merged(flt)
    return crm.select_contacts(session, cfg, flt)


# --- contact -----------------------------------------------------------------------------

@click.group(help="Contacts: the people who write to the desk.")
def contact() -> None:
    pass


@contact.command("add", help="Add a contact; its organization comes from its domain unless --org names one.")
@config_option
@click.argument("email")
@click.option("--name", default="")
@click.option("--org", help="an organization's domain or name")
@click.option("--type", "type_", help="a type from [contacts] types")
@_field_option
@click.option("--tag", "tags", multiple=True, metavar="TAG[:COLOR]", help="a tag, optionally colored (repeatable)")
def contact_add(config_path: str | None, email: str, name: str, org: str | None, type_: str | None,
                fields: tuple[tuple[str, str], ...], tags: tuple[str, ...]) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        c = crm.add_contact(session, cfg, email, name=name, org=org, type_=type_, fields=fields, tags=tags,
                            now=_now())
        where = f" ({c.organization.name})" if c.organization else ""
    click.echo(f"added {c.email}{where}")


@contact.command("show", help="A contact with its fields, tags, notes and cases.")
@config_option
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def contact_show(config_path: str | None, email: str, as_json: bool) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        data = crm.contact_detail(session, crm.get_contact(session, email))
    if as_json:
        print_json(data)
        return
    click.echo(f"{data['name'] or '-'} <{data['email']}>")
    org = data["organization"]
    click.echo(f"  organization: {org['name'] if org else '-'}")
    for key in ("type", "state", "last_mail_at", "created_at"):
        click.echo(f"  {key}: {data[key] or '-'}")
    tags = ", ".join(t["tag"] + (f" ({t['color']})" if t["color"] else "") for t in data["tags"])
    click.echo(f"  tags: {tags or '-'}")
    for name, value in data["fields"].items():
        click.echo(f"  {name}: {value}")
    click.echo(f"Cases ({len(data['cases'])}):")
    for c in data["cases"]:
        role = "" if c["role"] == "requester" else f" [{c['role']}]"
        click.echo(f"  #{c['number']:<6} {c['stage']:<9} {c['subject']}{role}")
    if data["notes"]:
        click.echo("Notes:")
    for n in data["notes"]:
        click.echo(f"  {n['created_at'][:19]} {n['author']}: {n['body']}")


@contact.command("list", help="Contacts matching every filter given (and a saved --segment's).")
@config_option
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON list.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, as 'contact export' writes it.")
def contact_list(config_path: str | None, as_json: bool, as_csv: bool, **opts: Any) -> None:
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    cfg = load(config_path)
    with _transaction(cfg) as session:
        found = _select(session, cfg, opts)
        if as_csv:
            csvio.write_csv(cfg, found, sys.stdout)
            return
        counts = crm.open_case_counts(session)
        data = [crm.contact_summary(c, counts.get(c.id, 0)) for c in found]
    if as_json:
        print_json(data)
        return
    for c in data:
        org = c["organization"]["name"] if c["organization"] else "-"
        tags = ",".join(t["tag"] for t in c["tags"])
        click.echo(f"{c['email']:<32} {c['name'] or '-':<24} {org:<20} {c['type'] or '-':<10} {c['state']:<9} "
                   f"{c['open_cases']:>3} {tags}")


@contact.command("note", help="Add an internal note to a contact.")
@config_option
@click.argument("email")
@click.argument("text")
@click.option("--author", help="who writes it (default: your login)")
def contact_note(config_path: str | None, email: str, text: str, author: str | None) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        c = crm.get_contact(session, email)
        crm.add_note(c, author or f"{getpass.getuser()}@cli", text, _now())
    click.echo(f"note added to {c.email}")


@contact.command("tag", help="Change tags: +tag[:color] adds or recolors, -tag removes (use -- before -tag words "
                 "if your shell wrapper insists).", context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("email")
@click.argument("words", nargs=-1, required=True, type=click.UNPROCESSED)
def contact_tag(config_path: str | None, email: str, words: tuple[str, ...]) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        c = crm.get_contact(session, email)
        done = crm.change_tags(c, words)
    click.echo(f"{c.email}: {' '.join(done)}")


@contact.command("set", help="Change a contact; --org moves it to another organization ('none': to none).")
@config_option
@click.argument("email")
@click.option("--name")
@click.option("--type", "type_", help="a type from [contacts] types ('' clears)")
@click.option("--state", type=click.Choice(crm.SET_STATES))
@_field_option
@click.option("--org", help="an organization's domain or name, or 'none'")
def contact_set(config_path: str | None, email: str, name: str | None, type_: str | None, state: str | None,
                fields: tuple[tuple[str, str], ...], org: str | None) -> None:
    if name is None and type_ is None and state is None and not fields and org is None:
        raise click.UsageError("nothing to change: give at least one option")
    cfg = load(config_path)
    with _transaction(cfg) as session:
        c = crm.get_contact(session, email)
        crm.update_contact(session, cfg, c, name=name, type_=type_, state=state, fields=fields, org=org)
        where = c.organization.name if c.organization else "no organization"
    click.echo(f"{c.email} updated ({where})")


class _NothingCommitted(Exception):
    """Rolls the import back (--strict with rejected rows)."""


@contact.command("import", help="Upsert contacts from a CSV by email; report each rejected row and why.")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--encoding", help="the file's encoding (default: UTF-8, with or without BOM), e.g. windows-1251")
@click.option("--strict", is_flag=True, help="all or nothing: any rejected row commits nothing and exits 1")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def contact_import(config_path: str | None, file: str, encoding: str | None, strict: bool, as_json: bool) -> None:
    cfg = load(config_path)
    try:
        parsed = csvio.parse_csv(csvio.decode(Path(file).read_bytes(), encoding), cfg)
    except csvio.CsvError as e:
        raise click.ClickException(f"{file}: {e}") from None
    with make_sessionmaker(engine(cfg))() as session:
        try:
            with session.begin():
                result = csvio.import_rows(session, cfg, parsed, _now())
                if strict and result.rejected:
                    raise _NothingCommitted
            committed = True
        except _NothingCommitted:
            committed = False
        except IntegrityError as e:  # mail created one of these contacts while the file was read
            raise click.ClickException(f"{file}: the database changed during the import, nothing was imported; "
                                       f"run it again ({e.orig})") from None
    created, updated = (result.created, result.updated) if committed else (0, 0)
    if as_json:
        print_json({"created": created, "updated": updated, "committed": committed,
                     "rejected": [{"row": r, "reason": why} for r, why in result.rejected],
                     "warnings": result.warnings,
                     "new_organizations": result.new_organizations if committed else []})
    else:
        for w in result.warnings:
            click.echo(w, err=True)
        click.echo(f"created {created}, updated {updated}, rejected {len(result.rejected)}")
        for row, why in result.rejected:
            click.echo(f"row {row}: {why}")
        if committed and result.new_organizations:
            click.echo(f"new organizations: {', '.join(result.new_organizations)}")
        if not committed:
            click.echo("--strict: nothing was imported", err=True)
    if not committed:
        raise SystemExit(1)


@contact.command("export", help="Contacts (filtered like 'list') as CSV or XLSX, custom fields as columns.")
@config_option
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="file to write (default: standard output)")
@_filter_options
def contact_export(config_path: str | None, fmt: str, output: str | None, **opts: Any) -> None:
    if fmt == "xlsx" and output is None and sys.stdout.isatty():
        raise click.UsageError("an XLSX workbook is binary: give --output FILE or redirect standard output")
    cfg = load(config_path)
    with _transaction(cfg) as session:
        found = _select(session, cfg, opts)
        if fmt == "csv" and output is None:
            csvio.write_csv(cfg, found, sys.stdout)
        elif fmt == "csv":
            with open(output, "w", encoding="utf-8-sig", newline="") as f:  # the BOM makes Excel read UTF-8
                csvio.write_csv(cfg, found, f)
        else:
            buffer = io.BytesIO()
            csvio.write_xlsx(cfg, found, buffer)
            if output is None:
                click.get_binary_stream("stdout").write(buffer.getvalue())
            else:
                Path(output).write_bytes(buffer.getvalue())
    if output:
        click.echo(f"exported {len(found)} contacts to {output}")


# --- org ---------------------------------------------------------------------------------

@click.group(help="Organizations: contacts grouped by their mail domains.")
def org() -> None:
    pass


@org.command("add", help="Add an organization with its domains.")
@config_option
@click.argument("name")
@click.option("--domain", "domains", multiple=True, help="a mail domain of its people (repeatable)")
@click.option("--type", "type_", help="a type from [contacts] types")
@_field_option
def org_add(config_path: str | None, name: str, domains: tuple[str, ...], type_: str | None,
            fields: tuple[tuple[str, str], ...]) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        o = orgs.add_organization(session, cfg, name, domains, type_, fields, _now())
        listed = ", ".join(d.domain for d in o.domains) or "no domains"
    click.echo(f"added organization {o.name} ({listed})")


@org.command("show", help="An organization with its domains, fields, contacts and open cases.")
@config_option
@click.argument("ref", metavar="NAME_OR_DOMAIN")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def org_show(config_path: str | None, ref: str, as_json: bool) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        data = orgs.organization_detail(session, orgs.get_organization(session, ref))
    if as_json:
        print_json(data)
        return
    click.echo(data["name"])
    click.echo(f"  type: {data['type'] or '-'}")
    click.echo(f"  domains: {', '.join(data['domains']) or '-'}")
    for name, value in data["fields"].items():
        click.echo(f"  {name}: {value}")
    click.echo(f"Contacts ({len(data['contacts'])}):")
    for c in data["contacts"]:
        click.echo(f"  {c['email']:<32} {c['name'] or '-':<24} {c['state']}")
    click.echo(f"Open cases ({len(data['open_cases'])}):")
    for c in data["open_cases"]:
        click.echo(f"  #{c['number']:<6} {c['stage']:<9} {c['requester']:<30} {c['subject']}")


@org.command("list", help="Organizations with their domains and counts.")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON list.")
def org_list(config_path: str | None, as_json: bool) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        data = orgs.list_organizations(session)
    if as_json:
        print_json(data)
        return
    for o in data:
        click.echo(f"{o['name']:<28} {o['type'] or '-':<10} {o['contacts']:>5} contacts {o['open_cases']:>4} open  "
                   f"{', '.join(o['domains'])}")


@org.command("add-domain", help="Give an organization another mail domain.")
@config_option
@click.argument("ref", metavar="ORG")
@click.argument("domain")
def org_add_domain(config_path: str | None, ref: str, domain: str) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        o = orgs.get_organization(session, ref)
        orgs.add_domain(session, cfg, o, domain)
        listed = ", ".join(d.domain for d in o.domains)
    click.echo(f"{o.name}: {listed}")


@org.command("remove-domain", help="Take a mail domain off an organization (its contacts stay in it).")
@config_option
@click.argument("ref", metavar="ORG")
@click.argument("domain")
def org_remove_domain(config_path: str | None, ref: str, domain: str) -> None:
    cfg = load(config_path)
    with _transaction(cfg) as session:
        o = orgs.get_organization(session, ref)
        orgs.remove_domain(session, o, domain)
        listed = ", ".join(d.domain for d in o.domains) or "no domains"
    click.echo(f"{o.name}: {listed}")


@org.command("set", help="Rename an organization, change its type or fields.")
@config_option
@click.argument("ref", metavar="ORG")
@click.option("--name")
@click.option("--type", "type_", help="a type from [contacts] types ('' clears)")
@_field_option
def org_set(config_path: str | None, ref: str, name: str | None, type_: str | None,
            fields: tuple[tuple[str, str], ...]) -> None:
    if name is None and type_ is None and not fields:
        raise click.UsageError("nothing to change: give at least one option")
    cfg = load(config_path)
    with _transaction(cfg) as session:
        o = orgs.get_organization(session, ref)
        orgs.update_organization(session, cfg, o, name, type_, fields)
    click.echo(f"organization {o.name} updated")
