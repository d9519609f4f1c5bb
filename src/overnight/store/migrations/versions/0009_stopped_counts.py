"""chunks.stopped, batches.stopped: the failed lines a stop kept from running

Anthropic's request counts tell `canceled` and `expired` requests apart
from `errored` ones, and so must the counters: `stopped` counts the lines
of `failed` that a cancel or an expiry kept from running (the batch's
`stop_reason` says which). Rows from before count none.

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
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("stopped", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("stopped", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("batches", "chunks"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("stopped")
