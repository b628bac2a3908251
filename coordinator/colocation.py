"""Conversions and measurements never share cores unknowingly (DESIGN: no conversion on the
cores a local agent times).

The coordinator converts on its own machine. A device on that machine (an agent measuring its
own host: the same machine-id, board serial or hostname as the coordinator's) is not leased a
job while conversion work (an artifact pending or converting, an analysis pending or running)
is outstanding, and no conversion starts while such a device measures: the two alternate
instead of overlapping. ``conversion_isolation`` chooses which devices count as this
machine's: ``auto`` (by identity), ``all`` (every device: agents in containers on this host,
whose machine-id differs), ``off``. Whatever the setting, a result of a device on this machine
that a conversion overlapped is flagged invalid by the verdict (:func:`overlap`).
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent import probe
from agent.transports.base import TransportError
from agent.transports.local import LocalTransport
from bnnbench.schemas import ArtifactStatus, JobStatus
from bnnbench.settings import CoordinatorSettings
from coordinator.models import Agent, Artifact, Device, Job, Model

log = logging.getLogger(__name__)

_OUTSTANDING = (ArtifactStatus.pending, ArtifactStatus.converting)


@lru_cache(maxsize=1)
def host_identity() -> str:
    """This machine's identity as an agent on it reports it: the agent's own probe, run here
    through the local transport ("" when it finds none, or cannot run)."""
    try:
        return probe.probe(LocalTransport()).identity or ""
    except (TransportError, OSError) as exc:
        log.warning("cannot probe this machine's identity: %s", exc)
        return ""


def on_this_host(device: Device, mode: str) -> bool:
    """Whether ``device`` measures on the cores this coordinator converts on."""
    if mode == "off":
        return False
    if mode == "all":
        return True
    identity = (device.attributes or {}).get("identity") or ""
    if identity:
        return identity == host_identity()
    # registered without a probed identity: only its hostname can tell
    return device.hostname == socket.gethostname()


def isolating(settings: CoordinatorSettings) -> bool:
    # with conversions paused (0 workers) pending work never runs here: nothing to wait for
    return settings.conversion_isolation != "off" and settings.conversion_workers > 0


def conversion_work(s: Session) -> bool:
    """Whether an analysis or conversion is pending or running."""
    art = s.scalar(select(Artifact.id).where(Artifact.status.in_(_OUTSTANDING)).limit(1))
    if art is not None:
        return True
    model = s.scalar(
        select(Model.id).where(Model.analysis_status.in_(("pending", "running"))).limit(1)
    )
    return model is not None


def measuring_here(s: Session, settings: CoordinatorSettings) -> bool:
    """Whether a device on this machine holds a leased job now."""
    # no DISTINCT over Device: PostgreSQL has no equality for its JSON columns
    busy = (
        select(Agent.device_id)
        .join(Job, Job.leased_by == Agent.id)
        .where(Job.status == JobStatus.leased)
    )
    devices = s.scalars(select(Device).where(Device.id.in_(busy))).all()
    return any(on_this_host(d, settings.conversion_isolation) for d in devices)


def hold_lease(s: Session, device: Device, settings: CoordinatorSettings) -> bool:
    """A job must not be leased to ``device`` now: it is on this machine and conversion work
    is outstanding (it runs first; the agent's long poll waits)."""
    return (
        isolating(settings)
        and on_this_host(device, settings.conversion_isolation)
        and conversion_work(s)
    )


def overlap(
    s: Session, device: Device, settings: CoordinatorSettings, leased_at: datetime | None
) -> str | None:
    """Why a result that ``device`` posts now was measured while this machine converted, or
    None: a conversion or analysis running now, or a conversion that ended after the lease
    (``leased_at``)."""
    mode = "auto" if settings.conversion_isolation == "off" else settings.conversion_isolation
    if not on_this_host(device, mode):
        return None
    running = s.scalar(
        select(Artifact.id).where(Artifact.status == ArtifactStatus.converting).limit(1)
    )
    if running is not None:
        return f"artifact {running} was being converted on this machine during the run"
    analysing = s.scalar(select(Model.id).where(Model.analysis_status == "running").limit(1))
    if analysing is not None:
        return f"model {analysing} was being analysed on this machine during the run"
    if leased_at is not None:
        ended = s.scalar(
            select(Artifact.id)
            .where(
                Artifact.status.in_((ArtifactStatus.ready, ArtifactStatus.failed)),
                Artifact.updated_at > leased_at,
            )
            .limit(1)
        )
        if ended is not None:
            return f"artifact {ended} was converted on this machine during the run"
    return None
