"""Content-addressed blob store: ``blobs/ab/abcdef…`` named by the sha256 of the bytes.

Writes go to a temporary file in ``tmp/`` (same filesystem), are fsynced, then renamed into
place, so a blob path either holds the complete bytes or does not exist. A write that fails or
exceeds its size cap removes its temporary file.

Bytes can still change on disk afterwards (a bad sector, an operator's mistake): ``verify``
re-hashes a blob before it is served or converted and ``quarantine`` moves a corrupt one out
of the store (to ``quarantine/``, for inspection), so the same bytes can be stored again. To
keep downloads cheap, a blob whose hash was checked (or computed when it was written) is not
re-hashed while its (size, mtime_ns, ctime_ns, inode) stay the same: any write to the file
changes its mtime and ctime, a replaced file changes its inode. The memory is per process and
empty at start, so the first use after a restart hashes each blob once.

Several coordinators may share one data_dir (docs/scaling.md): each store names its files
under ``tmp/`` with its owner tag and holds an exclusive ``flock`` on ``owners/<tag>.lock``
while it lives (the kernel drops it when the process dies, even by SIGKILL). ``clean_tmp`` at
startup removes only what no live owner holds: files of dead owners and untagged leftovers,
never another running coordinator's partial upload or conversion.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bnnbench.digest import sha256_file

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# the owner tag inside a tmp/ file's name: ``<prefix><tag>-<random><suffix>``
_OWNER_RE = re.compile(r"(?:^|-)([0-9a-f]{16})-")
OWNER_TAG = re.compile(r"^[0-9a-f]{16}$")


class TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the size limit of {limit} bytes (max_upload_bytes)")
        self.limit = limit


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Corrupt:
    """A blob whose bytes no longer hash to its name (``actual``: what they hash to)."""

    sha256: str
    actual: str
    size: int

    def __str__(self) -> str:
        return f"stored blob {self.sha256} is corrupt: its {self.size} bytes hash to {self.actual}"


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class BlobWriter:
    """Streams bytes to a temp file while hashing; ``commit()`` moves it into the store."""

    def __init__(self, store: BlobStore, max_bytes: int | None = None) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix=f"upload-{store.owner}-")
        self.tmp_path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._done = False

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.abort()
            raise TooLarge(self.max_bytes)
        self._hash.update(chunk)
        self._file.write(chunk)

    def flush(self) -> None:
        """Make everything written so far visible to readers of ``tmp_path``."""
        self._file.flush()

    def head(self, n: int) -> bytes:
        """First ``n`` bytes written so far (for a cheap format check before commit)."""
        self.flush()
        with open(self.tmp_path, "rb") as f:
            return f.read(n)

    def commit(self) -> tuple[str, int]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha = self._hash.hexdigest()
        self.store._place(self.tmp_path, sha)
        self._done = True
        return sha, self.size

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()


def _lock_is_held(path: Path) -> bool:
    """Whether a live process holds the flock on ``path`` (False: gone or free)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock taken just now
    return False


