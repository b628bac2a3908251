"""A real OpenSSH server on 127.0.0.1 for transport tests.

``start_sshd(tmp_dir)`` runs Debian's ``/usr/sbin/sshd`` in the foreground on a free port, as
the current user, with a fresh ed25519 host key and one authorized ed25519 user key, and
returns an :class:`SshServer`; ``server.transport_kwargs()`` are the keyword arguments of an
``SshTransport`` that trusts that host key and logs in with that key. Stop it with ``stop()``.

Without ``/usr/sbin/sshd`` the calling test fails, saying what to install (`make test`
installs openssh-server): a transport test is never skipped silently.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.procs import children

SSHD = "/usr/sbin/sshd"  # absolute: sshd refuses to re-exec itself otherwise
PRIVSEP_DIR = Path("/run/sshd")


def require_sshd() -> None:
    missing = [p for p in (SSHD, "ssh-keygen") if not (Path(p).exists() or shutil.which(p))]
    if missing:
        pytest.fail(
            f"OpenSSH server not installed (missing {', '.join(missing)}): "
            "`make system-deps` installs openssh-server"
        )


def make_keypair(path: Path, comment: str = "bnnbench-test") -> str:
    """Write an ed25519 key pair at ``path``/``path.pub``; return the public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return Path(f"{path}.pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    key_file: Path  # private key authorized for `user`
    known_hosts: Path  # "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    host_key_line: str  # the host's public key: "ssh-ed25519 AAAA..."
    dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    def transport_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``SshTransport(**kw)`` that connect to this server."""
        kw: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            "known_hosts": self.known_hosts,
            "connect_timeout": 5.0,
        }
        kw.update(overrides)
        return kw

    def cli_options(self, known_hosts: Path | None = None) -> list[str]:
        """``bnnbench devices add`` options that log in to this server."""
        hosts = known_hosts or self.known_hosts
        return ["--key-file", str(self.key_file), "--known-hosts", str(hosts)]

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (monitor and session child), not user commands."""
        found: list[int] = []
        todo = children(self.process.pid)
        while todo:
            pid = todo.pop()
            if _comm(pid) == "sshd":
                found.append(pid)
                todo += children(pid)
        return found

    def kill_sessions(self) -> list[int]:
        """SIGKILL every connection's sshd processes: connections drop, the daemon listens on.

        The commands those sessions ran are left alone (as on a board whose link died).
        """
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def log(self) -> str:
        return (self.dir / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        self.kill_sessions()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_sshd(tmp_dir: Path, attempts: int = 3) -> SshServer:
    require_sshd()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    host_key = tmp_dir / "ssh_host_ed25519_key"
    host_pub = make_keypair(host_key, "bnnbench-test-host")
    user_key = tmp_dir / "id_ed25519"
    (tmp_dir / "authorized_keys").write_text(make_keypair(user_key) + "\n")
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        # sshd refuses to start as root without its privilege separation directory
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    user = getpass.getuser()
    last_error = ""
    for _ in range(attempts):  # the free port may be taken between probe and bind
        port = free_port()
        config = tmp_dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {tmp_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {tmp_dir / 'authorized_keys'}",
                    "StrictModes no",  # pytest's temp dirs are not root-owned 0755 chains
                    "UsePAM no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UseDNS no",
                    "PrintMotd no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        pid_file = tmp_dir / "sshd.pid"
        pid_file.unlink(missing_ok=True)
        log = (tmp_dir / "sshd.log").open("ab")
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config), "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        server = SshServer(
            host="127.0.0.1",
            port=port,
            user=user,
            key_file=user_key,
            known_hosts=tmp_dir / "known_hosts",
            host_key_line=" ".join(host_pub.split()[:2]),
            dir=tmp_dir,
            process=proc,
        )
        server.known_hosts.write_text(f"[127.0.0.1]:{port} {server.host_key_line}\n")
        if _wait_listening(server, timeout=10.0):
            return server
        server.stop()
        last_error = server.log()[-2000:]
    raise RuntimeError(f"sshd did not start:\n{last_error}")


def _wait_listening(server: SshServer, timeout: float) -> bool:
    # sshd writes its pid file once it listens; no probe connection needed before that
    pid_file = server.dir / "sshd.pid"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.process.poll() is not None:
            return False
        if pid_file.exists():
            with (
                contextlib.suppress(OSError),
                socket.create_connection((server.host, server.port), timeout=1),
            ):
                return True
        time.sleep(0.05)
    return False
