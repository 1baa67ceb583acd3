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
    task_soft_time_limit_s: int = Field(6 * 3600, gt=0)
    task_hard_time_limit_s: int = Field(6 * 3600 + 120, gt=0)
    stale_after_s: int = Field(180, gt=0, description="A running run whose heartbeat is older "
                               "than this is marked failed (its worker died).")
    device: str = Field("auto", description="Engine device: auto, cpu or cuda.")
    public_url: str = Field("", description="Base URL used in share links; empty means the "
                            "URL the request came in on.")

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
