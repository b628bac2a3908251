"""Database → metrics records → the hardware-track table (JSON, CSV, Markdown, LaTeX).

The same code reads a running coordinator's database (the API) and a database file opened
read-only with no coordinator at all (``bnnbench results --db PATH``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, create_engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bnnbench.schemas import ArtifactStatus
from coordinator import exports, metrics, reference
from coordinator.exports import CSV_COLUMNS
from coordinator.metrics import ArtifactSize, Measurement
from coordinator.models import Artifact, Device, Job, Model, Result

__all__ = ["CSV_COLUMNS", "measurements", "table", "table_csv", "read_table"]


def arch_label(m: Model) -> str:
    return m.arch or m.name


def algorithm_label(m: Model) -> str:
    return (m.algorithm or "unknown").lower()


Cell = tuple[Result, Job, Model, Device]


def joined_results() -> Select[Result, Job, Model, Device]:
    """Each result with its job, model and device."""
    return (
        select(Result, Job, Model, Device)
        .join(Job, Result.job_id == Job.id)
        .join(Model, Job.model_id == Model.id)
        .join(Device, Result.device_id == Device.id)
    )


def latest_valid(s: Session, *where: ColumnElement[bool]) -> list[Cell]:
    """The latest valid result per (device, library, model, threads) among those ``where``
    admits, oldest first: the numbers the tables and ``compare`` take. Valid: the result
    passed its verdict, its device is not emulated and its artifact is still ready."""
    rows = s.execute(
        joined_results()
        .join(Artifact, Job.artifact_id == Artifact.id)
        .where(Result.valid.is_(True))
        .where(Device.emulated.is_not(True))  # emulated runs prove correctness, not speed
        # an artifact failed later (e.g. its fidelity check, gated at startup) counts no more
        .where(Artifact.status == ArtifactStatus.ready)
        .where(*where)
        .order_by(Result.id)
    ).all()
    latest: dict[tuple[int, str, int, int], Cell] = {}
    for r, j, m, d in rows:
        latest[(d.id, j.library, m.id, r.threads)] = (r, j, m, d)
    return sorted(latest.values(), key=lambda t: t[0].id)


def measurements(s: Session) -> list[Measurement]:
    """The latest valid result per (device, library, model, threads), oldest first; each
    keyed by its device's id (cells pair within one device), named by its label."""
    latest = latest_valid(s)
    labels: dict[str, int] = {}
    for d in {d.id: d for _, _, _, d in latest}.values():
        labels[d.label()] = labels.get(d.label(), 0) + 1
    out = []
    for r, j, m, d in latest:
        attrs = d.attributes or {}
        out.append(
            Measurement(
                device=_row_name(d, labels),
                threads=r.threads,
                arch=arch_label(m),
                library=j.library,
                algorithm=algorithm_label(m),
                latency_ms=r.median_ms,
                provenance={
                    "n": r.stats.get("n"),
                    "stdev_ms": r.stats.get("stdev_ms"),
                    "device_id": d.id,
                    "cpu_model": d.cpu_model,
                    "device_fingerprint": r.device_fingerprint,
                    "artifact_sha256": r.artifact_sha256,
                    "runtime_version": r.runtime_version,
                    "model_id": m.id,
                    "result_id": r.id,
                },
                device_id=d.id,
                # rows only: with --reference a board sorts next to the paper's same board
                group=reference.paper_device_for(d.label(), attrs.get("soc"), attrs.get("board"))
                or "",
            )
        )
    return out


def _row_name(d: Device, labels: dict[str, int]) -> str:
    """Rows are devices, never hostnames; two devices with one label get their ids added."""
    label = d.label()
    return label if labels.get(label, 0) <= 1 else f"{label} #{d.id}"


def artifact_sizes(s: Session) -> list[ArtifactSize]:
    rows = s.execute(
        select(Artifact, Model)
        .join(Model, Artifact.model_id == Model.id)
        .where(Artifact.status == ArtifactStatus.ready)
        .order_by(Artifact.id)
    ).all()
    return [
        ArtifactSize(a.library, arch_label(m), algorithm_label(m), a.size or 0)
        for a, m in rows
        if a.size
    ]


def table(s: Session, with_reference: bool = False) -> dict[str, Any]:
    """The hardware-track table of this fleet; ``with_reference`` adds the paper's rows
    (labelled "(paper)") to the latency table and cells, and its OM and Table 3 as
    ``reference``. ``om`` is always this fleet's own: the two are never averaged together."""
    ms = measurements(s)
    ref = reference.measurements() if with_reference else []
    out: dict[str, Any] = {
        **metrics.latency_table([*ref, *ms]),
        "unit": "ms (median)",
        "averaging": metrics.AVERAGING,
        "om": metrics.om_rows(ms, artifact_sizes(s)),
        "cells": metrics.long_rows([*ref, *ms]),
    }
    if with_reference:
        out["reference"] = reference.summary(ref)
    return out


def table_csv(s: Session, with_reference: bool = False) -> str:
    return exports.to_csv(table(s, with_reference))


class DatabaseError(Exception):
    """A database file that cannot be read as a coordinator's (missing, not SQLite, other
    schema)."""


@contextmanager
def open_readonly(path: Path) -> Iterator[Session]:
    """A session on a coordinator's SQLite file, opened read-only (``mode=ro``): the file is
    never written, not even the WAL/journal pragmas ``coordinator.db.make_engine`` sets, and
    no schema upgrade runs (an older file is reported, not changed). SQLite may still create
    the empty ``-wal``/``-shm`` companions of a WAL database beside it to read it safely
    while a coordinator writes; ``immutable=1`` would avoid them but misread a live file."""
    path = Path(path)
    if not path.is_file():
        raise DatabaseError(f"{path}: no such database file")
    uri = path.resolve().as_uri().replace("file://", "file:", 1) + "?mode=ro"
    engine = create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
    )
    try:
        with Session(engine) as s:
            yield s
    finally:
        engine.dispose()


def read_table(path: Path, with_reference: bool = False) -> dict[str, Any]:
    """``table`` from a database file, with no coordinator running."""
    try:
        with open_readonly(path) as s:
            return table(s, with_reference)
    except SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        raise DatabaseError(f"{path}: not a readable bnnbench database ({detail})") from None
