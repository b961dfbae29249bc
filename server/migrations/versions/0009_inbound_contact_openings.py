"""inbound_contact_openings: the conversation a contact's first inbound messages on any
channel agree on, for tenants with merge_channels

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_contact_openings",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("contact", sa.String(200), nullable=False),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "contact", name="pk_inbound_contact_openings"),
    )


def downgrade() -> None:
    op.drop_table("inbound_contact_openings")
