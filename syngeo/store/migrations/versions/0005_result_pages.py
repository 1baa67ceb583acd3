"""stored result pages

Revision ID: 0005
Revises: 0004

- result_pages: each succeeded run's page body (summary, figures, table; gzip-compressed
  JSON) with its ETag and the figure version that built it. Results stored before this
  revision get theirs on their first view (or with `syngeo rebuild-pages`).
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'result_pages',
        sa.Column('run_id', sa.String(40), sa.ForeignKey('runs.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('figure_version', sa.String(64), nullable=False),
        sa.Column('etag', sa.String(64), nullable=False),
        sa.Column('body_gzip', sa.LargeBinary(), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('result_pages')
