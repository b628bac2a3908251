"""Database → metrics records → the hardware-track table (JSON and CSV)."""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bnnbench.schemas import ArtifactStatus
from coordinator import metrics
from coordinator.metrics import ArtifactSize, Measurement
from coordinator.models import Artifact, Device, Job, Model, Result

CSV_COLUMNS = [
    "device",
    "threads",
    "arch",
    "library",
    "algorithm",
    "latency_ms",  # the reference layout
    "n",
    "stdev_ms",
    "cpu_model",
    "device_fingerprint",
    "artifact_sha256",
    "runtime_version",
    "model_id",
    "result_id",
    "device_id",
]


def arch_label(m: Model) -> str:
    return m.arch or m.name


def algorithm_label(m: Model) -> str:
    return (m.algorithm or "unknown").lower()


def measurements(s: Session) -> list[Measurement]:
    """The latest valid result per (device, library, model, threads), oldest first."""
    rows = s.execute(
        select(Result, Job, Model, Device)
        .join(Job, Result.job_id == Job.id)
        .join(Model, Job.model_id == Model.id)
        .join(Device, Result.device_id == Device.id)
        .where(Result.valid.is_(True))
        .where(Device.emulated.is_not(True))  # emulated runs prove correctness, not speed
        .order_by(Result.id)
    ).all()
    latest: dict[tuple[int, str, int, int], tuple[Result, Job, Model, Device]] = {}
    for r, j, m, d in rows:
        latest[(d.id, j.library, m.id, r.threads)] = (r, j, m, d)
    labels: dict[str, int] = {}
    for d in {d.id: d for _, _, _, d in latest.values()}.values():
        labels[d.label()] = labels.get(d.label(), 0) + 1
    out = []
    for r, j, m, d in sorted(latest.values(), key=lambda t: t[0].id):
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


def table(s: Session) -> dict[str, Any]:
    ms = measurements(s)
    t = metrics.latency_table(ms)
    return {
        **t,
        "unit": "ms (median)",
        "om": metrics.om_rows(ms, artifact_sizes(s)),
        "cells": metrics.long_rows(ms),
    }


def table_csv(s: Session) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in metrics.long_rows(measurements(s)):
        w.writerow(row)
    return buf.getvalue()
