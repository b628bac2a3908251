"""What the request handlers and background tasks share, built once per app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bnnbench.settings import CoordinatorSettings
from coordinator.db import Database
from coordinator.signals import Signal
from coordinator.store import BlobStore


@dataclass
class AppContext:
    settings: CoordinatorSettings
    db: Database
    store: BlobStore
    jobs_signal: Signal = field(default_factory=Signal)  # a job became leasable
    work_signal: Signal = field(default_factory=Signal)  # analysis/conversion work appeared
    # set by `serve` to uvicorn's exit flag, so long polls end promptly on shutdown
    should_exit: Callable[[], bool] = lambda: False
