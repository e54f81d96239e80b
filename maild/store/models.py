"""SQLAlchemy models: the help desk's nouns. Schema changes go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Integer ids that are BIGINT on PostgreSQL but stay INTEGER PRIMARY KEY (rowid) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(64))
    fields: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    domains: Mapped[list[OrganizationDomain]] = relationship(
        back_populates="organization", cascade="all, delete-orphan", order_by="OrganizationDomain.id"
    )


class OrganizationDomain(Base):
    __tablename__ = "organization_domains"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    organization: Mapped[Organization] = relationship(back_populates="domains")


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lowercased
    name: Mapped[str] = mapped_column(String(255), default="")
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    type: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | inactive | bouncing
    fields: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_mail_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    organization: Mapped[Organization | None] = relationship()
    tags: Mapped[list[ContactTag]] = relationship(cascade="all, delete-orphan", order_by="ContactTag.tag")
    notes: Mapped[list[ContactNote]] = relationship(cascade="all, delete-orphan", order_by="ContactNote.id")


class Case(Base):
    """A case; its number is its primary key, so the database hands out numbers."""

    __tablename__ = "cases"
    number: Mapped[int] = mapped_column(Id, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    mailbox: Mapped[str] = mapped_column(String(320))
    queue: Mapped[str | None] = mapped_column(String(128), index=True)
    stage: Mapped[str] = mapped_column(String(32), default="new", index=True)
    type: Mapped[str] = mapped_column(String(16), default="question")
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    assignee: Mapped[str | None] = mapped_column(String(320))
    requester_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    linked_case: Mapped[int | None] = mapped_column(ForeignKey("cases.number"))
    contract: Mapped[str | None] = mapped_column(String(255), index=True)
    first_response_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # SLA clocks as data, so timers survive restarts: when to warn, and what was already said.
    first_response_warn_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolution_warn_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sla_events_sent: Mapped[list] = mapped_column(JSON, default=list)  # e.g. ["resolution:sla_warning"]
    sla_paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sla_remaining: Mapped[dict] = mapped_column(JSON, default=dict)  # clock -> business seconds left, while paused
    root_cause: Mapped[str | None] = mapped_column(Text)
    closed_reason: Mapped[str | None] = mapped_column(Text)
    fields: Mapped[dict] = mapped_column(JSON, default=dict)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_response_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    snoozed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    requester: Mapped[Contact] = relationship(foreign_keys=[requester_id])
    organization: Mapped[Organization | None] = relationship()
    participants: Mapped[list[CaseParticipant]] = relationship(
        cascade="all, delete-orphan", order_by="CaseParticipant.id"
    )
    tags: Mapped[list[CaseTag]] = relationship(cascade="all, delete-orphan", order_by="CaseTag.tag")
    followers: Mapped[list[CaseFollower]] = relationship(
        cascade="all, delete-orphan", order_by="CaseFollower.id"
    )
    posts: Mapped[list[Post]] = relationship(back_populates="case", order_by="Post.id")
    history: Mapped[list[HistoryEntry]] = relationship(order_by="HistoryEntry.id")


class ContactTag(Base):
    __tablename__ = "contact_tags"
    __table_args__ = (UniqueConstraint("contact_id", "tag"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    tag: Mapped[str] = mapped_column(String(128), index=True)
    color: Mapped[str | None] = mapped_column(String(32))


class ContactNote(Base):
    __tablename__ = "contact_notes"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ContractClient(Base):
    """An organization or a contact in a contract (contracts themselves live in the config)."""

    __tablename__ = "contract_clients"
    __table_args__ = (UniqueConstraint("contract", "organization_id", "contact_id", name="uq_contract_clients"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    contract: Mapped[str] = mapped_column(String(255), index=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CaseParticipant(Base):
    """A contact on the customer side of a case besides the requester (cc'd once, kept)."""

    __tablename__ = "case_participants"
    __table_args__ = (UniqueConstraint("case_number", "contact_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int] = mapped_column(ForeignKey("cases.number", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    contact: Mapped[Contact] = relationship()


class CaseTag(Base):
    __tablename__ = "case_tags"
    __table_args__ = (UniqueConstraint("case_number", "tag"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int] = mapped_column(ForeignKey("cases.number", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(128), index=True)


class CaseFollower(Base):
    """Someone who hears of a case's changes: an agent address or a customer contact's."""

    __tablename__ = "case_followers"
    __table_args__ = (UniqueConstraint("case_number", "address"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int] = mapped_column(ForeignKey("cases.number", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(16))  # agent | customer


class Message(Base):
    """One stored inbound mail; `dedup_key` (Message-ID or content hash) makes ingest idempotent."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox", "dedup_key", name="uq_messages_mailbox_dedup_key"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int | None] = mapped_column(ForeignKey("cases.number"), index=True)
    mailbox: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    dedup_key: Mapped[str] = mapped_column(String(998))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    from_address: Mapped[str] = mapped_column(String(320), default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    classification: Mapped[str] = mapped_column(String(16), default="normal")
    matched_by: Mapped[str] = mapped_column(String(16), default="new")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RawMessage(Base):
    """A small mail's raw bytes (store.raw_messages), kept by the commit that stores the
    mail instead of by a file of its own; larger ones are files of the raw blob store."""

    __tablename__ = "raw_messages"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int] = mapped_column(ForeignKey("cases.number", ondelete="CASCADE"), index=True)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    visibility: Mapped[str] = mapped_column(String(16))  # public | internal
    author: Mapped[str] = mapped_column(String(320))
    author_kind: Mapped[str] = mapped_column(String(16))  # customer | agent | system
    source: Mapped[str] = mapped_column(String(16))  # email | cli | rule | system
    body: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    case: Mapped[Case] = relationship(back_populates="posts")
    message: Mapped[Message | None] = relationship()
    attachments: Mapped[list[Attachment]] = relationship(order_by="Attachment.id")


class Attachment(Base):
    """Metadata of a file on a post; the bytes live in the blob store under `sha256`."""

    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class HistoryEntry(Base):
    __tablename__ = "history"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int] = mapped_column(ForeignKey("cases.number", ondelete="CASCADE"), index=True)
    actor: Mapped[str] = mapped_column(String(320))
    via: Mapped[str] = mapped_column(String(16))  # mail | cli | rule | timer | system
    rule: Mapped[str | None] = mapped_column(String(255))
    field: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Event(Base):
    """A change worth telling someone about; notification fan-out reads these rows."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int] = mapped_column(ForeignKey("cases.number", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(320))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OutboxMail(Base):
    """A mail to send. The commit stores what the mail needs as data (`kind` names the template,
    `context` its variables as JSON, `headers` the rest); the outbox worker renders and composes
    it, so a template that fails costs that one row (failed, `render_failed`), never the change
    that queued it. The Message-ID is fixed at commit: threading and bounces match on it.
    `raw`: bytes queued ready-made (rows of older versions), sent as they are."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_recipient_created", "recipient", "created_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_number: Mapped[int | None] = mapped_column(ForeignKey("cases.number"), index=True)
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # the template / event kind
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    recipient: Mapped[str] = mapped_column(String(320))
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    context: Mapped[str | None] = mapped_column(Text)  # JSON, notify.mailcontext's encoding
    headers: Mapped[dict | None] = mapped_column(JSON)  # recipient, From, Reply-To, threading, attachments
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    # failed because the mail could not be built (template, attachment): tried again when the
    # templates are read again (a start, a reload)
    render_failed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class MailboxState(Base):
    """Per-mailbox cursor for pollers (IMAP UIDVALIDITY and last committed UID)."""

    __tablename__ = "mailbox_state"
    mailbox: Mapped[str] = mapped_column(String(320), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
