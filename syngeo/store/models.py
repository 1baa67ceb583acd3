"""Database records: datasets, runs and their chunks, results and their stored pages, share
links and artifact chunks (SQLAlchemy 2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
#: The one user of a deployment without SYNGEO_AUTH; owns everything made before accounts.
LOCAL_USER = "local"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A time stored in UTC and always read back with its zone: PostgreSQL keeps the zone,
    SQLite does not, and a zone-less time would be compared wrongly and shown as local."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class User(Base):
    """A person who owns runs and datasets (multi-user mode, SYNGEO_AUTH)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ApiToken(Base):
    """A user's API token; only its SHA-256 is stored, so a database leak gives no access."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Dataset(Base):
    """An upload: before/after weights (``format`` is the file format, ``summary`` has
    per-layer ``layers``), or one distribution of positive values (``format`` is
    "distribution", ``n_pairs`` the number of values, ``summary["distribution"]`` their
    n/min/median/max/mean/std). The original files are kept as artifacts."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    format: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    files: Mapped[list[Any]] = mapped_column()  # [{"name", "size", "sha256", "artifact"}]
    n_pairs: Mapped[int] = mapped_column(BigInteger)
    summary: Mapped[dict[str, Any]] = mapped_column()
    owner_id: Mapped[str] = mapped_column(String(40), index=True, default=LOCAL_USER)
    #: owner:format:sha256, unique: concurrent identical uploads give one dataset.
    content_key: Mapped[str | None] = mapped_column(String(160), unique=True)


class Run(Base):
    """One execution of an experiment kind; keeps everything needed to reproduce it."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow,
                                                 index=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(32))
    worker: Mapped[str | None] = mapped_column(String(255))
    input_hashes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    history: Mapped[list[Any]] = mapped_column(default=list)  # [{"status", "at"}]
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    owner_id: Mapped[str] = mapped_column(String(40), index=True, default=LOCAL_USER)
    #: How many times a worker started the run; the current attempt's number fences off a
    #: worker that lost the run (it was requeued) from writing to it again.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: When its task message was last sent to the broker (the watchdog re-sends lost ones).
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime(),
                                                       default=utcnow)
    #: A run split into chunks (RunChunk) that any worker takes: their number, else 0.
    n_chunks: Mapped[int] = mapped_column(Integer, default=0)


class RunChunk(Base):
    """One independent piece of a run split across workers (e.g. a block of grid cells ×
    seeds). Claimed, beaten and released like a run, with attempts of its own; its partial
    result (a small summary here, arrays in an artifact) waits until the run assembles."""

    __tablename__ = "run_chunks"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    work: Mapped[dict[str, Any]] = mapped_column()  # what the kind computes in it
    cost: Mapped[float] = mapped_column(Float, default=1.0)  # its weight in the progress
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lost: Mapped[int] = mapped_column(Integer, default=0)  # attempts whose worker died
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=utcnow)
    summary: Mapped[dict[str, Any] | None] = mapped_column()
    arrays_artifact: Mapped[str | None] = mapped_column(String(255))


class Result(Base):
    """A run's result: summary JSON here, arrays in an .npz artifact. One per run."""

    __tablename__ = "results"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    summary: Mapped[dict[str, Any]] = mapped_column()
    arrays_artifact: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ResultPage(Base):
    """A result page's body as the browser reads it (summary, figures, table, columns:
    compact JSON, gzip-compressed), built once when the run succeeds and served as stored.
    ``figure_version`` is the version of the code that built it (result_pages.figure_version):
    a page built by other code is rebuilt from the result on its next view."""

    __tablename__ = "result_pages"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    figure_version: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str] = mapped_column(String(64))  # SHA-256 of the uncompressed JSON
    body_gzip: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)  # uncompressed bytes
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ShareLink(Base):
    """A read-only link to a run, opened without login by whoever holds the token. Only
    the token's SHA-256 is stored; the owner may revoke the link or give it an expiry."""

    __tablename__ = "share_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ArtifactChunk(Base):
    """Artifact bytes kept in the database so a worker on another machine can read them."""

    __tablename__ = "artifact_chunks"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Worker(Base):
    """A live Celery worker process, for the health endpoint and the watchdog: it reports
    every few seconds and removes its row when it stops."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # Celery node name
    pid: Mapped[int] = mapped_column(Integer)
    slots: Mapped[int] = mapped_column(Integer, default=1)  # runs it may run at once
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow,
                                              index=True)
    stopping: Mapped[bool] = mapped_column(Boolean, default=False)
