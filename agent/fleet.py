"""The devices one host agent serves, from a ``devices.toml``, and how each is reached.

::

    [[device]]
    url = "ssh://pi@pi4.local"          # ssh://USER@HOST[:PORT], adb://SERIAL or local://
    name = "pi4-lab"                    # the row label in tables (default: probed SoC/board)
    key_file = "~/.ssh/id_ed25519"      # ssh: key (or password_env = "PI4_PASSWORD")
    known_hosts = "~/.ssh/known_hosts"  # ssh: host keys; strict unless host_key_policy =
                                        #      "accept-new" (trust on first use)
    affinity = "big"                    # big | all | CPU list ("4-7"); phones default to big
    lce_benchmark = "/home/pi/bin/lce_benchmark_model"   # library binaries on the device
    dabnn_benchmark = "/home/pi/bin/benchmark_single_model"

    [[device]]
    url = "adb://R58M123ABC"

An ``exec_wrapper`` (e.g. ``qemu-aarch64-static``) makes a device emulated: its whole path
runs without the hardware, its results are flagged and never enter tables or OM.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.transports.base import Transport

SCHEMES = ("local", "ssh", "adb")


class FleetConfigError(ValueError):
    """devices.toml (or a device URL) is malformed; the message names the entry and field."""


@dataclass
class DeviceSpec:
    url: str
    name: str | None = None
    # ssh
    key_file: str | None = None
    password_env: str | None = None  # the password is read from this environment variable
    known_hosts: str | None = None
    host_key_policy: str = "strict"  # strict | accept-new
    # any transport
    workdir: str | None = None
    exec_wrapper: str | None = None  # e.g. qemu-aarch64-static: emulated device
    abi: str | None = None  # the ABI binaries are picked for (default: probed)
    affinity: str | None = None  # big | all | CPU list; default big on adb, all elsewhere
    lce_benchmark: str | None = None  # path of lce_benchmark_model on the device
    dabnn_benchmark: str | None = None  # path of benchmark_single_model on the device
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    def slug(self) -> str:
        """A file-system-safe key for this device's state folder."""
        base = self.url.split("://", 1)[-1] or "host"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.scheme}-{base}").strip("_")

    def default_affinity(self) -> str:
        return self.affinity or ("big" if self.scheme == "adb" else "all")

    def to_toml_table(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in asdict(self).items()
            if v not in (None, {}, "") and not (k == "host_key_policy" and v == "strict")
        }


def parse_spec(entry: dict[str, Any], where: str = "device") -> DeviceSpec:
    known = {f.name for f in fields(DeviceSpec)} - {"extra"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise FleetConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    url = entry.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in SCHEMES:
        raise FleetConfigError(
            f"{where}: url must be local://, ssh://USER@HOST[:PORT] or adb://SERIAL, got {url!r}"
        )
    spec = DeviceSpec(**{k: v for k, v in entry.items() if k in known})
    if spec.host_key_policy not in ("strict", "accept-new"):
        raise FleetConfigError(f"{where}: host_key_policy must be strict or accept-new")
    if spec.scheme == "ssh" and not urlsplit(url).hostname:
        raise FleetConfigError(f"{where}: ssh URL without a host: {url!r}")
    if spec.scheme == "adb" and not url.split("://", 1)[1]:
        raise FleetConfigError(f"{where}: adb URL without a serial: {url!r}")
    return spec


def load_devices(path: Path) -> list[DeviceSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FleetConfigError(f"{path}: no such devices file") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetConfigError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("device", [])
    if not isinstance(entries, list):
        raise FleetConfigError(f"{path}: use [[device]] tables")
    specs = [parse_spec(e, f"{path} device {i + 1}") for i, e in enumerate(entries)]
    seen: set[str] = set()
    for s in specs:
        if s.url in seen:
            raise FleetConfigError(f"{path}: device {s.url} listed twice")
        seen.add(s.url)
    return specs


def save_devices(path: Path, specs: list[DeviceSpec]) -> None:
    import tomli_w

    text = tomli_w.dumps({"device": [s.to_toml_table() for s in specs]})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def open_transport(spec: DeviceSpec) -> Transport:
    """The transport for a device spec (connections are opened lazily, on first use)."""
    parts = urlsplit(spec.url)
    if spec.scheme == "local":
        from agent.transports.local import LocalTransport

        return LocalTransport(spec.workdir)
    if spec.scheme == "ssh":
        try:
            from agent.transports.ssh import SshTransport
        except ImportError as exc:  # paramiko is an extra: the base install stays light
            raise FleetConfigError(
                f"{spec.url}: the ssh transport needs paramiko: pip install 'bnnbench[fleet]' "
                f"({exc})"
            ) from None
        password = os.environ.get(spec.password_env) if spec.password_env else None
        if spec.password_env and password is None:
            raise FleetConfigError(f"{spec.url}: ${spec.password_env} is not set")
        return SshTransport(
            parts.hostname or "",
            port=parts.port or 22,
            user=parts.username,
            key_file=os.path.expanduser(spec.key_file) if spec.key_file else None,
            password=password,
            known_hosts=os.path.expanduser(spec.known_hosts) if spec.known_hosts else None,
            host_key_policy=spec.host_key_policy,
            workdir=spec.workdir,
        )
    from agent.transports.adb import AdbTransport

    kw: dict[str, Any] = {}
    if spec.workdir:
        kw["workdir"] = spec.workdir
    return AdbTransport(spec.url.split("://", 1)[1], **kw)
