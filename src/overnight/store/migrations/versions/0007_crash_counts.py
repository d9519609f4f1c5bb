"""chunks.crashes, batches.crashes: how often a worker died holding them

A chunk, a validation or a finalisation whose worker keeps dying on it
(a request that crashes the backend, a file that runs it out of memory) is
given up after `max_chunk_attempts` deaths instead of being retried for
ever. `attempts` cannot count them: it also counts the clean hand-backs of
a shutdown, and it is the lease's fencing token.

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
    for table in ("chunks", "batches"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("crashes", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("batches", "chunks"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("crashes")
