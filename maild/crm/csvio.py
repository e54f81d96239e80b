"""CSV import and CSV/XLSX export of contacts (SPEC §7).

Import runs in two steps so a person gets every problem of a file at once: pure functions read
and check each row against the config (`parse_csv`), then `import_rows` upserts the good rows
in a few batched queries, since a 10,000-row export from another CRM should take seconds.
Rows are numbered as a spreadsheet or an editor shows them: the header is row 1.

Upsert rules: a row's email (any case) finds the contact; a non-empty cell sets its value and an
empty cell leaves it as it is; tags are added, never removed (an import does not lose data).
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import IO, Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, selectinload

from maild.config import Config, FieldConfig
from maild.crm.contacts import STATES, add_tag, normalize_email, parse_tag
from maild.crm.fields import FieldValueError, parse_field_value
from maild.crm.organizations import (
    CrmError,
    check_type,
    chunks,
    find_organization,
    looks_like_domain,
    organizations_for_domains,
)
from maild.spreadsheet import safe_cell, unsafe_cell
from maild.store.models import Contact, ContactTag, Organization, OrganizationDomain

BUILTIN = ("email", "name", "organization", "type", "state", "tags")
ALIASES = {"e_mail": "email", "mail": "email", "email_address": "email", "organisation": "organization",
           "company": "organization", "org": "organization", "tag": "tags", "full_name": "name"}
DELIMITERS = (",", ";", "\t")


class CsvError(ValueError):
    """The file as a whole cannot be read (encoding, header); nothing is imported."""


@dataclass
class ImportRow:
    """One checked row; None or an empty collection means the cell was empty (keep the value)."""

    row: int
    email: str
    name: str | None = None
    organization: str | None = None
    type: str | None = None
    state: str | None = None
    tags: list[tuple[str, str | None]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    organization_id: int | None = None  # set on import: the organization a new contact joins


@dataclass
class ParsedFile:
    rows: list[ImportRow]
    rejected: list[tuple[int, str]]  # (row, reason)
    warnings: list[str]


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    new_organizations: list[str] = field(default_factory=list)


# --- reading -----------------------------------------------------------------------------

def decode(data: bytes, encoding: str | None = None) -> str:
    """The file's text: UTF-8 with or without a BOM (UTF-16 with a BOM too) unless told otherwise."""
    if encoding is None and data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        encoding = "utf-16"
    name = encoding or "utf-8"
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise CsvError(f"unknown encoding {name!r}") from None
    start = 0
    if codec in ("utf-8", "utf-8-sig"):
        codec, start = "utf-8", len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode(codec)
    except UnicodeDecodeError as e:
        offset = start + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise CsvError(f"the file is not valid {name} at byte {offset} (line {line}, byte "
                       f"{data[offset:offset + 1].hex()}): give its encoding with --encoding "
                       "(Excel often writes windows-1251 or windows-1252)") from None


def sniff_delimiter(first_line: str) -> str:
    """Excel writes ';' where the decimal separator is ',' (most of Europe); the header tells."""
    return max(DELIMITERS, key=lambda d: (first_line.count(d), d == ","))


def map_header(header: list[str], cfg: Config) -> tuple[list[str | None], list[str]]:
    """Each column's meaning (None: unknown, ignored) and the warnings to print once."""
    fields = {f.name for f in cfg.contact_fields}
    columns: list[str | None] = []
    unknown = []
    for raw in header:
        key = raw.strip().lower().replace("-", "_").replace(" ", "_")
        key = ALIASES.get(key, key)
        if key in BUILTIN or key in fields:
            if key in columns:
                raise CsvError(f"the header names column {key!r} twice")
            columns.append(key)
        else:
            columns.append(None)
            unknown.append(raw.strip() or f"(column {len(columns)} without a name)")
    if "email" not in columns:
        raise CsvError(f"the header has no email column (columns: {', '.join(h.strip() for h in header)})")
    warnings = []
    if unknown:
        known = ", ".join([*BUILTIN, *sorted(fields)])
        warnings.append("warning: ignoring unknown column(s) " + ", ".join(repr(u) for u in unknown)
                        + f" (known: {known})")
    return columns, warnings


