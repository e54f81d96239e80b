"""The ingest pipeline against real databases: SQLite and PostgreSQL, every test on both."""

from __future__ import annotations

import email
import email.policy
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.orm import Session

from maild.config import AgentConfig, OrganizationsConfig, ProtectionConfig, TeamConfig
from maild.domain.message import InboundMessage, RawMail
from maild.ingest.committer import deliveries_for
from maild.ingest.parse import parse_message
from maild.ingest.pipeline import ingest_message
from maild.ingest.writer import IngestWriter, StorageError
from maild.store.blobs import RAW_IN_DATABASE_MAX
from maild.store.db import MIGRATIONS_DIR, SCHEMA_HEAD, schema_is_current
from maild.store.models import (
    Base,
    Case,
    CaseParticipant,
    Contact,
    Message,
    Organization,
    OrganizationDomain,
    Post,
    RawMessage,
)
from maild.store.outbox import claim_due, enqueue_mail, mark_failed
from maild.store.raw_messages import raw_message
from maild.store.rows import read
from maild.threading.tokens import make_token, reply_address
from tests.conftest import load_eml
from tests.support.faults import break_inserts
from tests.support.pipeline_desk import T0, Desk, mail


@pytest.fixture
def desk(engine: Engine, tmp_path: Path) -> Desk:
    return Desk(engine, tmp_path)


def test_schema_is_at_head(engine: Engine) -> None:
    assert schema_is_current(engine)


