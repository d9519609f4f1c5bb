"""workers.view: how many live workers each worker last counted

A joining worker waits until every other worker has counted it (and so
shrunk to its new share of each model's max_concurrency) before it sends
anything, so a model's limit holds across workers during joins too.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("view", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("view")
