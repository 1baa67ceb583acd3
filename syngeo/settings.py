"""Configuration from environment variables with the ``SYNGEO_`` prefix (pydantic-settings).

The defaults are the embedded set-up: a SQLite file, a local artifact folder and a
filesystem broker under ``SYNGEO_DATA_DIR`` — no external server needed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNGEO_", extra="ignore")

    data_dir: Path = Field(Path("var"), description="Folder for the embedded SQLite file, "
                           "artifacts and broker queues.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means a SQLite file in "
                              "data_dir.")
    broker_url: str = Field("", description="Celery broker URL (redis://…); empty means kombu's "
                            "filesystem transport in data_dir (embedded, no server).")
    artifacts: str = Field("", description="'database' stores artifacts (uploads, result arrays) "
                           "in the database so workers on other machines can reach them; a "
                           "folder path stores them there; empty means data_dir/artifacts.")
    max_upload_bytes: int = Field(1 << 30, gt=0, description="Largest accepted upload, bytes.")
    max_uncompressed_bytes: int = Field(0, ge=0, description="Largest uncompressed size of an "
                                        "uploaded archive (.npz, PyTorch zip checkpoint), "
                                        "checked before it is inflated; 0 means "
                                        "max_upload_bytes.")
    max_run_seconds: float = Field(3600, gt=0, description="A run whose estimated time on "
                                   "one CPU worker is longer is refused when it is submitted.")
    max_run_memory_bytes: float = Field(8e9, gt=0, description="A run whose estimated peak "
                                        "memory is larger is refused when it is submitted.")
    task_soft_time_limit_s: int = Field(6 * 3600, gt=0)
    task_hard_time_limit_s: int = Field(6 * 3600 + 120, gt=0)
    stale_after_s: int = Field(180, gt=0, description="A running run whose heartbeat is older "
                               "than this is put back on the queue (its worker or machine died; "
                               "a worker that dies on its own machine is noticed at once).")
    max_attempts: int = Field(3, gt=0, description="A run whose worker died this many times "
                              "while running it fails instead of being queued again.")
    resend_after_s: int = Field(60, gt=0, description="A run queued longer than this while a "
                                "worker is idle has its task message sent again (the broker "
                                "lost it, e.g. Redis restarted without persistence).")
    shutdown_grace_s: int = Field(60, gt=0, description="How long `syngeo serve` waits for its "
                                  "worker to hand its run back to the queue when stopping.")
    chunk_seconds: float = Field(30, ge=0, description="A sweep (e.g. a linear-regression "
                                 "or phase-diagram grid) estimated to take longer than this on "
                                 "one CPU worker is split into chunks of about this length "
                                 "that any free worker takes (at most 64); 0 splits it as "
                                 "finely as it goes.")
    device: str = Field("auto", description="Engine device: auto, cpu or cuda.")
    auth: bool = Field(False, description="Multi-user mode: every API call needs an API token "
                       "(Authorization: Bearer, or the login page's cookie); runs and "
                       "datasets are private to their owner. Off: one local user, no login "
                       "(bind to 127.0.0.1 only).")
    public_url: str = Field("", description="Base URL used in share links; empty means the "
                            "URL the request came in on.")

    @property
    def heartbeat_s(self) -> float:
        """How often a running run, a worker and the watchdog report: several beats fit in
        the stale limit, so one late beat on a loaded machine does not requeue a run."""
        return min(max(self.stale_after_s / 6, 0.5), 10.0)

    @property
    def uncompressed_limit(self) -> int:
        return self.max_uncompressed_bytes or self.max_upload_bytes

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'syngeo.sqlite').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def artifact_location(self) -> str:
        """'database' or an absolute folder path."""
        if self.artifacts == "database":
            return "database"
        return str(Path(self.artifacts or self.data_dir / "artifacts").resolve())


@lru_cache
def get_settings() -> Settings:
    return Settings()
