"""Subject lines: the `[#N]` case tag and the reply/forward prefixes clients add."""

from __future__ import annotations

import re

CASE_TAG_RE = re.compile(r"\[#(\d{1,12})\]")
# Re/Fwd prefixes as Gmail, Outlook (also localized), Apple Mail and Thunderbird write them.
PREFIX_RE = re.compile(
    r"^\s*((re|fw|fwd|aw|wg|sv|vs|odp|pd|tr|rif|r|ha|antw|отв|пересл|fw|re\[\d+\])\s*:\s*)+",
    re.IGNORECASE,
)


def case_tag_number(subject: str) -> int | None:
    m = CASE_TAG_RE.search(subject or "")
    return int(m.group(1)) if m else None


def strip_prefixes(subject: str) -> str:
    return PREFIX_RE.sub("", subject or "").strip()


def tagged_subject(number: int, subject: str) -> str:
    """`[#N] subject` without stacking prefixes or a second tag."""
    clean = CASE_TAG_RE.sub("", strip_prefixes(subject)).strip()
    clean = strip_prefixes(clean)
    return f"[#{number}] {clean}" if clean else f"[#{number}]"
