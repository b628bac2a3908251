"""The Transport protocol: how the agent reaches the device it benchmarks.

``local`` is this machine. An ``ssh``/``adb`` transport describes a remote board the same way;
runners that execute binaries there will add the file-push/command methods they need.
"""

from __future__ import annotations

from typing import Any, Protocol

from bnnbench.schemas import DeviceInfo


class Transport(Protocol):
    name: str  # local | ssh | adb, recorded in DeviceInfo.transport

    def device_info(self) -> DeviceInfo:
        """The target device's identity (sent at registration)."""
        ...

    def environment(self) -> dict[str, Any]:
        """Readings taken around a run (governor, load, temperatures, ...)."""
        ...
