"""agent_connections: agents' websocket connections per process, for the presence grace

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_connections",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(200), nullable=False),
        sa.Column("process_id", sa.String(64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "agent_id", "process_id", name="pk_agent_connections"
        ),
    )
    op.create_index("ix_agent_connections_process_id", "agent_connections", ["process_id"])


def downgrade() -> None:
    op.drop_index("ix_agent_connections_process_id", table_name="agent_connections")
    op.drop_table("agent_connections")
