"""Benchmark on the machine the agent runs on."""

from __future__ import annotations

from typing import Any

from agent import device
from bnnbench.schemas import DeviceInfo


class LocalTransport:
    name = "local"

    def device_info(self) -> DeviceInfo:
        return device.collect_device_info(transport=self.name)

    def environment(self) -> dict[str, Any]:
        return device.environment()
