"""Users and API tokens (multi-user mode). A token is 256 random bits shown once; only its
SHA-256 is stored."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from syngeo.store.models import ApiToken, User

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A URL-safe secret of 256 random bits (API tokens, share links)."""
    return secrets.token_urlsafe(32)


def get_user(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def create_user(session: Session, name: str) -> User:
    if not USER_NAME.fullmatch(name):
        raise ValueError(f"user name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    if get_user(session, name) is not None:
        raise ValueError(f"user {name!r} already exists")
    user = User(id=f"usr_{secrets.token_hex(8)}", name=name)
    session.add(user)
    session.flush()
    return user


def issue_token(session: Session, user: User, label: str = "") -> str:
    """A new token for ``user``; the caller shows it once, it is not stored."""
    token = new_secret()
    session.add(ApiToken(id=f"tok_{secrets.token_hex(8)}", user_id=user.id,
                         token_sha256=hash_token(token), label=label[:255]))
    return token


def revoke_tokens(session: Session, user: User) -> int:
    return session.execute(delete(ApiToken).where(ApiToken.user_id == user.id)).rowcount


def list_users(session: Session) -> list[tuple[User, int]]:
    """Every user with the number of tokens they hold."""
    counts = dict(session.execute(select(ApiToken.user_id, func.count())
                                  .group_by(ApiToken.user_id)).all())
    return [(u, counts.get(u.id, 0)) for u in session.scalars(select(User).order_by(User.name))]
