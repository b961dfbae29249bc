"""inbound_openings.opened_on: the channel a claim's opener came in on, so that a
tenant with merge_channels can claim one opening per contact whatever the channel

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
    op.add_column("inbound_openings", sa.Column("opened_on", sa.String(16), nullable=True))
    op.execute("UPDATE inbound_openings SET opened_on = channel")  # claims made per channel
    with op.batch_alter_table("inbound_openings") as batch:
        batch.alter_column("opened_on", existing_type=sa.String(16), nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM inbound_openings WHERE channel = '*'")
    with op.batch_alter_table("inbound_openings") as batch:
        batch.drop_column("opened_on")