class BlobStore:
    def __init__(self, data_dir: Path, owner: str | None = None) -> None:
        self.root = data_dir / "blobs"
        self.tmp_dir = data_dir / "tmp"
        self.quarantine_dir = data_dir / "quarantine"
        self.owners_dir = data_dir / "owners"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.owners_dir.mkdir(parents=True, exist_ok=True)
        self.owner = owner or secrets.token_hex(8)
        if not OWNER_TAG.match(self.owner):
            raise ValueError(f"owner tag must be 16 hex digits, got {self.owner!r}")
        self._owner_fd = self._hold_owner_lock()
        # closes the descriptor (dropping the lock) when the store is collected
        self._release = weakref.finalize(self, os.close, self._owner_fd)
        # sha256 -> stat stamp of the file when its bytes were last known to hash to its name
        self._verified: dict[str, tuple[int, int, int, int]] = {}
        self._lock = threading.Lock()

    def _hold_owner_lock(self) -> int:
        # locked under a temporary name, then renamed: a lock file under its final name is
        # always held while its owner lives (clean_tmp never sees it free and unowned)
        final = self.owners_dir / f"{self.owner}.lock"
        fd, name = tempfile.mkstemp(dir=self.owners_dir, prefix=".new-")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"pid {os.getpid()}\n".encode())
            os.replace(name, final)
        except BaseException:
            os.close(fd)
            Path(name).unlink(missing_ok=True)
            raise
        return fd

    def close(self) -> None:
        """Give up the owner lock (at shutdown); this store's tmp files count as leftovers."""
        if self._release.alive:
            (self.owners_dir / f"{self.owner}.lock").unlink(missing_ok=True)
            self._release()

    def owner_alive(self, tag: str) -> bool:
        """Whether the store (process) with owner ``tag`` holds its lock on this data_dir."""
        if tag == self.owner:
            return self._release.alive
        return _lock_is_held(self.owners_dir / f"{tag}.lock")

    def clean_tmp(self) -> int:
        """Remove leftovers of writes interrupted by a crash: files in ``tmp/`` whose owner is
        gone (or that carry no owner tag: an older version's) and the lock files of dead
        owners. A live coordinator's files on the same data_dir are kept. Call at startup."""
        n = 0
        alive: dict[str, bool] = {}
        for p in self.tmp_dir.iterdir():
            m = _OWNER_RE.search(p.name)
            if m is not None:
                tag = m.group(1)
                if tag not in alive:  # the lock predates the file: checked after listing it
                    alive[tag] = self.owner_alive(tag)
                if alive[tag]:
                    continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        for lock in self.owners_dir.glob("*.lock"):
            if lock.stem != self.owner and not _lock_is_held(lock):
                with contextlib.suppress(OSError):
                    lock.unlink()
        for stale in self.owners_dir.glob(".new-*"):  # a crash between mkstemp and rename
            if not _lock_is_held(stale):
                stale.unlink(missing_ok=True)
        return n

    def path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def verify(self, sha256: str) -> Corrupt | None:
        """None if the blob's bytes hash to its name (re-hashed only when its stat changed
        since the last check); a :class:`Corrupt` if not. Raises FileNotFoundError if the
        blob is missing."""
        path = self.path(sha256)
        stamp = _stamp(path.stat())
        with self._lock:
            if self._verified.get(sha256) == stamp:
                return None
        actual = sha256_file(path)
        if actual != sha256:
            with self._lock:
                self._verified.pop(sha256, None)
            return Corrupt(sha256, actual, stamp[0])
        # stat again: a write during the hashing must not be remembered as verified
        if _stamp(path.stat()) == stamp:
            with self._lock:
                self._verified[sha256] = stamp
        return None

    def quarantine(self, sha256: str) -> Path | None:
        """Move a corrupt blob out of the store into ``quarantine/`` (kept for inspection);
        returns its new path, None if it was already gone."""
        with self._lock:
            self._verified.pop(sha256, None)
        src = self.path(sha256)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        dest = self.quarantine_dir / f"{sha256}.{time.time_ns()}"
        try:
            os.replace(src, dest)
        except FileNotFoundError:
            return None
        _fsync_dir(src.parent)
        return dest

    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        return BlobWriter(self, max_bytes)

    def put_file(self, src: Path) -> tuple[str, int]:
        """Move ``src`` (a file on the same filesystem, e.g. under ``tmp/``) into the store."""
        # another process (a converter) wrote it: make it durable before it gets its name
        with open(src, "rb") as f:
            os.fsync(f.fileno())
        sha = sha256_file(src)
        size = src.stat().st_size
        self._place(src, sha)
        return sha, size

    def _place(self, tmp: Path, sha: str) -> None:
        dest = self.path(sha)
        if dest.exists():
            try:
                corrupt = self.verify(sha)
            except FileNotFoundError:
                corrupt = None  # removed meanwhile: place the new copy below
            else:
                if corrupt is None:  # same bytes already stored: keep the existing file
                    tmp.unlink(missing_ok=True)
                    return
            if corrupt is not None:  # the stored copy went bad: the fresh bytes repair it
                self.quarantine(sha)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        # the hash was just computed from these bytes: no need to re-hash the file on first use
        with self._lock:
            self._verified[sha] = _stamp(dest.stat())

    def tmp_path(self, prefix: str, suffix: str = "") -> Path:
        """A fresh, unused name under ``tmp/`` for a file another process will write."""
        fd, name = tempfile.mkstemp(
            dir=self.tmp_dir, prefix=f"{prefix}{self.owner}-", suffix=suffix
        )
        os.close(fd)
        return Path(name)

    def blob_files(self) -> list[Path]:
        return sorted(p for p in self.root.glob("??/*") if p.is_file())
