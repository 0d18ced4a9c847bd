"""Messages keep their parts (text, reasoning, tool calls and results, metadata, usage, finish, error), and a
content no database can hold as text is stored encoded (``encoding``), so that every answer reads back exactly.

Existing rows are kept as they are: ``parts`` and ``encoding`` are ``NULL`` for them (a message that is its text,
stored plain).

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("parts", sa.Text, nullable=True))
        batch.add_column(sa.Column("encoding", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("encoding")
        batch.drop_column("parts")
