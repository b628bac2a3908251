"""A throwaway PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp dir, Unix socket
only (no TCP port), trust auth, fsync off; stopped and deleted afterwards. As root, the
server runs as the ``postgres`` (else ``nobody``) user: PostgreSQL refuses to run as root.

:func:`unavailable` says why none can start here (binaries or psycopg missing), for a skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

INSTALL_HINT = "apt-get install postgresql (make system-deps) and pip install 'psycopg[binary]'"


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)] or [0],
    )
    return versions[-1].parent if versions else None


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL")


def unavailable() -> str | None:
    """Why no server can start here, or None."""
    if pg_bindir() is None:
        return f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}"
    if importlib.util.find_spec("psycopg") is None:
        return f"psycopg (PostgreSQL driver) not installed: {INSTALL_HINT}"
    return None


class PostgresServer:
    """A running server; :meth:`create_database` gives each test its own database."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.log = root / "server.log"
        self._n = 0
        # set by postgres_server(): who runs the server and its options (for restart())
        self.user: pwd.struct_passwd | None = None
        self.options = ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.root}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        self._n += 1
        name = f"{prefix}_{self._n}"
        with psycopg.connect(host=str(self.root), user="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast: clients are disconnected, as by a crash or an upgrade)."""
        _run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            self.root,
            self.user,
            60,
        )

    def start(self) -> None:
        """Start it again (after :meth:`stop`), same data and socket."""
        start = ["-l", str(self.log), "-w", "-t", "60", "-o", self.options, "start"]
        _run([str(self.bindir / "pg_ctl"), "-D", str(self.data), *start], self.root, self.user, 90)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds`` (an outage clients run into), start again."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return "(no log)"


def _run(cmd: list[str], root: Path, user: pwd.struct_passwd | None, timeout: float) -> None:
    kw: dict[str, Any] = {}
    if user is not None:
        kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    proc = subprocess.run(
        cmd, cwd=root, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({proc.returncode}):\n{proc.stderr}")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError(unavailable())
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="bnnbench-pg-"))  # under /tmp: the server user reaches it
    server = PostgresServer(root, bindir)
    started = False
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        initdb = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        _run([str(bindir / "initdb"), "-D", str(server.data), *initdb], root, user, 120)
        opts = f"-c listen_addresses='' -k {root} -c fsync=off -c full_page_writes=off"
        server.user, server.options = user, opts
        start = ["-l", str(server.log), "-w", "-t", "60", "-o", opts, "start"]
        started = True  # stop even a start that timed out
        _run([str(bindir / "pg_ctl"), "-D", str(server.data), *start], root, user, 90)
        yield server
    finally:
        if started:
            with contextlib.suppress(Exception):
                stop = ["-m", "immediate", "-w", "stop"]
                _run([str(bindir / "pg_ctl"), "-D", str(server.data), *stop], root, user, 60)
        shutil.rmtree(root, ignore_errors=True)