def check_row(columns: list[str | None], cells: list[str], row: int, cfg: Config) -> ImportRow:
    """One row checked against the config; raises CrmError with every reason, joined by '; '."""
    if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns):]):
        raise CrmError(f"{len(cells)} cells but the header has {len(columns)} columns")
    values = {col: unsafe_cell(cell.strip()) for col, cell in zip(columns, cells, strict=False) if col}
    reasons: list[str] = []
    result = ImportRow(row=row, email="")

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (CrmError, FieldValueError) as e:
            reasons.append(str(e))
            return None

    if not values.get("email"):
        reasons.append("no email")
    else:
        result.email = attempt(normalize_email, values["email"]) or ""
    result.name = values.get("name") or None
    result.organization = values.get("organization") or None
    if values.get("type"):
        result.type = attempt(check_type, cfg, values["type"])
    if values.get("state"):
        if values["state"].lower() in STATES:
            result.state = values["state"].lower()
        else:
            reasons.append(f"state {values['state']!r} is not one of {', '.join(STATES)}")
    for word in values.get("tags", "").replace(",", ";").split(";"):
        if word.strip():
            tag = attempt(parse_tag, word)
            if tag:
                result.tags.append(tag)
    for spec in cfg.contact_fields:
        if values.get(spec.name):
            value = attempt(parse_field_value, spec, values[spec.name])
            if value is not None:
                result.fields[spec.name] = value
    if reasons:
        raise CrmError("; ".join(reasons))
    return result


def check_required(row: ImportRow, existing: dict[str, Any] | None, specs: list[FieldConfig]) -> str | None:
    """Why the row cannot be stored for lack of a required field (the contact's own values count)."""
    have = {**(existing or {}), **row.fields}
    missing = [f.name for f in specs if f.required and have.get(f.name) in (None, "")]
    if not missing:
        return None
    return "; ".join(f"field {name!r} is required" for name in missing)


def parse_csv(text: str, cfg: Config) -> ParsedFile:
    """Every row of a CSV checked; a later row with an email seen before is a duplicate."""
    stream = io.StringIO(text, newline="")
    reader = csv.reader(stream, delimiter=sniff_delimiter(text.split("\n", 1)[0]))
    try:
        header = next(reader, None)
        if header is None:
            raise CsvError("the file is empty")
        columns, warnings = map_header(header, cfg)
        parsed = ParsedFile([], [], warnings)
        first_row: dict[str, int] = {}
        line = reader.line_num
        for cells in reader:
            row, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            try:
                item = check_row(columns, cells, row, cfg)
            except CrmError as e:
                parsed.rejected.append((row, str(e)))
                email = dict(zip(columns, cells, strict=False)).get("email", "").strip().lower()
                if email:  # a later row with this email is still a duplicate of this one
                    first_row.setdefault(email, row)
                continue
            if item.email in first_row:
                parsed.rejected.append((row, f"duplicate of row {first_row[item.email]} ({item.email})"))
                continue
            first_row[item.email] = row
            parsed.rows.append(item)
    except csv.Error as e:
        raise CsvError(f"row {reader.line_num}: {e}") from None
    return parsed


# --- storing -----------------------------------------------------------------------------

def _resolve_organizations(session: Session, cfg: Config, refs: set[str], now: datetime
                           ) -> tuple[dict[str, Organization | str], list[str]]:
    """Each organization cell's organization, created when new; a str value is why not."""
    result: dict[str, Organization | str] = {}
    created = []
    free = {d.lower() for d in cfg.organizations.free_mail_domains}
    for ref in sorted(refs):
        try:
            org = find_organization(session, ref)
        except CrmError as e:
            result[ref] = str(e)
            continue
        if org is None:
            domain = ref.lower().strip(".")
            if domain in free:
                result[ref] = f"organization {ref!r} is a free-mail domain, not an organization"
                continue
            org = Organization(name=ref, created_at=now, fields={})
            if looks_like_domain(ref):
                org.domains.append(OrganizationDomain(domain=domain))
            session.add(org)
            session.flush()
            created.append(ref)
        result[ref] = org
    return result, created


