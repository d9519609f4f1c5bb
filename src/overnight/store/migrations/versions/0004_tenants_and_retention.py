"""API keys stored as hashes, per-tenant quotas, and file expiry

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("shown", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"], unique=False)
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("max_pending_batches", sa.BigInteger(), nullable=True),
        sa.Column("max_enqueued_requests", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.add_column("batches", sa.Column("output_expires_after", sa.BigInteger(), nullable=True))
    op.add_column("uploads", sa.Column("file_expires_after", sa.BigInteger(), nullable=True))
    op.create_index("ix_batches_tenant_status", "batches", ["tenant", "status"], unique=False)
    op.create_index("ix_files_expires_at", "files", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_files_expires_at", table_name="files")
    op.drop_index("ix_batches_tenant_status", table_name="batches")
    with op.batch_alter_table("uploads") as uploads:
        uploads.drop_column("file_expires_after")
    with op.batch_alter_table("batches") as batches:
        batches.drop_column("output_expires_after")
    op.drop_table("tenant_quotas")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
