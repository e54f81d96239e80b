"""The notice of a held mail (SPEC §6): a mail whose From is an agent's address but that is not
authenticated is held, and the real agent, at the address the config gives, gets its text.
Their reply to this notice (its Reply-To carries a token issued to them for that mail) releases
it as theirs. The notice belongs to no case: it is not in any case's stream or References."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from maild.config import AgentConfig
from maild.notify.compose import new_message_id
from maild.notify.mailcontext import dump_context
from maild.notify.outgoing import Headers
from maild.runtime import Runtime
from maild.store.outbox import enqueue_mail
from maild.threading.tokens import bounce_address, make_held_token, reply_address

TEMPLATE = "held_agent_mail"


def queue_hold_notice(session: Session, rt: Runtime, *, held_pk: int, message_id: str | None, subject: str, text: str,
                      attachments: list[str], agent: AgentConfig, mailbox: str, mailbox_name: str, case: Any | None,
                      reason: str) -> str | None:
    """Writes the notice to the outbox as data (the outbox worker renders it); returns its
    Message-ID. `message_id` etc.: the held mail's."""
    now = rt.clock()
    token = make_held_token(rt.secret, held_pk, agent.email)
    context = {"case": case, "mailbox": mailbox, "mailbox_name": mailbox_name,
               "held": {"subject": subject, "text": text, "reason": reason, "attachments": attachments}}
    notice_id = new_message_id(rt.config.server.hostname)
    headers = Headers(to=agent.email.lower(), to_name=agent.name, to_kind="agent", mail_from=mailbox,
                      from_name=mailbox_name, reply_to=reply_address(mailbox, token), in_reply_to=message_id,
                      references=[message_id] if message_id else [], auto_submitted="auto-replied")
    enqueue_mail(session, case_number=None, message_id=notice_id, kind=TEMPLATE,
                 mail_from=bounce_address(mailbox, rt.secret, notice_id), recipient=headers.to,
                 context=dump_context(context), headers=headers.as_json(), automatic=True, now=now)
    return notice_id
