"""The fleet as the coordinator sees it: device listing with live status, and device
selectors (``submit --device …``) resolved to device rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bnnbench.schemas import DeviceOut, JobStatus
from coordinator.errors import Unprocessable
from coordinator.models import Agent, Device, Job, utcnow

# an agent heartbeats every few seconds (10 s by default); three missed beats = offline
ONLINE_WITHIN = timedelta(seconds=45)

# attributes a selector may name besides the probed DeviceInfo fields
_COLUMNS = (
    "id",
    "name",
    "hostname",
    "arch",
    "os",
    "cpu_model",
    "cores",
    "transport",
    "fingerprint",
    "emulated",
)


def device_out(d: Device, agents: list[Agent], busy: bool) -> DeviceOut:
    seen = max((a.last_seen for a in agents), default=None)
    columns = ("id", "fingerprint", "name", "hostname", "arch", "os", "cpu_model", "cores")
    return DeviceOut(
        **{c: getattr(d, c) for c in columns},
        transport=d.transport,
        label=d.label(),
        emulated=bool(d.emulated),
        attributes=d.attributes or {},
        agents=sorted(a.name for a in agents),
        last_seen=seen,
        online=seen is not None and utcnow() - seen < ONLINE_WITHIN,
        busy=busy,
    )


def list_devices(s: Session) -> list[DeviceOut]:
    devices = s.scalars(select(Device).order_by(Device.id)).all()
    agents: dict[int, list[Agent]] = {}
    for a in s.scalars(select(Agent)).all():
        agents.setdefault(a.device_id, []).append(a)
    busy = set(
        s.scalars(
            select(Agent.device_id)
            .join(Job, Job.leased_by == Agent.id)
            .where(Job.status == JobStatus.leased)
        ).all()
    )
    return [device_out(d, agents.get(d.id, []), d.id in busy) for d in devices]


def _attr(d: Device, key: str) -> Any:
    if key in _COLUMNS:
        return getattr(d, key)
    return (d.attributes or {}).get(key)


def _matches(d: Device, selector: str) -> bool:
    sel = selector.strip()
    if sel == "all":
        return True
    if sel.isascii() and sel.isdigit():  # int() refuses other Unicode digits, e.g. "²"
        return d.id == int(sel)
    if "=" not in sel:  # a bare word: the device's name, label or fingerprint
        return sel in (d.name, d.label(), d.fingerprint)
    for cond in sel.split(","):
        key, _, want = cond.partition("=")
        key, want = key.strip(), want.strip()
        have = _attr(d, key)
        if isinstance(have, bool):
            if have != (want.lower() in ("1", "true", "yes")):
                return False
        elif have is None or str(have).lower() != want.lower():
            return False
    return True


def select_devices(s: Session, selectors: list[str]) -> list[Device]:
    """Devices matching any selector (each selector: all of its ``key=value`` conditions).
    A selector that matches nothing is an error naming it: a typo must not quietly submit
    fewer jobs than meant."""
    devices = s.scalars(select(Device).order_by(Device.id)).all()
    chosen: dict[int, Device] = {}
    for sel in selectors:
        hit = [d for d in devices if _matches(d, sel)]
        if not hit:
            known = ", ".join(f"{d.id}:{d.label()}" for d in devices) or "none registered"
            raise Unprocessable(f"device selector {sel!r} matches no device (devices: {known})")
        for d in hit:
            chosen[d.id] = d
    return list(chosen.values())
