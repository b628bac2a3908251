"""Devices: the fleet with probed attributes and live status (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from bnnbench.schemas import DeviceOut, Endpoint, RowId
from coordinator import devices
from coordinator.api.deps import admin, get_ctx
from coordinator.errors import NotFound

router = APIRouter(tags=["devices"])


@router.get(Endpoint.DEVICES, response_model=list[DeviceOut], dependencies=[Depends(admin)])
def list_devices(request: Request) -> list[DeviceOut]:
    """Every device an agent registered: identity, probed attributes (SoC, ABI, clusters,
    RAM, governor), whether it is emulated, online and busy."""
    with get_ctx(request).db.session() as s:
        return devices.list_devices(s)


@router.get(Endpoint.DEVICE, response_model=DeviceOut, dependencies=[Depends(admin)])
def get_device(device_id: RowId, request: Request) -> DeviceOut:
    with get_ctx(request).db.session() as s:
        for d in devices.list_devices(s):
            if d.id == device_id:
                return d
    raise NotFound(f"device {device_id} not found")
