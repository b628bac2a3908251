"""Content-addressed artifact cache: ``<cache_dir>/artifacts/<sha256>``.

An artifact is downloaded once, streamed into a temporary file in the same directory, checked
against the sha256 the lease promised *and* the one the server sent, and only then renamed into
place (atomic on POSIX), so a file under its hash name is always complete and correct. A cached
file is re-hashed before each use: a board's SD card can rot, and a silently wrong model would
produce plausible but meaningless timings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from agent.api import CoordinatorApi
from bnnbench.schemas import ArtifactRef

log = logging.getLogger("bnnbench.agent")

HASH_HEADER = "X-Content-SHA256"


class ArtifactError(Exception):
    """The artifact could not be obtained intact; the message says why (for the job failure)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ArtifactCache:
    def __init__(self, cache_dir: Path) -> None:
        self.dir = Path(cache_dir) / "artifacts"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ArtifactError(f"invalid artifact sha256 {sha256!r}")
        return self.dir / sha256

    def lookup(self, sha256: str) -> Path | None:
        """The cached file if present and still intact; a damaged one is deleted."""
        path = self.path_for(sha256)
        if not path.exists():
            return None
        actual = sha256_file(path)
        if actual == sha256:
            return path
        log.warning("cached artifact %s is damaged (hashes to %s); re-downloading", sha256, actual)
        path.unlink(missing_ok=True)
        return None

    def fetch(self, api: CoordinatorApi, ref: ArtifactRef) -> Path:
        """Path of the verified artifact, downloading it if needed."""
        expected = ref.sha256.lower()
        cached = self.lookup(expected)
        if cached is not None:
            return cached
        dest = self.path_for(expected)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{expected[:16]}.", suffix=".part", dir=self.dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                state = {"h": hashlib.sha256(), "n": 0}

                def restart() -> None:
                    f.seek(0)
                    f.truncate()
                    state["h"], state["n"] = hashlib.sha256(), 0

                def write(chunk: bytes) -> None:
                    f.write(chunk)
                    state["h"].update(chunk)
                    state["n"] += len(chunk)

                headers = api.stream_to(ref.download_url, write, on_restart=restart)
                f.flush()
                os.fsync(f.fileno())
            actual, size = state["h"].hexdigest(), state["n"]
            served = (headers.get(HASH_HEADER) or "").lower()
            problems = []
            if actual != expected:
                problems.append(f"content hashes to {actual}")
            if served and served != expected:
                problems.append(f"server announced {HASH_HEADER} {served}")
            if not served:
                problems.append(f"server sent no {HASH_HEADER} header")
            if ref.size and size != ref.size:
                problems.append(f"got {size} bytes, lease says {ref.size}")
            if problems:
                raise ArtifactError(
                    f"artifact {ref.id} download rejected: expected sha256 {expected}, but "
                    + "; ".join(problems)
                    + " (corrupted download or damaged blob on the coordinator; file discarded)"
                )
            os.replace(tmp, dest)
            log.info("artifact %s cached (%d bytes, sha256 %s)", ref.id, size, expected)
            return dest
        finally:
            tmp.unlink(missing_ok=True)
