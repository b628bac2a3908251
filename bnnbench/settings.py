"""All settings in one place. Environment variables use the ``BNNBENCH_`` prefix
(e.g. ``BNNBENCH_DATABASE_URL``); CLI options override them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bnnbench.tokenfile import read_token_file


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BNNBENCH_", extra="ignore")

    data_dir: Path = Path("var")
    # default: SQLite (WAL) file inside data_dir; any SQLAlchemy URL works (postgresql+psycopg://…)
    database_url: str | None = None
    # the admin/user bearer token; the coordinator refuses to start without one of at least
    # 16 characters that is no placeholder (coordinator.auth.admin_token_problem). Or
    # admin_token_file: a file holding it (not both), read at start: no token in `ps`
    admin_token: str = ""
    admin_token_file: Path | None = None
    # GET /metrics (Prometheus): open when unset, like /health; when set, it needs this token
    # or the admin token (a scraper then holds a token that can only read metrics)
    metrics_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8321
    lease_seconds: float = 60.0  # a job lease not renewed by heartbeat within this is requeued
    max_attempts: int = 3
    max_upload_bytes: int = 512 * 1024 * 1024
    # every other request body (JSON: results, registrations, jobs; dashboard forms) is read
    # whole before it is parsed: a bigger one is refused with 413 before it is read. 4 MiB: a
    # result with MAX_SAMPLES (100 000) samples is about 2.4 MB of JSON
    max_json_bytes: int = Field(4 * 1024 * 1024, gt=0)
    long_poll_seconds: float = 20.0
    conversion_workers: int = 1  # concurrent converter processes; 0 = conversions paused
    conversion_timeout_seconds: float = 1800.0  # a converter process running longer is killed
    # address-space cap (RLIMIT_AS) of each analysis/conversion worker, in MiB; 0 = no cap. A
    # model that needs more fails with "ran out of memory" instead of taking the machine. Its
    # unit is virtual memory: an LCE conversion (TensorFlow) maps far more than it touches
    worker_max_memory_mb: int = Field(4096, ge=0)
    conversion_poll_seconds: float = 2.0  # fallback scan for pending work (other processes)
    # a coordinator's claim on the analysis/conversion it runs lasts this long and is renewed
    # every third of it while its worker runs; another coordinator on the same database takes
    # over work whose claim expired (its coordinator died). Coordinators' clocks must agree
    # to well within it (NTP). docs/scaling.md
    conversion_claim_seconds: float = Field(30.0, gt=0)
    reaper_interval_seconds: float = 5.0  # how often expired leases are requeued
    # a lease is extended by heartbeats for at most this long after it was granted (or the
    # bound a job's protocol implies, if smaller: see coordinator.queue.lease_cap_seconds);
    # past it a heartbeat is refused with 409 and the lease expires like any other
    max_lease_total_s: float = Field(6 * 3600.0, gt=0)
    # uploads up to this size are parsed with onnx in the request (a thread) to reject files
    # that are not ONNX at once with 422; bigger ones only get a protobuf header check
    sync_check_max_bytes: int = 64 * 1024 * 1024
    # validity verdict of a result: enough samples and a precise median: its 95 % confidence
    # interval (bnnbench.stats: order statistics, no distribution assumed) must lie within
    # ±max_rel_ci of it. Why 5 %: a speedup divides two medians, so it is then known to about
    # ±10 %, well inside the differences the tables show; the interval ignores a few
    # preemption outliers (a stdev bound does not) and narrows as runs grow, so a re-measure
    # (twice the runs) can make a noisy cell valid. max_rel_stdev: an optional extra bound on
    # stdev/median (the former bar, 0.5; off by default)
    min_valid_samples: int = 3
    max_rel_ci: float = Field(0.05, gt=0)
    max_rel_stdev: float | None = None
    # conversions and measurements never share cores: while conversions are pending or
    # running, jobs of devices on this machine are not leased, and no conversion starts
    # while one of them measures. auto: devices whose identity is this machine's (machine-id,
    # board serial, hostname); all: every device (e.g. agents in containers on this host);
    # off: no holding back (the verdict still flags a result posted during a conversion)
    conversion_isolation: Literal["auto", "all", "off"] = "auto"
    # throttling seen in the readings before/after a run makes its result invalid
    throttle_max_freq_drop: float = 0.15  # fraction of the frequency before the run
    throttle_max_temp_rise_c: float = 15.0
    throttle_max_temp_c: float = 85.0
    # an invalid result sends its job back with twice the runs, after a pause, this often
    max_remeasures: int = 2
    remeasure_pause_s: float = 5.0
    # what one client may hold of the server (coordinator/server.py, docs/api.md): a request's
    # headers must arrive within header_timeout_s of the connection opening (or of the
    # previous response), a body other than a model upload within body_timeout_s of its
    # headers (an upload may not stall that long); 0 turns a bound off. max_connections: open
    # connections (and running requests) past which requests get 503 (uvicorn's
    # limit_concurrency); an agent holds two (lease long-poll, heartbeat), so 4096 serves
    # about 2000 devices; 0 = no limit. backlog: connections the kernel queues unaccepted
    header_timeout_s: float = Field(10.0, ge=0)
    body_timeout_s: float = Field(60.0, ge=0)
    max_connections: int = Field(4096, ge=0)
    backlog: int = Field(2048, gt=0)

    @model_validator(mode="after")
    def _read_admin_token_file(self) -> CoordinatorSettings:
        if self.admin_token_file is not None:
            if self.admin_token:
                raise ValueError(
                    "both an admin token and an admin token file are given "
                    "(BNNBENCH_ADMIN_TOKEN / --admin-token and BNNBENCH_ADMIN_TOKEN_FILE / "
                    "--admin-token-file): give one"
                )
            self.admin_token = read_token_file(self.admin_token_file)
        return self

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'bnnbench.db').resolve()}"


class RunnerSettings(BaseSettings):
    """How the runners find and drive their libraries on the agent's own machine (a board
    behind a transport gets its binary paths from devices.toml instead)."""

    # empty values count as unset: an env file may list a variable without a value
    model_config = SettingsConfigDict(env_prefix="BNNBENCH_", extra="ignore", env_ignore_empty=True)

    lce_mode: str = "auto"  # auto | python | binary (agent.runners.lce.MODES)
    lce_benchmark_model: str = ""  # lce_benchmark_model binary; default: PATH
    lce_use_xnnpack: bool = False  # LCE's Python interpreter's default, imposed on the binary
    lce_timeout_s: float = 600.0  # one lce_benchmark_model process
    dabnn_benchmark: str = ""  # benchmark_single_model binary; default: PATH
    # one bnnbench-native run of the agent (a child process on this machine, or on a device):
    # killed past this many seconds plus 3x the time its protocol asks for, and retried
    native_timeout_s: float = Field(3600.0, gt=0)
    tflite_use_xnnpack: bool = True  # tflite-runtime's default delegate for float models

    @classmethod
    def env_var(cls, field: str) -> str:
        """The environment variable that sets ``field`` (for messages that name it)."""
        if field not in cls.model_fields:
            raise KeyError(field)
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BNNBENCH_AGENT_", extra="ignore")

    coordinator: str = "http://127.0.0.1:8321"
    # enrolment token (`bnnbench tokens create`; the admin token works too) used to register,
    # or a file holding it (not both); the agent then keeps its own token in cache_dir
    token: str = ""
    token_file: Path | None = None
    name: str | None = None
    cache_dir: Path = Path("var/agent-cache")
    heartbeat_seconds: float = 10.0
    max_backoff_seconds: float = 30.0
    poll_wait_seconds: float = 20.0  # long-poll wait per lease request (server may cap it)
    devices_file: Path | None = None  # devices.toml: the boards this agent serves (agent.fleet)
    native_cli_dir: Path | None = None  # where the static CLIs per ABI are (native/build)
    # read from their own BNNBENCH_* variables (e.g. BNNBENCH_LCE_MODE)
    runners: RunnerSettings = Field(default_factory=RunnerSettings)


class ClientSettings(BaseSettings):
    """Defaults of `bnnbench submit` / `bnnbench results`: BNNBENCH_COORDINATOR, BNNBENCH_TOKEN
    (the coordinator's admin token, BNNBENCH_ADMIN_TOKEN on the server side)."""

    model_config = SettingsConfigDict(env_prefix="BNNBENCH_", extra="ignore")

    coordinator: str = "http://127.0.0.1:8321"
    token: str = ""
    token_file: Path | None = None  # BNNBENCH_TOKEN_FILE: a file holding the token instead
