"""Custom fields of contacts and organizations (SPEC §7): declared in the config with a type,
validated wherever a value is set (CLI, CSV import, rules), refused with the field, the
value and why."""

from __future__ import annotations

import re
from datetime import date

from maild.config import Config, FieldConfig

FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TRUE = ("true", "yes", "1", "y", "on", "ano", "ja", "да")
FALSE = ("false", "no", "0", "n", "off", "ne", "nein", "нет")
RESERVED = ("email", "name", "organization", "type", "state", "tags")


class FieldValueError(ValueError):
    """A value a field does not take; the message names the field, the value and why."""


def check_field_configs(cfg: Config) -> list[str]:
    """Custom field declarations (the saved segments that filter on them: crm.contacts.check_segment_configs)."""
    problems: list[str] = []
    for section, fields in (("contact_fields", cfg.contact_fields), ("org_fields", cfg.org_fields)):
        seen: set[str] = set()
        for i, f in enumerate(fields):
            if f is None:
                continue
            path = f"{section}[{i}]"
            if not FIELD_NAME_RE.match(f.name):
                problems.append(f"{path}.name: {f.name!r} must be lowercase letters, digits and _ (a letter first)")
            if f.name in RESERVED:
                problems.append(f"{path}.name: {f.name!r} is a built-in column; choose another name")
            if f.name in seen:
                problems.append(f"{path}.name: {f.name!r} is declared twice")
            seen.add(f.name)
            if f.type == "choice" and not f.choices:
                problems.append(f"{path}.choices: a choice field needs its choices")
            if f.type != "choice" and f.choices:
                problems.append(f"{path}.choices: only a choice field has choices (this one is {f.type})")
    return problems


def parse_field_value(spec: FieldConfig, raw: object) -> object:
    """The typed value of `raw` (text from CSV or the CLI, or a TOML value); "" is no value."""
    text = "" if raw is None else str(raw).strip()
    if text == "":
        if spec.required:
            raise FieldValueError(f"field {spec.name!r} is required")
        return None
    if spec.type == "text":
        return text
    if spec.type == "number":
        try:
            number = float(text.replace(",", ".")) if not isinstance(raw, int | float) else float(raw)
        except ValueError:
            raise FieldValueError(f"field {spec.name!r}: {text!r} is not a number") from None
        return int(number) if number.is_integer() else number
    if spec.type == "date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise FieldValueError(f"field {spec.name!r}: {text!r} is not a date (write YYYY-MM-DD)") from None
    if spec.type == "bool":
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise FieldValueError(f"field {spec.name!r}: {text!r} is not true or false")
    match = next((c for c in spec.choices if c.casefold() == text.casefold()), None)
    if match is None:
        raise FieldValueError(f"field {spec.name!r}: {text!r} is not one of {', '.join(spec.choices)}")
    return match


def field_spec(fields: list[FieldConfig], name: str) -> FieldConfig:
    spec = next((f for f in fields if f.name == name), None)
    if spec is None:
        known = ", ".join(f.name for f in fields) or "none declared"
        raise FieldValueError(f"unknown field {name!r} (fields: {known})")
    return spec
