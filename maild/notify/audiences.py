"""The notification matrix (SPEC §10): which audiences hear of which event, by default and
as `[notify] events` changes it, and who those audiences are for a case."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from maild.config import ADDRESS_RE, Config

if TYPE_CHECKING:  # at run time only the config check needs this module, and it should load fast
    from maild.runtime import Runtime
    from maild.store.models import Case, Event, Post

AUDIENCES = ("customer", "team", "watchers", "watchers_or_team", "assignee", "managers")

# Defaults of SPEC §6 and §10. "customer" on post_public means agents' public posts only (a
# customer's own mail is not echoed to the customer side); on stage_changed, only changes to
# `[notify] customer_stages`. The acknowledgement of case_created has its own module.
DEFAULT_AUDIENCES: dict[str, tuple[str, ...]] = {
    "case_created": ("team",),
    "post_public": ("customer", "watchers_or_team"),
    "post_internal": ("watchers",),
    "stage_changed": ("customer", "watchers"),
    "queue_changed": ("watchers", "team"),
    "assigned": ("watchers",),
    "tags_changed": ("watchers",),
    "attachment_added": ("watchers",),
    "attachment_removed": ("watchers",),
    "priority_changed": ("watchers",),
    "due_changed": ("watchers",),
    "sla_warning": ("watchers",),
    "sla_breached": ("watchers", "managers"),
    "closed": (),  # told as its stage change
}


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    kind: str  # customer | agent


def check_notify_config(cfg: Config) -> list[str]:
    problems = []
    for event, audiences in cfg.notify.events.items():
        if event not in DEFAULT_AUDIENCES:
            problems.append(f"notify.events.{event}: unknown event (events: {', '.join(DEFAULT_AUDIENCES)})")
        for a in audiences or []:
            if a not in AUDIENCES and not ADDRESS_RE.match(str(a)):
                problems.append(f"notify.events.{event}: {a!r} is neither an audience ({', '.join(AUDIENCES)}) "
                                "nor an email address")
    return problems


def audiences_of(cfg: Config, kind: str) -> tuple[str, ...]:
    configured = cfg.notify.events.get(kind)
    return tuple(configured) if configured is not None else DEFAULT_AUDIENCES.get(kind, ("watchers",))


def agent_recipient(cfg: Config, address: str) -> Recipient | None:
    agent = cfg.agent(address)
    return Recipient(agent.email.lower(), agent.name, "agent") if agent else None


def customers(case: Case) -> list[Recipient]:
    out = [Recipient(case.requester.email, case.requester.name, "customer")]
    out += [Recipient(p.contact.email, p.contact.name, "customer") for p in case.participants
            if p.contact.state != "bouncing"]
    return out


def team(cfg: Config, case: Case, managers_only: bool = False) -> list[Recipient]:
    for t in cfg.teams:
        if t.name == case.queue:
            agents = [cfg.agent(a) for a in t.agents]
            return [Recipient(a.email.lower(), a.name, "agent") for a in agents
                    if a is not None and (a.role == "manager" or not managers_only)]
    return []


def watchers(cfg: Config, case: Case) -> list[Recipient]:
    addresses = ([case.assignee] if case.assignee else []) + [f.address for f in case.followers if f.kind == "agent"]
    out: list[Recipient] = []
    for a in addresses:
        r = agent_recipient(cfg, a)
        if r and r not in out:
            out.append(r)
    return out


def recipients_of(rt: Runtime, case: Case, event: Event, post: Post | None) -> list[Recipient]:
    """Everyone who hears of `event` before the actor is taken out."""
    cfg = rt.config
    out: list[Recipient] = []
    for audience in audiences_of(cfg, event.kind):
        if audience == "customer":
            if event.kind == "post_public" and not (post is not None and post.author_kind == "agent"):
                continue
            if event.kind == "stage_changed" and event.data.get("new") not in cfg.notify.customer_stages:
                continue
            if event.kind == "post_internal":
                continue  # customers never hear of internal notes, whatever the config says
            out += customers(case)
        elif audience == "team":
            out += team(cfg, case)
        elif audience == "managers":
            out += team(cfg, case, managers_only=True)
        elif audience == "watchers":
            out += watchers(cfg, case)
        elif audience == "watchers_or_team":
            out += watchers(cfg, case) or team(cfg, case)
        elif audience == "assignee":
            r = agent_recipient(cfg, case.assignee) if case.assignee else None
            out += [r] if r else []
        else:  # an address: an agent's, or someone outside who asked to hear
            out.append(agent_recipient(cfg, audience) or Recipient(audience.lower(), "", "agent"))
    if event.kind == "assigned":  # the new assignee hears of it, whatever else is configured
        new = agent_recipient(cfg, str(event.data.get("new") or ""))
        out += [new] if new else []
    return out