def import_rows(session: Session, cfg: Config, parsed: ParsedFile, now: datetime) -> ImportResult:
    """Upserts the checked rows; rows that fail against the database join the rejected."""
    result = ImportResult(rejected=list(parsed.rejected), warnings=list(parsed.warnings))
    existing: dict[str, Contact] = {}
    for part in chunks([r.email for r in parsed.rows]):
        q = select(Contact).options(selectinload(Contact.tags)).where(Contact.email.in_(part))
        existing.update((c.email, c) for c in session.scalars(q))
    rows = []
    for r in parsed.rows:
        why = check_required(r, existing[r.email].fields if r.email in existing else None, cfg.contact_fields)
        if why:
            result.rejected.append((r.row, why))
        else:
            rows.append(r)
    orgs, result.new_organizations = _resolve_organizations(
        session, cfg, {r.organization for r in rows if r.organization}, now)
    by_domain = organizations_for_domains(
        session, [r.email.rpartition("@")[2] for r in rows if r.email not in existing and not r.organization],
        cfg.organizations, now)
    session.flush()  # new organizations get their ids
    new: list[ImportRow] = []
    for r in rows:
        org = orgs.get(r.organization) if r.organization else None
        if isinstance(org, str):
            result.rejected.append((r.row, org))
        elif r.email not in existing:
            joins = org or by_domain.get(r.email.rpartition("@")[2])
            r.organization_id = joins.id if joins is not None else None
            new.append(r)
        else:
            contact = existing[r.email]
            if org is not None:
                contact.organization = org
            _apply(contact, r)
            result.updated += 1
    session.flush()
    _insert_new(session, new, now)
    result.created = len(new)
    result.rejected.sort()
    return result


def _insert_new(session: Session, rows: list[ImportRow], now: datetime) -> None:
    """Bulk INSERTs (with RETURNING for the ids), not one ORM object per row: 10,000 rows in a second."""
    for part in chunks(rows, 1000):
        ids = dict(session.execute(
            insert(Contact.__table__).returning(Contact.email, Contact.id),
            [{"email": r.email, "name": r.name or "", "type": r.type, "state": r.state or "active",
              "fields": r.fields, "organization_id": r.organization_id, "created_at": now} for r in part],
        ).all())
        tags = [{"contact_id": ids[r.email], "tag": tag, "color": color}
                for r in part for tag, color in _unique_tags(r.tags).items()]
        if tags:
            session.execute(insert(ContactTag.__table__), tags)


def _unique_tags(tags: list[tuple[str, str | None]]) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for tag, color in tags:
        result[tag] = color or result.get(tag)
    return result


def _apply(contact: Contact, r: ImportRow) -> None:
    if r.name is not None:
        contact.name = r.name
    if r.type is not None:
        contact.type = r.type
    if r.state is not None:
        contact.state = r.state
    if r.fields:
        contact.fields = {**(contact.fields or {}), **r.fields}
    for tag, color in r.tags:
        add_tag(contact, tag, color)


# --- export ------------------------------------------------------------------------------

def export_header(cfg: Config) -> list[str]:
    return [*BUILTIN, *(f.name for f in cfg.contact_fields)]


def export_row(cfg: Config, c: Contact) -> list[Any]:
    """A contact as typed cells, in the form import reads back (tags as 'tag:color; tag')."""
    tags = "; ".join(t.tag + (f":{t.color}" if t.color else "") for t in c.tags)
    org = c.organization.name if c.organization else None
    return [c.email, c.name, org, c.type, c.state, tags, *((c.fields or {}).get(f.name) for f in cfg.contact_fields)]


def write_csv(cfg: Config, contacts: list[Contact], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in export_header(cfg)])
    for c in contacts:
        writer.writerow(["" if v is None else ("true" if v is True else "false" if v is False else safe_cell(v))
                         for v in export_row(cfg, c)])


def write_xlsx(cfg: Config, contacts: list[Contact], out: IO[bytes] | str) -> None:
    """A workbook with typed cells: numbers, dates and booleans sort and sum in Excel."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    dates = {i for i, f in enumerate(cfg.contact_fields, start=len(BUILTIN)) if f.type == "date"}
    wb = Workbook()
    ws = wb.active
    ws.title = "contacts"
    ws.append([safe_cell(h) for h in export_header(cfg)])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    for c in contacts:
        row = export_row(cfg, c)
        ws.append([date.fromisoformat(v) if i in dates and isinstance(v, str) else safe_cell(_xlsx_text(v))
                   for i, v in enumerate(row)])
    for i in dates:
        for (cell,) in ws.iter_rows(min_row=2, min_col=i + 1, max_col=i + 1):
            cell.number_format = "yyyy-mm-dd"
    for cells in ws.iter_rows(min_row=1):
        for cell in cells:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # never a formula, whatever openpyxl would guess from the text
    wb.save(out)


def _xlsx_text(value: Any) -> Any:
    """XML 1.0 has no place for most control characters (openpyxl refuses them): drop them, so
    one contact named from a hostile mail does not make the whole export fail. Done before
    `safe_cell`, which must see the text as it will be stored ("\x01=1+1" is "=1+1" once dropped)."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value
