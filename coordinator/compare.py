"""The database side of ``bnnbench compare`` (the logic and the test: bnnbench.compare): each
selector's cells, the latest valid result per (device, library, model, threads) as the tables
take them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from bnnbench import compare as logic
from bnnbench.compare import Selector
from coordinator.db import Database
from coordinator.errors import Unprocessable
from coordinator.models import Device, Job, Result
from coordinator.results import algorithm_label, arch_label, latest_valid


def _devices(s: Session, sel: Selector) -> set[int] | None:
    """The ids a ``device=`` value names (id, operator's name or label), None without one."""
    if sel.device is None:
        return None
    devs = s.scalars(select(Device)).all()
    want = sel.device
    ids = {d.id for d in devs if str(d.id) == want or d.name == want or d.label() == want}
    if not ids:
        known = ", ".join(sorted({f"{d.id} ({d.label()})" for d in devs})) or "none registered"
        raise Unprocessable(f"device={want!r} matches no device; known: {known}")
    return ids


def cells(s: Session, sel: Selector) -> list[dict[str, Any]]:
    """The cells ``sel`` names: the latest valid result per (device, library, model, threads)
    among its results, oldest first."""
    where: list[ColumnElement[bool]] = []
    if sel.library is not None:
        where.append(Job.library == sel.library)
    if sel.model is not None:
        where.append(Job.model_id == sel.model)
    if sel.jobs is not None:
        where += [Job.id >= sel.jobs[0], Job.id <= sel.jobs[1]]
    if sel.after is not None:
        where.append(Result.created_at >= sel.after)
    if sel.before is not None:
        where.append(Result.created_at < sel.before)
    devices = _devices(s, sel)
    if devices is not None:
        where.append(Device.id.in_(devices))
    return [
        {
            "device": d.label(),
            "device_id": d.id,
            "library": j.library,
            "arch": arch_label(m),
            "algorithm": algorithm_label(m),
            "threads": r.threads,
            "samples_ms": [float(x) for x in r.samples_ms],
            "result_id": r.id,
        }
        for r, j, m, d in latest_valid(s, *where)
    ]


def compare(
    db: Database,
    a: str,
    b: str,
    *,
    resamples: int = logic.RESAMPLES,
    seed: int = logic.SEED,
    alpha: float = logic.ALPHA,
) -> dict[str, Any]:
    """Selectors ``a`` and ``b`` side by side (bnnbench.compare.compare); bad selectors and
    devices that match nothing are 422s naming the cause."""
    try:
        sa, sb = logic.parse_selector(a), logic.parse_selector(b)
        with db.session() as s:  # read, then test outside the session
            cells_a, cells_b = cells(s, sa), cells(s, sb)
        return logic.compare(sa, sb, cells_a, cells_b, resamples=resamples, seed=seed, alpha=alpha)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
