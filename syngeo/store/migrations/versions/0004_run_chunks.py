"""runs split across workers

Revision ID: 0004
Revises: 0003

- runs.n_chunks: how many chunks a run is split into (0: one task runs it);
- run_chunks: each chunk's state, attempts, heartbeat, progress and partial result.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('n_chunks', sa.Integer(), nullable=False,
                                   server_default='0'))
    op.create_table(
        'run_chunks',
        sa.Column('run_id', sa.String(40), sa.ForeignKey('runs.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('index', sa.Integer(), primary_key=True),
        sa.Column('status', sa.String(16), nullable=False, index=True),
        sa.Column('work', JSON, nullable=False),
        sa.Column('cost', sa.Float(), nullable=False),
        sa.Column('progress', sa.Float(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('lost', sa.Integer(), nullable=False),
        sa.Column('worker', sa.String(255), nullable=True),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('summary', JSON, nullable=True),
        sa.Column('arrays_artifact', sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table('run_chunks')
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('n_chunks')
