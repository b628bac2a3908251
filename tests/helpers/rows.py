"""Coordinator rows written straight into a test's database (no API in between)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from coordinator.models import Device


def add_device(s: Session, name: str, **columns: Any) -> Device:
    """A device known by ``name`` (fingerprint and hostname derive from it), flushed: its id
    is set. ``columns`` override the defaults (cores 2, x86_64, local)."""
    d = Device(
        **{
            "fingerprint": f"fp-{name}",
            "hostname": f"host-{name}",
            "arch": "x86_64",
            "os": "L",
            "cpu_model": "c",
            "cores": 2,
            "isa_flags": [],
            "transport": "local",
            **columns,
        }
    )
    s.add(d)
    s.flush()
    return d
