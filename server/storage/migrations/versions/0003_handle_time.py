"""handle time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 02:41:07.469140
"""

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handled_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("handling_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("handling_since")
        batch_op.drop_column("handled_s")
