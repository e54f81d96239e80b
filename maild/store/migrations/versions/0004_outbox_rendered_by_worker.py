"""outbox rows hold what a mail needs as data; the outbox worker renders them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.add_column(sa.Column('context', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('headers', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('render_failed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.alter_column('raw', existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # rows still to be rendered cannot be sent by an older version: they go
    op.execute("DELETE FROM outbox WHERE raw IS NULL")
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.alter_column('raw', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column('render_failed')
        batch_op.drop_column('headers')
        batch_op.drop_column('context')
