"""inbound_openings: the conversation a contact's first inbound messages agree on

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_openings",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("contact", sa.String(200), nullable=False),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "channel", "contact", name="pk_inbound_openings"),
    )


def downgrade() -> None:
    op.drop_table("inbound_openings")
