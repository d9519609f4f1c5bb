"""together uploads: signed upload URLs, numbered parts, checksum dedupe

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:01:55.637691
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_grants",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=1024), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("upload_id", sa.String(length=64), nullable=True),
        sa.Column("part_number", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("upload_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_upload_grants_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_upload_grants_upload_id"), ["upload_id"], unique=False)

    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index("ix_files_tenant_sha256", ["tenant", "sha256"], unique=False)

    with op.batch_alter_table("upload_parts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("part_number", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("etag", sa.String(length=64), nullable=True))

    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checksum", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_column("checksum")

    with op.batch_alter_table("upload_parts", schema=None) as batch_op:
        batch_op.drop_column("etag")
        batch_op.drop_column("part_number")

    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_tenant_sha256")

    with op.batch_alter_table("upload_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upload_grants_upload_id"))
        batch_op.drop_index(batch_op.f("ix_upload_grants_expires_at"))

    op.drop_table("upload_grants")
