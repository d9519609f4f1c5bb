"""batch_snapshots, ui_sessions, and batch indexes: what the dashboard reads

The throughput chart needs a running batch's counts over time, the
dashboard's sign-in needs a server-side session, and its batch list pages
by creation time with and without a tenant and a status: the status
indexes gain the creation order (at 100,000 batches a status filter sorted
thousands of rows a page without it).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_batches_created", "batches", ["created_us", "id"], unique=False)
    op.drop_index("ix_batches_status", table_name="batches")
    op.create_index(
        "ix_batches_status_created", "batches", ["status", "created_us", "id"], unique=False
    )
    op.drop_index("ix_batches_tenant_status", table_name="batches")
    op.create_index(
        "ix_batches_tenant_status_created",
        "batches",
        ["tenant", "status", "created_us", "id"],
        unique=False,
    )
    op.create_table(
        "batch_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("completed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batch_snapshots_batch", "batch_snapshots", ["batch_id", "at"], unique=False)
    op.create_table(
        "ui_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=True),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("key_digest", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_expires_at", table_name="ui_sessions")
    op.drop_table("ui_sessions")
    op.drop_index("ix_batch_snapshots_batch", table_name="batch_snapshots")
    op.drop_table("batch_snapshots")
    op.drop_index("ix_batches_tenant_status_created", table_name="batches")
    op.create_index("ix_batches_tenant_status", "batches", ["tenant", "status"], unique=False)
    op.drop_index("ix_batches_status_created", table_name="batches")
    op.create_index("ix_batches_status", "batches", ["status"], unique=False)
    op.drop_index("ix_batches_created", table_name="batches")
