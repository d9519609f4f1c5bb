"""workers (for a global concurrency share) and a chunk index for claims

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_workers_heartbeat", "workers", ["heartbeat_at"], unique=False)
    op.create_index("ix_chunks_batch_status", "chunks", ["batch_id", "status", "idx"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_chunks_batch_status", table_name="chunks")
    op.drop_index("ix_workers_heartbeat", table_name="workers")
    op.drop_table("workers")
