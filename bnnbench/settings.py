"""All settings in one place. Environment variables use the ``BNNBENCH_`` prefix
(e.g. ``BNNBENCH_DATABASE_URL``); CLI options override them."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BNNBENCH_", extra="ignore")

    data_dir: Path = Path("var")
    # default: SQLite (WAL) file inside data_dir; any SQLAlchemy URL works (postgresql+psycopg://…)
    database_url: str | None = None
    admin_token: str = "change-me"
    host: str = "127.0.0.1"
    port: int = 8321
    lease_seconds: float = 60.0  # a job lease not renewed by heartbeat within this is requeued
    max_attempts: int = 3
    max_upload_bytes: int = 512 * 1024 * 1024
    long_poll_seconds: float = 20.0
    conversion_workers: int = 1

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'bnnbench.db').resolve()}"


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BNNBENCH_AGENT_", extra="ignore")

    coordinator: str = "http://127.0.0.1:8321"
    token: str = ""  # admin/enrol token used to register; the agent then keeps its own
    name: str | None = None
    cache_dir: Path = Path("var/agent-cache")
    heartbeat_seconds: float = 10.0
    max_backoff_seconds: float = 30.0
