"""workers and run attempts

Revision ID: 0003
Revises: 0002

- runs.attempts: how many times a worker started the run (the current attempt's number
  fences off a worker that lost the run from writing to it again);
- runs.queued_at: when the run's task message was last sent (the watchdog re-sends a
  message the broker lost);
- workers: the live Celery workers, for /api/health and the watchdog.
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('attempts', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'workers',
        sa.Column('name', sa.String(255), primary_key=True),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('slots', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column('stopping', sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table('workers')
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('queued_at')
        batch.drop_column('attempts')
