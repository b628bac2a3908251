"""What the request handlers and background tasks share, built once per app."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from bnnbench.settings import CoordinatorSettings
from coordinator.db import Database
from coordinator.signals import PgSignalBus, Signal
from coordinator.store import OWNER_TAG, BlobStore

# NOTIFY channels (coordinator.signals): every coordinator on one PostgreSQL database hears them
JOBS_CHANNEL = "bnnbench_jobs"
WORK_CHANNEL = "bnnbench_work"


def instance_id(tag: str) -> str:
    """``host:pid:tag``: who holds a claim (coordinator.conversion), readable in the database;
    the tag keeps a pid reused on another start or host apart."""
    return f"{socket.gethostname()[:150]}:{os.getpid()}:{tag}"


@dataclass
class AppContext:
    settings: CoordinatorSettings
    db: Database
    store: BlobStore
    jobs_signal: Signal = field(default_factory=lambda: Signal(JOBS_CHANNEL))  # job leasable
    work_signal: Signal = field(default_factory=lambda: Signal(WORK_CHANNEL))  # work appeared
    # this process among the coordinators sharing the database (claims, NOTIFY payloads);
    # by default named after the store's owner tag (its files in tmp/ carry it too)
    instance_id: str = ""
    bus: PgSignalBus | None = None  # set in the lifespan on PostgreSQL
    # set by `serve` to uvicorn's exit flag, so long polls end promptly on shutdown
    should_exit: Callable[[], bool] = lambda: False

    def __post_init__(self) -> None:
        if not self.instance_id:
            self.instance_id = instance_id(self.store.owner)

    def holder_alive(self, instance: str) -> bool:
        """Whether the coordinator ``instance`` (a claim's holder) still runs: its owner lock
        in the shared data_dir is held. An id of another form counts as alive (its claim
        expires instead)."""
        tag = instance.rsplit(":", 1)[-1]
        return not OWNER_TAG.match(tag) or self.store.owner_alive(tag)
