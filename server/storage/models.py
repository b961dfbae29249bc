"""The database schema (SQLAlchemy Core tables). Alembic migrations create it; the
repositories query it. Times are stored as UTC instants."""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCInstant(TypeDecorator):
    """An aware UTC datetime on both databases. SQLite has no time zones, so there it
    is stored as naive UTC text, which also sorts and compares correctly."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


Instant = UTCInstant()
ID = String(200)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("timezone", String(64), nullable=False),
    Column("routing", String(16), nullable=False, server_default="builtin"),
    Column("wrap_up_timeout_s", Integer, nullable=False, server_default="120"),
    Column("reply_timeout_s", Integer, nullable=False, server_default="86400"),
    Column("merge_channels", Boolean, nullable=False, server_default="0"),
    Column("widget_origins", JSON, nullable=False),
    Column("created_at", Instant, nullable=False),
    # /webchat's abuse limits set for the tenant (server/providers/webchat.py); a key
    # left out, or null, is the process default from the environment
    Column("webchat_limits", JSON, nullable=True),
)

teams = Table(
    "teams",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("name", ID, primary_key=True),
    Column("business_hours", JSON, nullable=False),
    Column("queue_capacity", Integer, nullable=False, server_default="50"),
    Column("queue_timeout_s", Integer, nullable=False, server_default="300"),
    Column("offer_timeout_s", Integer, nullable=False, server_default="20"),
    Column("service_level_s", Integer, nullable=False, server_default="20"),
    Column("wrap_up_timeout_s", Integer, nullable=True),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

agents = Table(
    "agents",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", ID, primary_key=True),
    Column("name", Text, nullable=False),
    Column("teams", JSON, nullable=False),
    Column("chat_capacity", Integer, nullable=False, server_default="3"),
    Column("phone", String(64), nullable=True),
    Column("presence", String(16), nullable=False, server_default="offline"),
    Column("presence_at", Instant, nullable=True),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

customers = Table(
    "customers",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    # The integrator's customer id when it names one, else the contact it came from.
    Column("id", ID, primary_key=True),
    Column("name", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("phone", Text, nullable=True),
    Column("contact", Text, nullable=True),
    Column("updated_at", Instant, nullable=False),
)

conversations = Table(
    "conversations",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", ID, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("state", String(32), nullable=True),
    Column("direction", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    # Every channel used, delimited as "|call|sms|" so that SQL can match one by LIKE.
    Column("channels", Text, nullable=False),
    Column("contact", Text, nullable=False),
    Column("contacto_number", Text, nullable=True),
    Column("customer_id", ID, nullable=True),
    Column("customer_name", Text, nullable=True),
    Column("customer_email", Text, nullable=True),
    Column("customer_phone", Text, nullable=True),
    Column("team", ID, nullable=True),
    Column("agent_id", ID, nullable=True),
    # Denormalised at the moment the agent is set, so views need no join.
    Column("agent_name", Text, nullable=True),
    Column("disposition", Text, nullable=True),
    Column("wrap_up_note", Text, nullable=True),
    Column("ticket_id", Text, nullable=True),
    Column("csat", Integer, nullable=True),
    Column("hangup_source", String(16), nullable=True),
    Column("has_recording", Boolean, nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("queued_at", Instant, nullable=True),
    Column("answered_at", Instant, nullable=True),
    Column("ended_at", Instant, nullable=True),
    Column("closed_at", Instant, nullable=True),
    Column("wait_s", Float, nullable=True),
    Column("handle_s", Float, nullable=True),
    Column("handled_s", Float, nullable=True),
    Column("handling_since", Instant, nullable=True),
    Column("last_occurred_at", Instant, nullable=False),
    Column("offer_id", ID, nullable=True),
    Column("offer_agent_id", ID, nullable=True),
    Column("offer_expires_at", Instant, nullable=True),
    Column("offer_fallback", String(16), nullable=True),
    # Stamped from a database sequence on every change: the catch-up watermark.
    Column("change_seq", BigInteger, nullable=False),
    Column("updated_at", Instant, nullable=False),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    # SQLite's commit_stamp reads max(change_seq) in every ingest transaction.
    Index("ix_conversations_change_seq", "change_seq"),
)


class CodePoint(ColumnElement):
    """A text column in code-point order (COLLATE "C" on PostgreSQL, where views sort
    text that way; SQLite's default BINARY already is): indexes in the order the view
    queries sort by."""

    inherit_cache = True

    def __init__(self, column):
        self.column = column
        self.type = column.type


@compiles(CodePoint)
def _code_point(element, compiler, **kw):
    return compiler.process(element.column, **kw)


@compiles(CodePoint, "postgresql")
def _code_point_postgresql(element, compiler, **kw):
    return compiler.process(element.column.collate("C"), **kw)


# Indexes in the exact order the view queries sort by (migration 0004, docs/views.md):
# every UPDATE of a conversation writes each of them (change_seq changes on every
# write, so no update is HOT), so there is one per sortable field and no more.
_c = conversations.c
for _name, _keys in {
    "sort": (_c.created_at, CodePoint(_c.id)),
    "status": (CodePoint(_c.status), _c.created_at.desc(), CodePoint(_c.id)),
    "channel": (CodePoint(_c.channel), _c.created_at.desc(), CodePoint(_c.id)),
    "direction": (CodePoint(_c.direction), _c.created_at.desc(), CodePoint(_c.id)),
    "contact": (CodePoint(_c.contact), _c.created_at.desc(), CodePoint(_c.id)),
}.items():
    Index(f"ix_conversations_{_name}", _c.tenant_id, *_keys)
# The primary key is (tenant_id, id) already in SQLite's code-point order.
Index("ix_conversations_id", _c.tenant_id, CodePoint(_c.id)).ddl_if(dialect="postgresql")
del _c, _name, _keys

events = Table(
    "events",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("event_id", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", Instant, nullable=False),
    Column("received_at", Instant, nullable=False),
    Column("outcome", String(16), nullable=False),  # applied or stale
    # The conversation's version after this event (applied), or when it came (stale).
    Column("version", Integer, nullable=False),
    Column("message", Text, nullable=True),
    Column("data", JSON, nullable=False),
    Index("ix_events_conversation", "tenant_id", "conversation_id", "version"),
)

# Rejected events reserve nothing: their event_id may be sent again and judged afresh.
rejected_events = Table(
    "rejected_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("event_id", Text, nullable=True),
    Column("conversation_id", Text, nullable=True),
    Column("type", Text, nullable=True),
    Column("code", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("received_at", Instant, nullable=False),
    Index("ix_rejected_events_tenant", "tenant_id", "received_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", ID, primary_key=True),
    Column("message_id", ID, primary_key=True),
    Column("sender", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("at", Instant, nullable=False),
    Column("status", String(16), nullable=True),
)

tickets = Table(
    "tickets",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", ID, primary_key=True),
    Column("ticket_id", ID, primary_key=True),
    Column("system", Text, nullable=True),
    Column("url", Text, nullable=True),
    Column("linked_at", Instant, nullable=False),
)

recordings = Table(
    "recordings",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", ID, primary_key=True),
    Column("id", ID, primary_key=True),
    Column("duration_s", Float, nullable=False),
    Column("content_type", String(64), nullable=False),
    Column("created_at", Instant, nullable=False),
)

views = Table(
    "views",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("owner", ID, nullable=False),
    Column("name", Text, nullable=False),
    Column("visibility", String(16), nullable=False),  # private or tenant
    Column("filters", JSON, nullable=False),
    Column("columns", JSON, nullable=False),
    Column("sort", JSON, nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("updated_at", Instant, nullable=False),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    Index("ix_views_owner", "tenant_id", "owner"),
)


# --- channels: providers, provider call references, initiate requests ---------
# Migration 0005_channels.

# One provider account of a tenant (PUT /api/v1/providers/{provider}). Each
# channel is carried by one provider; `credentials` are write-only (never answered).
providers = Table(
    "providers",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("channels", JSON, nullable=False),
    Column("numbers", JSON, nullable=False),  # [{"number": "+E164", "team": name}]
    Column("credentials", JSON, nullable=True),
    Column("updated_at", Instant, nullable=False),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

# A call's reference at a provider -> its conversation: the provider's call id for an
# inbound call, the server's own reference (the conversation id) for one it placed.
# `provider_call_id` is what bridge and hangup need.
channel_calls = Table(
    "channel_calls",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("call_id", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False),
    Column("provider_call_id", ID, nullable=True),
    Column("created_at", Instant, nullable=False),
    Index("ix_channel_calls_conversation", "tenant_id", "conversation_id"),
)

# The conversation a contact's inbound messages on a channel opened last (migration
# 0008). One row per (tenant, channel, contact): a first message claims it before
# opening a conversation, and the database lets one claim win while the conversation
# it names is not closed, so first messages arriving at once on several processes
# agree on one conversation (server/providers/inbound.py). A tenant with merge_channels claims
# under the channel "*", one row per contact whatever the channel; `opened_on` is the
# channel the winning claimer came in on (migration 0009), which a claimer from
# another channel adds to the conversation.
inbound_openings = Table(
    "inbound_openings",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("contact", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False),
    Column("opened_on", String(16), nullable=False),
)

# Click-to-initiate requests by Idempotency-Key: the answer given, so a retry gets it
# again without a second provider call; also what the per-user rate limit counts.
initiate_requests = Table(
    "initiate_requests",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("user_id", ID, primary_key=True),
    Column("key", ID, primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("conversation_id", ID, nullable=False),
    Column("status_code", Integer, nullable=True),  # null while the first is in flight
    Column("response", JSON, nullable=True),
    Column("created_at", Instant, nullable=False),
    Index("ix_initiate_requests_user", "tenant_id", "user_id", "created_at"),
)

# --- routing (migration 0006) ----------------------------------------------------------------

# Durable timers: offer expiry, queue timeout, wrap-up timeout, reply timeout and the
# presence grace. `key` names what the timer is for (one per purpose and conversation
# or agent); `event` is the envelope ingest gets when it fires (its event_id is fixed,
# so a timer fired twice is a duplicate, never a second change). `claimed_until` is the
# SQLite lease (PostgreSQL claims with FOR UPDATE SKIP LOCKED instead).
timers = Table(
    "timers",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("conversation_id", ID, nullable=True),
    Column("due_at", Instant, nullable=False),
    Column("event", JSON, nullable=False),
    Column("claimed_until", Instant, nullable=True),
    Index("ix_timers_due", "due_at"),
    Index("ix_timers_conversation", "tenant_id", "conversation_id"),
)

# Every offer made (by the router or a transfer), kept after it ends so that a late
# accept can be told `expired` or `taken`. Written in the transaction of the offer.
offers = Table(
    "offers",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("offer_id", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False),
    Column("agent_id", ID, nullable=False),
    Column("expires_at", Instant, nullable=False),
    Column("created_at", Instant, nullable=False),
)

# SQLite has no advisory locks: the process that holds a tenant's lease routes it.
routing_leases = Table(
    "routing_leases",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Instant, nullable=False),
)

# --- presence across processes (migration 0007) --------------------------------------------

# One row per agent and process holding at least one of the agent's websocket
# connections. The process refreshes `seen_at` of all its rows every heartbeat; a row
# not seen for three heartbeats belongs to a dead process and no longer counts (it is
# swept). Not keyed to `agents`: a token may name an agent that has no row.
agent_connections = Table(
    "agent_connections",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("agent_id", ID, primary_key=True),
    Column("process_id", String(64), primary_key=True),
    Column("seen_at", Instant, nullable=False),
    Index("ix_agent_connections_process_id", "process_id"),
)

# --- websocket tickets (migration 0010) ------------------------------------------------------

# Single-use tickets a page opens /ws with instead of its token (POST /api/v1/ws-tickets,
# server/tenants/tickets.py): in the database so that a page's socket may land on any
# process. Only the ticket's SHA-256 is kept; the principal is the token's that asked
# for it, good until `token_expires_at`. A ticket is deleted when used; expired ones
# are swept whenever one is issued.
ws_tickets = Table(
    "ws_tickets",
    metadata,
    Column("ticket_hash", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("user_id", ID, nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_expires_at", Instant, nullable=False),
    Column("expires_at", Instant, nullable=False),
    Index("ix_ws_tickets_expires_at", "expires_at"),
)
