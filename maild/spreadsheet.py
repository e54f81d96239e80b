"""The one place that makes a value safe for a spreadsheet cell (SPEC §7).

Exports (contact CSV and XLSX, report CSV) carry text that came from mail: a display name such
as `=HYPERLINK("http://evil.test","x")` would become a live formula when a person opens the file
in Excel or LibreOffice. Every cell maild writes to a spreadsheet goes through `safe_cell`, and
every cell maild reads back from one goes through `unsafe_cell`, so that an export imported again
is the same data (a value never grows a new quote per round trip).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def safe_cell(value: Any) -> Any:
    """`value` as it may go into a cell: text that a spreadsheet would read as a formula is
    prefixed with `'` (then Excel, LibreOffice and openpyxl keep it as text).

    Typed numbers, dates and booleans are left as they are: they are values, never formulas, and
    a number must stay a number to sort and sum (a number field of -5 is not an attack). Anything
    else is made a string first, so that no type reaches a writer that guesses.
    """
    if value is None or isinstance(value, bool | int | float | Decimal | date | datetime):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_STARTS):
        return QUOTE + text
    return text


def unsafe_cell(text: str) -> str:
    """A cell's text as it was before `safe_cell` quoted it: the `'` that `safe_cell` adds is taken
    away again (as a spreadsheet does when a person types it), any other text is kept."""
    if text.startswith(QUOTE) and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text
