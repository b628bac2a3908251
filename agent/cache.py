"""Content-addressed artifact cache: ``<cache_dir>/artifacts/<sha256>``.

An artifact is downloaded once, streamed into a temporary file in the same directory, checked
against the sha256 the lease promised *and* the one the server sent, and only then renamed into
place (atomic on POSIX), so a file under its hash name is always complete and correct. A cached
file is re-hashed before each use: a board's SD card can rot, and a silently wrong model would
produce plausible but meaningless timings.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from bnnbench.client import BnnbenchClient
from bnnbench.digest import sha256_file
from bnnbench.schemas import SHA256_HEADER, ArtifactRef

log = logging.getLogger("bnnbench.agent")


class ArtifactError(Exception):
    """The artifact could not be obtained intact; the message says why (for the job failure)."""


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

    def fetch(self, client: BnnbenchClient, ref: ArtifactRef) -> Path:
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
                got = client.download(ref.download_url, f)
                f.flush()
                os.fsync(f.fileno())
            served = got.announced.lower()
            problems = []
            if got.sha256 != expected:
                problems.append(f"content hashes to {got.sha256}")
            if served and served != expected:
                problems.append(f"server announced {SHA256_HEADER} {served}")
            if not served:
                problems.append(f"server sent no {SHA256_HEADER} header")
            if ref.size and got.size != ref.size:
                problems.append(f"got {got.size} bytes, lease says {ref.size}")
            if problems:
                raise ArtifactError(
                    f"artifact {ref.id} download rejected: expected sha256 {expected}, but "
                    + "; ".join(problems)
                    + " (corrupted download or damaged blob on the coordinator; file discarded)"
                )
            os.replace(tmp, dest)
            log.info("artifact %s cached (%d bytes, sha256 %s)", ref.id, got.size, expected)
            return dest
        finally:
            tmp.unlink(missing_ok=True)
