"""Messages can be found by their run: a run paused for a tool call's approval is found by its id in the history
(its answer so far, ``status`` ``waiting``, carries what it goes on from), also by an instance that does not have
it in its run store (restarted, with the in-memory store).

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_user_run", "messages", ["user_id", "run_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_user_run", table_name="messages")
