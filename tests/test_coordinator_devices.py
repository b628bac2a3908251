"""Device selectors (``submit --device``) and job creation across matching devices: one job
per device and thread count, threads checked against each device's cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnnbench.schemas import DeviceInfo, JobCreate, RegisterRequest
from bnnbench.settings import CoordinatorSettings
from coordinator import agents, queue
from coordinator.auth import ADMIN, Principal
from coordinator.db import Database
from coordinator.devices import list_devices, select_devices
from coordinator.errors import Unprocessable
from coordinator.models import Model

OPERATOR = Principal(ADMIN)  # registers as the admin token would

PI4: dict[str, object] = {
    "hostname": "raspberrypi",
    "arch": "aarch64",
    "os": "Linux",
    "cpu_model": "4x Cortex-A72",
    "cores": 4,
    "transport": "ssh",
    "abi": "arm64-v8a",
}


def _info(identity: str, **kw: object) -> DeviceInfo:
    return DeviceInfo.model_validate({**PI4, "identity": identity, **kw})


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(CoordinatorSettings(data_dir=tmp_path))
    fleet = [
        _info("board:1", soc="BCM2711", name="pi4-a"),
        _info("board:2", soc="BCM2711"),  # same hostname, another board
        _info("android:X", soc="SM8250", cores=8, transport="adb"),
        _info(
            "android:Y",
            soc="SM8250",
            cores=8,
            transport="adb",
            exec_wrapper="qemu-aarch64",
            emulated=True,
        ),
    ]
    for i, info in enumerate(fleet):
        agents.register(d, RegisterRequest(name=f"a{i}", device=info), OPERATOR)
    with d.session() as s:
        s.add(Model(name="m", sha256="0" * 64, size=1))
    yield d
    d.dispose()


def _ids(db: Database, *sel: str) -> list[int]:
    with db.session() as s:
        return sorted(d.id for d in select_devices(s, list(sel)))


def test_selectors(db: Database) -> None:
    assert _ids(db, "all") == [1, 2, 3, 4]
    assert _ids(db, "soc=BCM2711") == [1, 2]
    assert _ids(db, "soc=sm8250,emulated=false") == [3]
    assert _ids(db, "transport=adb", "pi4-a") == [1, 3, 4]
    assert _ids(db, "2") == [2]
    with pytest.raises(Unprocessable, match="'soc=MT6893' matches no device"):
        _ids(db, "soc=MT6893")
    with db.session() as s:
        devs = list_devices(s)
    assert [d.label for d in devs] == ["pi4-a", "BCM2711", "SM8250", "SM8250"]
    assert len({d.fingerprint for d in devs}) == 4  # one hostname, four devices
    assert [d.emulated for d in devs] == [False, False, False, True]


def test_one_job_per_matching_device_and_threads_checked(db: Database) -> None:
    with db.session() as s:
        jobs, _ = queue.create_jobs(
            s, JobCreate(model_id=1, threads=[1, 4], devices=["soc=BCM2711"])
        )
        assert sorted((j.device_id, j.threads) for j in jobs) == [(1, 1), (1, 4), (2, 1), (2, 4)]
        with pytest.raises(Unprocessable, match="threads 8 > the 4 cores of device 1"):
            queue.create_jobs(s, JobCreate(model_id=1, threads=[8], devices=["all"]))
        jobs, _ = queue.create_jobs(
            s, JobCreate(model_id=1, threads=[8], devices=["transport=adb"])
        )
        assert sorted(j.device_id for j in jobs) == [3, 4]
        with pytest.raises(Unprocessable, match="single-threaded"):
            queue.create_jobs(s, JobCreate(model_id=1, library="dabnn", threads=[2]))


def test_one_lease_per_device_even_with_two_agents(db: Database) -> None:
    """A board served by its own agent and by a host agent over ssh is one device: while one
    of them holds a lease, the other gets nothing."""
    from sqlalchemy import select

    from bnnbench.schemas import ResultIn
    from coordinator.models import Agent, Artifact

    info = _info("board:1", soc="BCM2711", name="pi4-a")
    d = db
    agents.register(d, RegisterRequest(name="host/ssh-pi", device=info), OPERATOR)
    settings = CoordinatorSettings(max_remeasures=0)
    with d.session() as s:
        own, host = s.scalars(select(Agent).where(Agent.device_id == 1).order_by(Agent.id))
        jobs, _ = queue.create_jobs(s, JobCreate(model_id=1, threads=[1, 2], devices=["1"]))
        art = s.get(Artifact, jobs[0].artifact_id)
        art.status, art.sha256, art.size = "ready", "1" * 64, 1
        for j in jobs:
            j.status = "queued"
        s.flush()
        first = queue.lease(s, own, settings)
        assert first is not None
        assert queue.lease(s, host, settings) is None  # the board is busy
        queue.submit_result(
            s,
            own,
            first.id,
            ResultIn(lease_id=first.lease_id, samples_ms=[1.0] * 10, runtime_version="x"),
            settings,
        )
        second = queue.lease(s, host, settings)
        assert second is not None and second.id != first.id
