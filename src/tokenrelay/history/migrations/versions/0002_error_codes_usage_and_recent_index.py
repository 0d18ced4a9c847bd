"""Failed answers keep their error code, answers their output token count; list conversations by recency.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("error_code", sa.String(64), nullable=True))
        batch.add_column(sa.Column("output_tokens", sa.Integer, nullable=True))
    op.create_index("ix_conversations_user_updated", "conversations", ["user_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_user_updated", table_name="conversations")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("output_tokens")
        batch.drop_column("error_code")
