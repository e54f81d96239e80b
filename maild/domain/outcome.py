"""What the pipeline did with one mail, and how it says "keep this mail aside"."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    """What the pipeline did with one mail: logged, shown by `maild inspect`."""

    action: str  # created | threaded | noted | duplicate | bounce | refused | ignored | held | quarantined
    case_number: int | None
    matched_by: str  # token | references | subject | new | duplicate | none | held | release | verp
    classification: str
    visibility: str | None = None
    acknowledgement: str | None = None  # who was acknowledged, or why not
    events: list[str] = field(default_factory=list)
    is_agent: bool = False
    agent_reason: str = ""
    reply_text: str = ""
    commands: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    bounced_addresses: list[str] = field(default_factory=list)  # failed for good (permanent)
    delayed_addresses: list[str] = field(default_factory=list)  # a temporary failure: marks no one
    reason: str = ""  # why a bounce was believed or quarantined, or which rule classified the mail
    classified_by: str = ""  # the rule or detector behind `classification` (Classification.reason)


class Quarantined(Exception):
    """Raised by the pipeline for a mail it must keep aside unchanged (nothing of its transaction
    is written): the adapter quarantines the raw bytes with `reason`, which a person can act on.
    Control flow of the pipeline, not a failure of maild: hence not a MaildError."""

    def __init__(self, reason: str, outcome: Outcome):
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome
