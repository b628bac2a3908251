"""The paper's Tables 17-20 cells as metric records, exactly as the packaged CSV writes them
(device names and libraries unchanged: the metrics are checked on the paper's own terms)."""

from __future__ import annotations

from coordinator import reference
from coordinator.metrics import Measurement


def paper_cells(devices: tuple[str, ...] = ()) -> list[Measurement]:
    """Every cell, or those of ``devices`` only."""
    return [
        Measurement(
            r["device"],
            int(r["threads"]),
            r["arch"],
            r["library"],
            r["algorithm"],
            float(r["latency_ms"]),
        )
        for r in reference.hardware_rows()
        if not devices or r["device"] in devices
    ]
