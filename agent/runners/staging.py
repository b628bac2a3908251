"""Files on a device behind a transport, pushed once: a per-device cache keyed by content.

``WORKDIR/bin/<tool>-<sha12>`` holds executables (the static CLI), ``WORKDIR/artifacts/
<sha256><suffix>`` the models. A name carries its content hash, so a file of the right size
under that name is the right file; a half-pushed one never has the final name (transports
push to ``.part`` and rename).
"""

from __future__ import annotations

from pathlib import Path

from agent.runners.base import RunnerError
from agent.transports.base import Transport, quote
from bnnbench.digest import sha256_file


class DeviceFiles:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._staged: set[str] = set()  # remote paths known to hold the right bytes

    def stage(self, local: Path, rel: str, mode: int = 0o644) -> str:
        """Push ``local`` to WORKDIR/rel unless the device already has it; the remote path."""
        remote = f"{self.transport.workdir}/{rel}"
        if remote in self._staged:
            return remote
        size = local.stat().st_size
        check = self.transport.run(
            f"[ \"$(wc -c < {quote(remote)} 2>/dev/null | tr -d ' ')\" = {size} ] && echo have",
            timeout=60,
        )
        if "have" not in check.stdout:
            parent = remote.rsplit("/", 1)[0]
            mk = self.transport.run(f"mkdir -p {quote(parent)}", timeout=60)
            if not mk.ok:
                raise RunnerError(f"cannot create {parent} on the device: {mk.describe()}")
            self.transport.push(local, remote, mode)
        self._staged.add(remote)
        return remote

    def stage_artifact(self, path: Path, suffix: str) -> str:
        return self.stage(path, f"artifacts/{sha256_file(path)}{suffix}", 0o644)
