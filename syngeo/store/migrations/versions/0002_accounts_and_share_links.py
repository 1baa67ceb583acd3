"""accounts, owners, revocable share links, one dataset per content

Revision ID: 0002
Revises: 0001

- users and their API tokens (only a token's SHA-256 is kept);
- an owner on every dataset and run (rows made before are owned by the user "local", the
  single user of a deployment without SYNGEO_AUTH);
- datasets.content_key = owner:format:sha256, unique, so concurrent identical uploads give
  one dataset (older duplicates keep a NULL key and stay readable);
- share links keyed by an id, their token kept as a SHA-256, with expiry and revocation.
"""

import hashlib
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

LOCAL_USER = "local"


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.String(40), primary_key=True),
        sa.Column('name', sa.String(64), nullable=False, unique=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.execute(sa.text("INSERT INTO users (id, name) VALUES (:id, :id)")
               .bindparams(id=LOCAL_USER))
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.String(40), primary_key=True),
        sa.Column('user_id', sa.String(40), sa.ForeignKey('users.id', ondelete='CASCADE'),
                  nullable=False, index=True),
        sa.Column('token_sha256', sa.String(64), nullable=False, unique=True),
        sa.Column('label', sa.String(255), nullable=False, server_default=''),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    for table in ('datasets', 'runs'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('owner_id', sa.String(40), nullable=False,
                                       server_default=LOCAL_USER))
            batch.create_index(f'ix_{table}_owner_id', ['owner_id'])
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('content_key', sa.String(160), nullable=True))
        batch.create_unique_constraint('uq_datasets_content_key', ['content_key'])

    conn = op.get_bind()
    seen: set[str] = set()
    rows = conn.execute(sa.text("SELECT id, owner_id, format, sha256 FROM datasets "
                                "ORDER BY created_at, id")).all()
    for dataset_id, owner, fmt, sha in rows:
        key = f"{owner}:{fmt}:{sha}"
        if key not in seen:  # the oldest of duplicates keeps the key
            seen.add(key)
            conn.execute(sa.text("UPDATE datasets SET content_key = :k WHERE id = :i"),
                         {"k": key, "i": dataset_id})

    old = conn.execute(sa.text("SELECT token, run_id, created_at FROM share_links")).all()
    op.drop_index('ix_share_links_run_id', table_name='share_links')
    op.drop_table('share_links')
    op.create_table(
        'share_links',
        sa.Column('id', sa.String(40), primary_key=True),
        sa.Column('token_sha256', sa.String(64), nullable=False, unique=True),
        sa.Column('run_id', sa.String(40), sa.ForeignKey('runs.id', ondelete='CASCADE'),
                  nullable=False, index=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    )
    for token, run_id, created_at in old:  # links already sent keep working
        conn.execute(sa.text("INSERT INTO share_links (id, token_sha256, run_id, created_at) "
                             "VALUES (:i, :h, :r, :c)"),
                     {"i": f"sh_{secrets.token_hex(8)}",
                      "h": hashlib.sha256(token.encode()).hexdigest(), "r": run_id,
                      "c": created_at})


def downgrade() -> None:
    raise NotImplementedError("share tokens are kept only as hashes: this migration cannot "
                              "be undone; restore a backup instead")
