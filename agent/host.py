"""One host agent process serving several devices (its own host, boards over ssh, phones
over adb): one worker thread per device, each with its own registration, lease and outbox
(``CACHE_DIR/devices/<slug>/``), sharing the host's artifact cache. A device runs one
benchmark at a time because its worker holds at most one lease.

A device that cannot be reached at start is probed again with backoff while the others
work; SIGTERM/SIGINT stop every worker after its current job.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from agent.daemon import EXIT_CONFIG, EXIT_OK, Agent
from agent.fleet import DeviceSpec, FleetConfigError
from agent.transports.base import TransportError
from bnnbench.http import Backoff
from bnnbench.settings import AgentSettings

log = logging.getLogger("bnnbench.agent.host")


class HostAgent:
    def __init__(
        self,
        settings: AgentSettings,
        specs: list[DeviceSpec],
        *,
        max_jobs: int | None = None,
        exit_when_idle: float | None = None,
        replace: bool = False,
    ) -> None:
        if not specs:
            raise FleetConfigError("no devices to serve")
        self.settings = settings
        self.specs = specs
        self.max_jobs = max_jobs
        self.exit_when_idle = exit_when_idle
        self.replace = replace  # each device's first registration replaces a live namesake
        self.stop_event = threading.Event()
        self.codes: dict[str, int] = {}

    def _state_dir(self, spec: DeviceSpec) -> Path:
        return Path(self.settings.cache_dir) / "devices" / spec.slug()

    def _serve(self, spec: DeviceSpec) -> None:
        backoff = Backoff(base=2.0, cap=max(self.settings.max_backoff_seconds, 2.0))
        while not self.stop_event.is_set():
            try:
                agent = Agent(
                    self.settings,
                    spec=spec,
                    state_dir=self._state_dir(spec),
                    max_jobs=self.max_jobs,
                    exit_when_idle=self.exit_when_idle,
                    stop_event=self.stop_event,
                    replace=self.replace,
                )
            except (TransportError, OSError) as exc:
                delay = backoff.next()
                log.warning("%s unreachable (%s); probing again in %.0f s", spec.url, exc, delay)
                if self.stop_event.wait(delay):
                    break
                continue
            except FleetConfigError as exc:
                log.error("%s: %s", spec.url, exc)
                self.codes[spec.url] = EXIT_CONFIG
                return
            log.info(
                "serving %s: %s (%s, %d cores%s)",
                spec.url,
                agent.device.label(),
                agent.device.abi,
                agent.device.cores,
                ", emulated" if agent.device.emulated else "",
            )
            self.codes[spec.url] = agent.run()
            return
        self.codes.setdefault(spec.url, EXIT_OK)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("%s: stopping every device after its current job", signal.Signals(signum).name)
        self.stop_event.set()

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        threads = [
            threading.Thread(target=self._serve, args=(s,), name=f"device-{s.slug()}", daemon=True)
            for s in self.specs
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        return EXIT_CONFIG if any(c == EXIT_CONFIG for c in self.codes.values()) else EXIT_OK