def test_the_migrations_build_the_schema_the_models_describe(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:  # a change to the models needs a migration of its own
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_the_schema_check_knows_the_newest_migration(engine: Engine) -> None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    acfg = AlembicConfig()
    acfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(acfg).get_current_head() == SCHEMA_HEAD  # a new migration: move SCHEMA_HEAD
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    assert not schema_is_current(engine)  # an older database is told apart


def test_new_mail_makes_case_contact_organization_and_acknowledgement(desk: Desk) -> None:
    out = desk.ingest(mail("Jane Customer <Jane@Acme.test>", "Printer on fire", msgid="m1@acme.test"))
    assert out.action == "created" and out.matched_by == "new"
    case = desk.case(out.case_number)
    assert case.subject == "Printer on fire" and case.queue == "support" and case.stage == "new"
    assert case.requester.email == "jane@acme.test" and case.requester.name == "Jane Customer"
    assert case.organization.name == "acme.test"
    assert [p.body for p in case.posts] == ["Hello"]
    (ack,) = desk.outbox()
    assert ack.recipient == "jane@acme.test" and ack.kind == "case_created" and ack.status == "pending"
    sent = email.message_from_bytes(ack.raw, policy=email.policy.default)
    assert sent["Subject"] == f"[#{case.number}] Printer on fire"
    assert sent["In-Reply-To"] == "<m1@acme.test>"
    assert sent["Auto-Submitted"] == "auto-replied"
    assert reply_address("support@example.com", make_token(desk.rt.secret, case.number)) in sent["Reply-To"]


def test_raw_message_is_kept_by_content_hash(desk: Desk) -> None:
    """A small mail's bytes go into the database with the mail, a large one's into a file."""
    small = mail("jane@acme.test", "Raw", msgid="raw@acme.test")
    large = mail("jane@acme.test", "Log file", "\r\n".join(["2026-11-20 10:00:00 ERROR spooler: paper jam"] * 2000),
                 msgid="large@acme.test")
    assert len(small) < RAW_IN_DATABASE_MAX < len(large)
    desk.ingest(small)
    desk.ingest(large)
    shas = desk.q(lambda s: list(s.scalars(select(Message.sha256).order_by(Message.id))))
    assert desk.q(lambda s: [raw_message(s, desk.rt.raw_store, sha) for sha in shas]) == [small, large]
    assert not desk.rt.raw_store.path(shas[0]).exists()
    assert desk.rt.raw_store.path(shas[1]).read_bytes() == large


def test_the_same_bytes_to_another_mailbox_are_kept_once(desk: Desk) -> None:
    raw = mail("jane@acme.test", "To both", msgid="both@acme.test", to="support@example.com, billing@example.com")
    first = desk.ingest(raw, ("support@example.com",))
    second = desk.ingest(raw, ("billing@example.com",))
    assert first.action == second.action == "created" and first.case_number != second.case_number
    assert desk.q(lambda s: s.scalar(select(func.count()).select_from(RawMessage))) == 1


def test_free_mail_sender_gets_no_organization(desk: Desk) -> None:
    case = desk.case(desk.ingest(mail("joe@gmail.com", "Hi")).case_number)
    assert case.organization is None


def test_organization_auto_creation_can_be_turned_off(engine: Engine, tmp_path: Path) -> None:
    desk = Desk(engine, tmp_path, organizations=OrganizationsConfig(auto_create=False))
    assert desk.case(desk.ingest(mail("jane@acme.test", "Hi")).case_number).organization is None


def test_organization_with_several_domains_takes_contacts_of_each(desk: Desk) -> None:
    with desk.sessions() as s, s.begin():
        org = Organization(name="Acme", created_at=T0, fields={})
        org.domains += [OrganizationDomain(domain="acme.test"), OrganizationDomain(domain="acme-corp.test")]
        s.add(org)
    a = desk.case(desk.ingest(mail("jane@acme.test", "One")).case_number)
    b = desk.case(desk.ingest(mail("joe@acme-corp.test", "Two")).case_number)
    assert a.organization.name == b.organization.name == "Acme"
    assert desk.q(lambda s: s.scalar(select(func.count(Organization.id)))) == 1


def test_reply_to_token_address_threads(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer on fire")).case_number
    token_addr = reply_address("support@example.com", make_token(desk.rt.secret, n))
    out = desk.ingest(mail("jane@acme.test", "Re: whatever", "Still burning", to=token_addr),
                      rcpts=(token_addr,))
    assert (out.action, out.case_number, out.matched_by) == ("threaded", n, "token")
    assert len(desk.case(n).posts) == 2


def test_token_in_cc_header_threads_even_when_envelope_is_plain(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer on fire")).case_number
    token_addr = reply_address("support@example.com", make_token(desk.rt.secret, n))
    out = desk.ingest(mail("jane@acme.test", "Fwd", headers={"Cc": token_addr}))
    assert out.matched_by == "token" and out.case_number == n


def test_reply_with_in_reply_to_of_the_acknowledgement_threads(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer on fire")).case_number
    (ack,) = desk.outbox()
    out = desk.ingest(mail("jane@acme.test", "other subject", headers={"In-Reply-To": f"<{ack.message_id}>"}))
    assert (out.case_number, out.matched_by) == (n, "references")


def test_references_to_a_stored_customer_message_threads(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer", msgid="first@acme.test")).case_number
    out = desk.ingest(mail("joe@other.test", "Re: Printer",
                           headers={"References": "<unknown@x> <first@acme.test>"}))
    assert (out.case_number, out.matched_by) == (n, "references")


def test_subject_tag_threads_only_for_participants(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer on fire")).case_number
    mine = desk.ingest(mail("jane@acme.test", f"RE: [#{n}] Printer on fire"))
    assert (mine.case_number, mine.matched_by) == (n, "subject")
    stranger = desk.ingest(mail("mallory@evil.test", f"[#{n}] let me in"))
    assert stranger.action == "created" and stranger.case_number != n
    # an agent's address alone is no participant: unauthenticated, the mail is held (SPEC §6)
    agent = desk.ingest(mail("alice@example.com", f"[#{n}] note"), mail_from="alice@example.com")
    assert (agent.action, agent.case_number) == ("held", None)
    assert agent.agent_reason.startswith("held: unauthenticated agent address")


def test_forged_token_opens_a_new_case(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer on fire")).case_number
    tok = make_token(desk.rt.secret, n)
    forged = reply_address("support@example.com", tok[:-1] + ("a" if tok[-1] != "a" else "b"))
    out = desk.ingest(mail("mallory@evil.test", "Re: hello", to=forged), rcpts=(forged,))
    assert out.action == "created" and out.case_number != n


def test_token_of_a_case_that_does_not_exist_is_not_trusted(desk: Desk) -> None:
    stale = reply_address("support@example.com", make_token(desk.rt.secret, 999))
    out = desk.ingest(mail("jane@acme.test", "Re: old", to=stale), rcpts=(stale,))
    assert out.action == "created"


def test_same_message_id_is_stored_once(desk: Desk) -> None:
    raw = mail("jane@acme.test", "Printer on fire", msgid="dup@acme.test")
    first = desk.ingest(raw)
    again = desk.ingest(raw)
    assert again.action == "duplicate" and again.case_number == first.case_number
    assert desk.q(lambda s: s.scalar(select(func.count(Message.id)))) == 1
    assert len(desk.outbox()) == 1


def test_reads_of_stored_rows_come_back_typed(desk: Desk) -> None:
    """store.rows.read runs its queries on the DBAPI cursor: dates must still come back as
    UTC datetimes (SQLite stores text), and an expanding IN still works."""
    desk.ingest(mail("jane@acme.test", "Printer on fire", msgid="typed@acme.test"))
    by_case = select(Message.message_id, Message.received_at).where(Message.case_number == bindparam("case"))
    by_ids = select(Message.message_id).where(Message.message_id.in_(bindparam("ids", expanding=True)))
    with desk.sessions() as session:
        number = session.scalar(select(Message.case_number))
        ((message_id, received_at),) = read(session, by_case, {"case": number})
        assert message_id == "typed@acme.test"
        assert received_at.utcoffset() == timedelta(0)
        assert read(session, by_ids, {"ids": ["nope@x", "typed@acme.test"]}) == [("typed@acme.test",)]


def test_one_sender_twice_in_one_transaction_is_one_contact_of_one_organization(desk: Desk) -> None:
    """As in a writer batch: the second lookup finds the contact the first one created."""
    (delivery,) = deliveries_for(desk.rt, ["support@example.com"], "jane@acme.test", "smtp")
    with desk.sessions() as s, s.begin():
        first = ingest_message(s, parse_message(mail("jane@acme.test", "One")), delivery, desk.rt)
        second = ingest_message(s, parse_message(mail("Jane@Acme.test", "Two")), delivery, desk.rt)
    assert first.case_number != second.case_number
    people = desk.q(lambda s: [(c.email, c.organization.name if c.organization else None)
                               for c in s.scalars(select(Contact))])
    assert people == [("jane@acme.test", "acme.test")]
    requesters = desk.q(lambda s: {c.requester.email for c in s.scalars(select(Case))})
    assert requesters == {"jane@acme.test"}


def test_message_without_message_id_is_deduplicated_by_content(desk: Desk) -> None:
    raw = mail("jane@acme.test", "No id")
    desk.ingest(raw)
    assert desk.ingest(raw).action == "duplicate"
    assert desk.ingest(mail("jane@acme.test", "No id", "other body")).action == "created"


def test_same_message_to_two_mailboxes_lands_in_each(desk: Desk) -> None:
    raw = mail("jane@acme.test", "To both", msgid="both@acme.test")
    msg = parse_message(raw)
    rcpts = ["support@example.com", "billing@example.com"]
    deliveries = deliveries_for(desk.rt, rcpts, "j@acme.test", "smtp")
    with desk.sessions() as s, s.begin():
        outs = [ingest_message(s, msg, d, desk.rt) for d in deliveries]
    assert [desk.case(o.case_number).queue for o in outs] == ["support", "billing"]


def test_cc_addresses_become_participants_and_may_thread_by_tag(desk: Desk) -> None:
    n = desk.ingest(load_eml("cc-colleagues.eml")).case_number
    case = desk.case(n)
    cc = sorted(p.contact.email for p in case.participants)
    assert len(cc) == 2 and "support@example.com" not in cc
    # the whole customer side hears that the case exists
    assert sorted(m.recipient for m in desk.outbox()) == sorted([case.requester.email, *cc])
    out = desk.ingest(mail(cc[0], f"Re: [#{n}] {case.subject}"))
    assert out.case_number == n and out.matched_by == "subject"


def test_an_address_named_twice_joins_the_case_once(desk: Desk) -> None:
    desk.ingest(mail("bob@acme.test", "Known already"))
    raw = mail("jane@acme.test", "Printer", to="support@example.com, Bob <bob@acme.test>, new@acme.test",
               headers={"Cc": "bob@acme.test, New Colleague <new@acme.test>, other@beta.test"})
    case = desk.case(desk.ingest(raw).case_number)
    assert sorted(p.contact.email for p in case.participants) == ["bob@acme.test", "new@acme.test",
                                                                  "other@beta.test"]
    other = desk.q(lambda s: s.scalars(select(Contact).where(Contact.email == "other@beta.test")).one().organization)
    assert other.name == "beta.test"  # type: ignore[attr-defined]
    again = mail("jane@acme.test", f"Re: [#{case.number}] Printer", to="support@example.com, jane@acme.test",
                 headers={"Cc": "new@acme.test"})
    desk.ingest(again)
    assert len(desk.case(case.number).participants) == 3


def test_customer_reply_reopens_pending_case(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer")).case_number
    with desk.sessions() as s, s.begin():
        s.get(Case, n).stage = "pending"
    desk.ingest(mail("jane@acme.test", f"Re: [#{n}] Printer"))
    case = desk.case(n)
    assert case.stage == "open"
    assert [(h.field, h.old_value, h.new_value) for h in case.history] == [("stage", "pending", "open")]


def test_reply_to_closed_case_opens_a_linked_new_case(desk: Desk) -> None:
    n = desk.ingest(mail("jane@acme.test", "Printer")).case_number
    with desk.sessions() as s, s.begin():
        s.get(Case, n).stage = "closed"
    out = desk.ingest(mail("jane@acme.test", f"Re: [#{n}] Printer"))
    assert out.action == "created" and out.case_number != n
    assert desk.case(out.case_number).linked_case == n


def test_no_acknowledgement_to_robots(desk: Desk) -> None:
    robots = [
        mail("ooo@acme.test", "Out of office", headers={"Auto-Submitted": "auto-replied"}),
        mail("news@list.test", "Newsletter", headers={"List-Id": "<news.list.test>"}),
        mail("bulk@acme.test", "Bulk", headers={"Precedence": "bulk"}),
        mail("noreply@acme.test", "Notification"),
        mail("jira@acme.test", "Issue", headers={"X-Auto-Response-Suppress": "All"}),
    ]
    # an auto-reply answering no case opens none (issue 21 §3); the others are cases, unanswered
    assert [desk.ingest(raw).action for raw in robots] == ["ignored", "created", "created", "created", "created"]
    assert desk.outbox() == []
    desk.ingest(mail("person@acme.test", "From the empty path"), mail_from="")
    assert desk.outbox() == []


def test_no_acknowledgement_when_dmarc_fails_at_a_trusted_authserv(engine: Engine, tmp_path: Path) -> None:
    from maild.config import AuthConfig

    desk = Desk(engine, tmp_path, auth=AuthConfig(trusted_authserv_ids=["mx.example.com"]))
    fail = "mx.example.com; spf=pass smtp.mailfrom=acme.test; dmarc=fail header.from=acme.test"
    desk.ingest(mail("jane@acme.test", "Spoofed?", headers={"Authentication-Results": fail}))
    assert desk.outbox() == []
    untrusted = "mx.evil.test; dmarc=fail header.from=acme.test"
    desk.ingest(mail("joe@acme.test", "Fine", headers={"Authentication-Results": untrusted}))
    assert [m.recipient for m in desk.outbox()] == ["joe@acme.test"]


def test_acknowledgements_are_rate_limited_per_address(engine: Engine, tmp_path: Path) -> None:
    desk = Desk(engine, tmp_path, protection=ProtectionConfig(ack_per_hour=2, auto_mail_per_day=3))
    for i in range(4):
        desk.ingest(mail("jane@acme.test", f"Case {i}"))
    assert len(desk.outbox()) == 2
    desk.now += timedelta(hours=1, minutes=1)
    desk.ingest(mail("jane@acme.test", "Later"))
    desk.ingest(mail("jane@acme.test", "Later again"))
    assert len(desk.outbox()) == 3  # the daily cap
    desk.ingest(mail("other@acme.test", "Someone else"))
    assert len(desk.outbox()) == 4


def test_the_daily_cap_counts_automatic_mail_only_and_the_hourly_limit_the_last_hour(engine: Engine,
                                                                                    tmp_path: Path) -> None:
    desk = Desk(engine, tmp_path, protection=ProtectionConfig(ack_per_hour=1, auto_mail_per_day=3))
    assert desk.ingest(mail("jane@acme.test", "First")).acknowledgement == "jane@acme.test: queued"
    desk.now += timedelta(hours=2)
    with desk.sessions() as s, s.begin():  # an agent's answer: a person's mail, not an automatic one
        enqueue_mail(s, case_number=None, message_id="answer@support.example.com", kind="post_public",
                     mail_from="support@example.com", recipient="Jane@Acme.test", raw=b"x", automatic=False,
                     now=desk.now)
    assert desk.ingest(mail("jane@acme.test", "Second")).acknowledgement == "jane@acme.test: queued"
    third = desk.ingest(mail("jane@acme.test", "Third")).acknowledgement
    assert third == "jane@acme.test: none (rate limit: 1 acknowledgements an hour to jane@acme.test)"
    desk.now += timedelta(hours=2)
    assert desk.ingest(mail("jane@acme.test", "Fourth")).acknowledgement == "jane@acme.test: queued"
    desk.now += timedelta(hours=2)
    fifth = desk.ingest(mail("jane@acme.test", "Fifth")).acknowledgement
    assert fifth == "jane@acme.test: none (daily cap: 3 automatic mails a day to jane@acme.test)"
    desk.now += timedelta(hours=20)  # "First" is more than a day old
    assert desk.ingest(mail("jane@acme.test", "Sixth")).acknowledgement == "jane@acme.test: queued"


def contact_state(desk: Desk, address: str) -> str:
    return desk.q(lambda s: s.scalars(select(Contact).where(Contact.email == address)).one().state)


def test_bounce_marks_address_and_notes_the_case_without_opening_one(desk: Desk) -> None:
    n = desk.ingest(mail("gone@acme.test", "Printer")).case_number
    (ack,) = desk.outbox()
    bounce = load_eml("bounce-dsn-postfix.eml").replace(b"ack-1@support.example.com", ack.message_id.encode())
    out = desk.ingest(bounce, mail_from="")
    assert (out.action, out.case_number) == ("bounce", n)
    assert desk.q(lambda s: s.scalar(select(func.count(Case.number)))) == 1
    assert contact_state(desk, "gone@acme.test") == "bouncing"
    note = desk.case(n).posts[-1]
    assert note.visibility == "internal" and "gone@acme.test" in note.body
    # writing again clears the mark: the address works after all
    desk.ingest(mail("gone@acme.test", "Another"))
    assert contact_state(desk, "gone@acme.test") == "active"
    assert len(desk.outbox()) == 2


def test_attachments_are_stored_by_hash_with_safe_names(desk: Desk) -> None:
    case = desk.case(desk.ingest(load_eml("attachments-non-ascii-names.eml")).case_number)
    atts = case.posts[0].attachments
    assert atts and all(desk.rt.attachment_store.get(a.sha256) for a in atts)
    assert all("/" not in a.filename for a in atts)


def test_outbox_claims_are_leased_and_failures_recorded(desk: Desk) -> None:
    desk.ingest(mail("jane@acme.test", "Printer"))
    with desk.sessions() as s, s.begin():
        (row,) = claim_due(s, T0 + timedelta(seconds=5))
        row_id = row.id
    with desk.sessions() as s, s.begin():
        assert claim_due(s, T0 + timedelta(seconds=6)) == []  # leased
        mark_failed(s, row_id, "550 no such user", permanent=True, retry_at=T0)
    (row,) = desk.outbox()
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "550 no such user")


def _parts(raw: bytes) -> tuple[str, str, str]:
    sent = email.message_from_bytes(raw, policy=email.policy.default)
    text = sent.get_body(("plain",))
    html = sent.get_body(("html",))
    assert text is not None and html is not None
    return str(sent["Reply-To"]), text.get_content(), html.get_content()


TEAM_OF_TWO = {"teams": [TeamConfig("support", ["alice@example.com", "bob@example.com"]), TeamConfig("billing")],
               "agents": [AgentConfig("alice@example.com", "Alice", "manager"), AgentConfig("bob@example.com", "Bob")]}


def test_each_agent_of_a_team_gets_the_new_case_with_a_reply_address_of_their_own(engine: Engine,
                                                                                  tmp_path: Path) -> None:
    desk = Desk(engine, tmp_path, **TEAM_OF_TWO)
    desk.ingest(mail("jane@acme.test", "Printer on fire", body="It <b>burns</b>."))
    mails = {m.recipient: _parts(m.raw) for m in desk.outbox() if m.kind == "case_created"}
    alice, bob = mails["alice@example.com"], mails["bob@example.com"]
    assert alice[0] != bob[0]  # each reply token names its agent
    assert alice[1:] == bob[1:] and "It <b>burns</b>." in alice[1] and "It &lt;b&gt;burns&lt;/b&gt;." in alice[2]
    assert "we have received your message" in mails["jane@acme.test"][1]


def test_an_admin_template_that_names_the_agent_names_each_agent(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "case_created.j2").write_text(
        '{% extends "layout.j2" %}\n'
        "{% block text %}Hi {{ recipient.name }}, case {{ case.number }} is new.{% endblock %}\n"
        "{% block html %}<p>Hi {{ recipient.name }}</p>{% endblock %}\n")
    desk = Desk(engine, tmp_path, templates_dir="tpl", **TEAM_OF_TWO)
    desk.ingest(mail("Jane Customer <jane@acme.test>", "Printer on fire"))
    texts = {m.recipient: _parts(m.raw)[1] for m in desk.outbox()}
    assert texts["alice@example.com"].startswith("Hi Alice, case ")
    assert texts["bob@example.com"].startswith("Hi Bob, case ")
    assert texts["jane@acme.test"].startswith("Hi Jane Customer, case ")


def test_a_mail_that_fails_in_a_batch_is_rolled_back_alone(desk: Desk) -> None:
    writer = IngestWriter(desk.sessions)
    (delivery,) = deliveries_for(desk.rt, ["support@example.com"], "x@client.test", "smtp")
    first, buggy, last = (parse_message(mail(f"{name}@acme.test", name.title())) for name in ("ann", "eve", "bob"))

    def bug(s: Session) -> None:
        ingest_message(s, buggy, delivery, desk.rt)
        raise RuntimeError("a bug on this mail")

    jobs = [writer.submit(lambda s: ingest_message(s, first, delivery, desk.rt)), writer.submit(bug),
            writer.submit(lambda s: ingest_message(s, last, delivery, desk.rt))]
    writer.start()  # the three are queued already: one batch
    writer.stop()
    with pytest.raises(RuntimeError, match="a bug on this mail"):
        jobs[1].result()
    cases = desk.q(lambda s: {c.number: c.subject for c in s.scalars(select(Case))})
    assert sorted(cases.values()) == ["Ann", "Bob"]  # stored once each, Eve's not at all
    assert cases[jobs[0].result().case_number] == "Ann" and cases[jobs[2].result().case_number] == "Bob"
    assert sorted(m.recipient for m in desk.outbox()) == ["ann@acme.test", "bob@acme.test"]


def test_a_caller_that_stops_waiting_does_not_stop_the_writer(desk: Desk) -> None:
    """A scheduler job cancelled at shutdown cancels its future while the writer runs it; the
    writer goes on with the next mail rather than dying with InvalidStateError."""
    writer = IngestWriter(desk.sessions)
    (delivery,) = deliveries_for(desk.rt, ["support@example.com"], "x@client.test", "smtp")
    ann, bob = (parse_message(mail(f"{name}@acme.test", name.title())) for name in ("ann", "bob"))
    started = threading.Event()
    proceed = threading.Event()

    def slow(s: Session) -> None:
        started.set()
        proceed.wait(10)
        ingest_message(s, ann, delivery, desk.rt)

    writer.start()
    gone = writer.submit(slow)
    assert started.wait(10)
    assert gone.cancel()  # as asyncio.wrap_future's caller does when its task is cancelled
    proceed.set()
    later = writer.submit(lambda s: ingest_message(s, bob, delivery, desk.rt))
    assert later.result(10).action == "created"
    writer.stop()


def test_writer_reports_storage_failure_and_keeps_nothing_of_that_mail(desk: Desk, engine: Engine) -> None:
    desk.ingest(mail("early@acme.test", "Before the failure"))
    break_inserts(engine, "cases", "disk on fire")
    writer = IngestWriter(desk.sessions)
    writer.start()
    msg = parse_message(mail("jane@acme.test", "Printer"))
    (delivery,) = deliveries_for(desk.rt, ["support@example.com"], "jane@acme.test", "smtp")
    threaded = parse_message(mail("early@acme.test", "Re: [#1] Before the failure"))
    ok = writer.submit(lambda s: ingest_message(s, threaded, delivery, desk.rt))
    bad = writer.submit(lambda s: ingest_message(s, msg, delivery, desk.rt))
    writer.stop()
    with pytest.raises(StorageError, match="disk on fire"):
        bad.result()
    assert ok.result().action == "threaded"  # the other mail of the batch is stored
    assert desk.q(lambda s: s.scalar(select(func.count(Message.id)))) == 2
    jane = select(func.count(Contact.id)).where(Contact.email == "jane@acme.test")
    assert desk.q(lambda s: s.scalar(jane)) == 0
    assert desk.q(lambda s: s.scalar(select(func.count(Post.id)))) == 2


def test_a_handed_over_mail_that_fails_processing_is_quarantined_whole(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker serving SMTP sends a small mail's bytes inside the parsed mail, and nothing
    else: if the pipeline then fails on it, the quarantine must still get those bytes."""
    import asyncio

    from maild.ingest import committer
    from maild.ingest.smtp_worker import parse_received
    from maild.ingest.wire import Envelope

    raw = mail("eve@acme.test", "Odd one", msgid="odd@acme.test")
    parsed = parse_received(raw, str(desk.rt.raw_store.root), str(desk.rt.attachment_store.root))
    assert isinstance(parsed.mail, InboundMessage) and parsed.raw == b""  # the bytes travel in the mail only
    assert parsed.mail.raw_mail == RawMail(data=raw)

    def bug(*args: object) -> None:
        raise RuntimeError("a bug on this mail")
    monkeypatch.setattr(committer, "ingest_message", bug)
    writer = IngestWriter(desk.sessions)
    writer.start()
    try:
        envelope = Envelope("eve@acme.test", ["support@example.com"])
        result = asyncio.run(committer.Committer(desk.rt, writer).commit(parsed, envelope))
    finally:
        writer.stop()
    assert result.stored and result.quarantined is not None
    assert Path(result.quarantined).read_bytes() == raw
    note = Path(result.quarantined).with_suffix(".json").read_text()
    assert "processing failed: RuntimeError: a bug on this mail" in note


def test_a_sqlite_connection_commits_durably(tmp_path: Path) -> None:
    """Every connection maild opens to SQLite: WAL, an fsync at each commit (a 250 means the
    mail is on disk), foreign keys enforced, checkpoints every SQLITE_WAL_CHECKPOINT_PAGES, the
    WAL cut back to SQLITE_JOURNAL_SIZE_LIMIT after one, and a wait for a lock bounded."""
    from maild.store.db import (
        SQLITE_BUSY_TIMEOUT_MS,
        SQLITE_JOURNAL_SIZE_LIMIT,
        SQLITE_WAL_CHECKPOINT_PAGES,
        make_engine,
    )

    engine = make_engine(f"sqlite:///{tmp_path}/maild.db")
    names = ("journal_mode", "synchronous", "foreign_keys", "wal_autocheckpoint", "journal_size_limit", "busy_timeout")
    with engine.connect() as conn:
        pragmas = [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names]
    engine.dispose()
    assert pragmas == ["wal", 2, 1, SQLITE_WAL_CHECKPOINT_PAGES,  # synchronous 2: FULL
                       SQLITE_JOURNAL_SIZE_LIMIT, SQLITE_BUSY_TIMEOUT_MS]
    assert SQLITE_JOURNAL_SIZE_LIMIT <= SQLITE_WAL_CHECKPOINT_PAGES * 4096 and SQLITE_BUSY_TIMEOUT_MS <= 30_000


def test_an_address_no_header_can_carry_costs_its_own_mail_only(desk: Desk) -> None:
    """A contact of older data whose address is not a plain addr-spec: the customer's mail is
    still stored and the others still hear of it; that one address gets nothing."""
    n = desk.ingest(mail("jane@acme.test", "Printer")).case_number

    def add_odd_participant(s: Session) -> None:
        case = s.get(Case, n)
        odd = Contact(email="jörg doe@acme.test", name="Jörg", state="active", fields={}, created_at=desk.now)
        s.add(odd)
        s.flush()
        case.participants.append(CaseParticipant(contact=odd))
        s.commit()
    desk.q(add_odd_participant)
    before = len(desk.outbox())
    out = desk.ingest(mail("jane@acme.test", f"Re: [#{n}] Printer", "It still burns."))
    assert (out.action, out.case_number) == ("threaded", n)
    assert all(r.recipient != "jörg doe@acme.test" for r in desk.outbox()[before:])


def test_participants_and_acknowledgements_per_mail_are_capped(engine: Engine, tmp_path: Path) -> None:
    desk = Desk(engine, tmp_path, protection=ProtectionConfig(max_participants_per_mail=3, max_acks_per_mail=2))
    cc = ", ".join(f"p{i}@victims.test" for i in range(8))
    out = desk.ingest(mail("spammer@evil.test", "Buy", headers={"Cc": cc}))
    case = desk.case(out.case_number)
    assert [p.contact.email for p in case.participants] == ["p0@victims.test", "p1@victims.test", "p2@victims.test"]
    assert [r.recipient for r in desk.outbox()] == ["spammer@evil.test", "p0@victims.test"]  # the requester first
    assert "limit: 2 acknowledgements a mail" in out.acknowledgement
