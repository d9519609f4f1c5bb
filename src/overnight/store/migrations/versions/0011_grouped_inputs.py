"""batches.grouped_blob_key: the grouped copy a batch's chunks read

With prefix grouping across chunks, validation may write a copy of the
input with the lines of one prompt prefix together, and cut the batch's
chunks from it (runner/regroup.py); the batch names that copy. Batches
from before read their input file.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("grouped_blob_key", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("grouped_blob_key")
