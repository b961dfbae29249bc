"""indexes in the order views sort by

Text sort keys compare by code point (COLLATE "C" on PostgreSQL), so an index in the
database's default collation can neither give a view its order nor bound a keyset
cursor. Each sortable field gets one index in the view's order; the filter-only
indexes that no view query can use (agent, team, state, offer) go, since every
UPDATE of a conversation writes every index (docs/views.md has the measurements).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# name -> key columns after tenant_id; "x C" is x in code-point order.
NEW = {
    "sort": ("created_at", "id C"),
    "status": ("status C", "created_at DESC", "id C"),
    "channel": ("channel C", "created_at DESC", "id C"),
    "direction": ("direction C", "created_at DESC", "id C"),
    "contact": ("contact C", "created_at DESC", "id C"),
    "id": ("id C",),  # PostgreSQL only: on SQLite the primary key is this index
}
OLD = {
    "sort": ("created_at", "id"),
    "status": ("status", "created_at"),
    "channel": ("channel", "created_at"),
    "contact": ("contact", "created_at"),
    "agent": ("agent_id", "created_at"),
    "team": ("team", "created_at"),
    "state": ("state", "created_at"),
    "offer": ("offer_id",),
}


def _columns(keys, dialect: str) -> list:
    out = ["tenant_id"]
    for key in keys:
        name, _, how = key.partition(" ")
        if how == "C":
            out.append(sa.text(f'{name} COLLATE "C"') if dialect == "postgresql" else name)
        else:
            out.append(sa.text(key) if how else name)
    return out


def _replace(drop: dict, create: dict) -> None:
    dialect = op.get_bind().dialect.name
    for name in drop:
        if name == "id" and dialect != "postgresql":
            continue
        op.drop_index(f"ix_conversations_{name}", table_name="conversations")
    for name, keys in create.items():
        if name == "id" and dialect != "postgresql":
            continue
        op.create_index(f"ix_conversations_{name}", "conversations", _columns(keys, dialect))


def upgrade() -> None:
    _replace(OLD, NEW)


def downgrade() -> None:
    _replace(NEW, OLD)
