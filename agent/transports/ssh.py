"""A board reached over SSH (paramiko): commands through ``exec``, files through SFTP.

Design notes:

- Host keys are checked against an OpenSSH ``known_hosts`` file *before* authenticating, so a
  password never goes to an impostor. ``strict`` (default) refuses unknown hosts;
  ``accept-new`` records an unknown host's key (trust on first use). A key that differs from
  the recorded one is refused under both policies.
- ``run`` wraps the command so that its process can be found and killed on timeout (or when
  the run's ``CancelScope`` is cancelled: then ``RunCancelled`` is raised): the
  wrapper prints its pid on stderr behind a random marker (stripped from the result) and tags
  the environment with ``BNNBENCH_RUN=<token>``. The kill (from a second channel) signals the
  wrapper's process group (sshd ``setsid()``s every session, so the wrapper leads its own
  group) plus every process whose ``/proc/PID/environ`` carries the token, which also catches
  children that left the group (``setsid``, daemons).
- A connection that dies during a command raises ``TransportError``; the command's token is
  remembered and its leftover processes are killed on the next connect, so they do not skew
  the measurement of a retried job.
- Silent drops (cable pulled, board frozen) are detected by SSH keepalives plus
  ``TCP_USER_TIMEOUT`` (Linux): unacknowledged keepalives end the connection after
  ``dead_after_s`` instead of TCP's default quarter of an hour.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from agent.transports.base import (
    CANCEL_POLL_S,
    CommandResult,
    RunCancelled,
    TransportError,
    current_scope,
    quote,
)

HOST_KEY_POLICIES = ("strict", "accept-new")
_ENV_TAG = "BNNBENCH_RUN"
_PID_MARKER = "bnnbench-pid-"

# Kill everything a run left behind: its process group (when a pid is known) and every process
# tagged with the run's token. TERM first so a benchmark can flush, KILL shortly after;
# `sleep 0.5` fails fast on shells whose sleep takes whole seconds only.
_KILL_SCRIPT = """\
t={env}={token}; p={pid}
sig() {{
  if [ -n "$p" ]; then kill -$1 -$p 2>/dev/null; kill -$1 $p 2>/dev/null; fi
  for f in $(grep -lF "$t" /proc/[0-9]*/environ 2>/dev/null); do
    f=${{f#/proc/}}; kill -$1 ${{f%/environ}} 2>/dev/null
  done
}}
sig TERM; sleep 0.5 2>/dev/null || sleep 1; sig KILL; exit 0
"""

# exceptions that mean the connection (not the command) failed
_CONN_ERRORS = (paramiko.SSHException, EOFError, OSError)


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(f"host {name} not found in known_hosts")
        self.name = name
        self.key = key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        raise _UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust on first use: append the new host's key to known_hosts.

    Appends one line instead of paramiko's AutoAddPolicy rewrite, which would drop every line
    paramiko cannot parse (comments, markers, key types it lacks) from the user's file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sep = ""
        with contextlib.suppress(OSError), self.path.open("rb") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                sep = "" if f.read(1) == b"\n" else "\n"
        with self.path.open("a") as f:
            f.write(f"{sep}{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


class SshTransport:
    name = "ssh"
    # seconds; class attributes so a deployment (or a test) can tune them without new arguments
    keepalive_s: float = 5.0
    dead_after_s: float = 30.0  # unacknowledged traffic for this long ends the connection
    io_timeout_s: float = 60.0  # one SFTP read/write
    kill_timeout_s: float = 15.0

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_file: str | Path | None = None,
        password: str | None = None,
        known_hosts: str | Path | None = None,
        host_key_policy: str = "strict",
        workdir: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if host_key_policy not in HOST_KEY_POLICIES:
            raise ValueError(f"host_key_policy must be one of {HOST_KEY_POLICIES}")
        self.host = host
        self.port = int(port)
        self.user = user or getpass.getuser()
        self.key_file = Path(key_file).expanduser() if key_file else None
        self.password = password
        self.known_hosts = Path(known_hosts or "~/.ssh/known_hosts").expanduser()
        self.host_key_policy = host_key_policy
        self.workdir = workdir or f"/tmp/bnnbench-{self.user}"
        self.connect_timeout = connect_timeout
        shown = f"[{host}]" if ":" in host else host
        self.address = f"ssh://{self.user}@{shown}:{self.port}"
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._orphans: list[str] = []  # tokens of runs cut off by a lost connection
        self._workdir_ready = False

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> SshTransport:
        """``ssh://user@host:port[/workdir]``; keyword arguments win over the URL's parts."""
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError(f"not an ssh://[user@]host[:port] URL: {url!r}")
        kw.setdefault("port", parts.port or 22)
        if parts.username:
            kw.setdefault("user", unquote(parts.username))
        if parts.password:
            kw.setdefault("password", unquote(parts.password))
        if parts.path not in ("", "/"):
            kw.setdefault("workdir", unquote(parts.path))
        return cls(parts.hostname, **kw)

    # --- the Transport protocol -------------------------------------------------------------

    def run(self, command: str, timeout: float) -> CommandResult:
        scope = current_scope()  # a cancelled run is killed on the board like a timed-out one
        if scope is not None:
            scope.check()
        start = time.monotonic()
        token = secrets.token_hex(8)
        marker = f"{_PID_MARKER}{token}:"
        # `sh -c`, not the login shell's own syntax. The trailing `exit $?` keeps bash from
        # exec()ing the last command: the wrapper stays the parent, so a command killed by a
        # signal reports 128+N (paramiko ignores sshd's exit-signal message)
        wrapped = (
            f"{_ENV_TAG}={token}; export {_ENV_TAG}; echo {marker}$$ >&2; "
            f"sh -c {quote(command)}; exit $?"
        )
        chan = self._open_session()
        out, err = bytearray(), bytearray()
        pid: int | None = None
        timed_out = cancelled = False
        poll = CANCEL_POLL_S if scope is not None else 1.0
        try:
            chan.exec_command(wrapped)
            deadline = start + timeout
            while True:
                _drain(chan, out, err)
                if pid is None:
                    pid = _find_pid(err, marker)
                if chan.closed and not (chan.recv_ready() or chan.recv_stderr_ready()):
                    break
                if scope is not None and scope.cancelled:
                    timed_out = cancelled = True  # killed below, the same way
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                # the channel's fd is readable on stdout or stderr data and on close: both
                # streams drain together, so neither can fill the window and stall the other
                select.select([chan], [], [], min(remaining, poll))
        except _CONN_ERRORS as e:
            chan.close()
            self._orphans.append(token)
            self._drop()
            raise TransportError(
                f"{self.address}: connection lost while running `{command[:200]}`: {_describe(e)}"
            ) from e

        if timed_out:
            try:
                self._kill(token, pid)
            except TransportError:
                self._orphans.append(token)  # killed after the next connect instead
                if not cancelled:
                    raise
            if cancelled:
                chan.close()
                assert scope is not None
                raise RunCancelled(f"{self.address}: `{command[:200]}` stopped: {scope.reason}")
            # collect what the command wrote before it died, briefly: sshd closes the channel
            # once the processes holding its pipes are gone
            grace = time.monotonic() + 2.0
            while not chan.closed and time.monotonic() < grace:
                _drain(chan, out, err)
                select.select([chan], [], [], 0.1)
            _drain(chan, out, err)
            chan.close()
        elif chan.exit_status == -1 and not chan.eof_received and self._lost_transport():
            # closed by the transport, not by the server: no EOF, no exit status
            self._orphans.append(token)
            self._drop()
            raise TransportError(f"{self.address}: connection lost while running `{command[:200]}`")

        return CommandResult(
            command=command,
            exit_code=-1 if timed_out else chan.exit_status,
            stdout=out.decode(errors="replace"),
            stderr=_strip_marker(err, marker).decode(errors="replace"),
            timed_out=timed_out,
            duration_s=time.monotonic() - start,
        )

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        part = f"{remote}.part"
        # the local file is opened first: a missing local file is the caller's error (OSError),
        # not a device one
        with open(local, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            sftp = self._sftp_client()
            with self._errors(f"push {local} -> {remote}"):
                try:
                    sftp.putfo(f, part, file_size=size, confirm=True)
                    sftp.chmod(part, mode)
                    _rename(sftp, part, remote)
                except BaseException:
                    with contextlib.suppress(Exception):
                        sftp.remove(part)
                    raise

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)
        part = local.with_name(local.name + ".part")
        sftp = self._sftp_client()
        with self._errors(f"pull {remote} -> {local}"):
            try:
                with open(part, "wb") as f:
                    sftp.getfo(remote, f)
                os.replace(part, local)
            finally:
                part.unlink(missing_ok=True)

    def close(self) -> None:
        self._drop()

    # --- helpers -----------------------------------------------------------------------------

    def ensure_workdir(self) -> str:
        """Create ``workdir`` on the device (once per transport object) and return it."""
        if not self._workdir_ready:
            res = self.run(f"mkdir -p {quote(self.workdir)}", timeout=30)
            if not res.ok:
                raise TransportError(f"{self.address}: cannot create workdir: {res.describe()}")
            self._workdir_ready = True
        return self.workdir

    def _connected(self) -> paramiko.SSHClient:
        """The live client, reconnecting first when there is none or its connection died."""
        with self._lock:
            t = self._client.get_transport() if self._client else None
            if self._client is not None and t is not None and t.is_authenticated():
                return self._client
            self._drop()
            client = self._client = self._connect()
            orphans, self._orphans = self._orphans, []
        for token in orphans:
            # best effort, once: the board may have rebooted, the processes may be gone
            with contextlib.suppress(TransportError):
                self._kill(token, None)
        # the cleanup itself may have lost this connection: then connect afresh
        return client if self._client is client else self._connected()

    def _connect(self) -> paramiko.SSHClient:
        if self.key_file is not None and not self.key_file.is_file():
            raise TransportError(f"{self.address}: ssh key file {self.key_file} not found")
        client = paramiko.SSHClient()
        # our own parser: paramiko's load_host_keys raises on @cert-authority/@revoked lines
        # and AutoAddPolicy would rewrite the whole file
        _load_known_hosts(self.known_hosts, client.get_host_keys())
        client.set_missing_host_key_policy(
            _AcceptNew(self.known_hosts)
            if self.host_key_policy == "accept-new"
            else _RejectUnknown()
        )
        explicit = self.key_file is not None or self.password is not None
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_file) if self.key_file else None,
                password=self.password,
                # with explicit credentials, do not also offer every key of the agent's user:
                # sshd's MaxAuthTries would count them
                allow_agent=not explicit,
                look_for_keys=not explicit,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException as e:
            client.close()
            name = _known_hosts_name(self.host, self.port)
            raise TransportError(
                f"{self.address}: host key of {name} does not match known_hosts "
                f"({self.known_hosts}): the server offered {e.key.get_name()} "
                f"{_fingerprint(e.key)}, known_hosts has {e.expected_key.get_name()} "
                f"{_fingerprint(e.expected_key)}. Refusing to connect: the board may have been "
                f"reinstalled, or the connection is intercepted; if the change is expected, "
                f"remove the old key with `ssh-keygen -R '{name}' -f {self.known_hosts}`"
            ) from e
        except _UnknownHostKey as e:
            client.close()
            raise TransportError(
                f"{self.address}: host {e.name} is not in known_hosts ({self.known_hosts}); "
                f"refusing an unverified host key ({e.key.get_name()} {_fingerprint(e.key)}). "
                f"Add it (ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}) or use "
                f"host_key_policy='accept-new'"
            ) from e
        except paramiko.AuthenticationException as e:
            client.close()
            raise TransportError(
                f"{self.address}: authentication failed for user {self.user!r} with "
                f"{self._credentials()}: {_describe(e)}" + _allowed_types(e)
            ) from e
        except (*_CONN_ERRORS, InvalidHostKey) as e:
            client.close()
            raise TransportError(f"{self.address}: cannot connect: {_describe(e)}") from e
        transport = client.get_transport()
        assert transport is not None  # connect() succeeded
        transport.set_keepalive(max(1, round(self.keepalive_s)))
        _tune_socket(transport.sock, self.keepalive_s, self.dead_after_s)
        return client

    def _drop(self) -> None:
        with self._lock:
            sftp, client = self._sftp, self._client
            self._sftp = self._client = None
        for c in (sftp, client):
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()

    def _lost_transport(self) -> bool:
        """Whether the connection is gone (paramiko closes channels just before it says so)."""
        client = self._client
        t = client.get_transport() if client else None
        end = time.monotonic() + 0.5
        while t is not None and t.is_active() and time.monotonic() < end:
            time.sleep(0.02)
        return t is None or not t.is_active()

    def _open_session(self, timeout: float | None = None) -> paramiko.Channel:
        # a stale connection fails here, before anything ran: reconnect and try once more
        for attempt in (1, 2):
            client = self._connected()
            try:
                t = client.get_transport()
                if t is None:
                    raise paramiko.SSHException("not connected")
                return t.open_session(timeout=timeout or self.connect_timeout)
            except _CONN_ERRORS as e:
                self._drop()
                if attempt == 2:
                    raise TransportError(
                        f"{self.address}: cannot open a session: {_describe(e)}"
                    ) from e
        raise AssertionError("unreachable")

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is not None and self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._sftp
        chan = self._open_session()
        try:
            # bounded reads: a dead peer raises socket.timeout instead of hanging a transfer
            chan.settimeout(self.io_timeout_s)
            chan.invoke_subsystem("sftp")
            sftp = paramiko.SFTPClient(chan)
        except _CONN_ERRORS as e:
            chan.close()
            raise TransportError(
                f"{self.address}: cannot start sftp (is the sftp subsystem enabled in sshd?): "
                f"{_describe(e)}"
            ) from e
        with self._lock:
            self._sftp = sftp
        return sftp

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """File-system errors stay OSError (as for LocalTransport); the rest is TransportError."""
        try:
            yield
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
            raise type(e)(e.errno, f"{self.address}: {what}: {e.strerror or e}") from e
        except _CONN_ERRORS as e:
            self._drop()
            raise TransportError(f"{self.address}: {what} failed: {_describe(e)}") from e

    def _kill(self, token: str, pid: int | None) -> None:
        """Signal a run's processes from a second channel; TransportError when it cannot."""
        script = _KILL_SCRIPT.format(env=_ENV_TAG, token=token, pid=pid if pid else "")
        chan = self._open_session()
        try:
            chan.exec_command(script)
            deadline = time.monotonic() + self.kill_timeout_s
            while not chan.closed and time.monotonic() < deadline:
                _drain(chan, bytearray(), bytearray())
                select.select([chan], [], [], 0.2)
        except _CONN_ERRORS as e:
            self._drop()
            raise TransportError(f"{self.address}: could not kill a command: {_describe(e)}") from e
        finally:
            chan.close()

    def _credentials(self) -> str:
        if self.key_file and self.password:
            return f"key file {self.key_file} and a password"
        if self.key_file:
            return f"key file {self.key_file}"
        if self.password:
            return "a password"
        return "the ssh agent and default keys (~/.ssh/id_*)"


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while chan.recv_ready():
        out += chan.recv(65536)
    while chan.recv_stderr_ready():
        err += chan.recv_stderr(65536)


def _find_pid(err: bytearray, marker: str) -> int | None:
    # the marker comes before any output of the command: no need to scan a long stderr
    m = re.search(re.escape(marker.encode()) + rb"(\d+)\n", err[:65536])
    return int(m.group(1)) if m else None


def _strip_marker(err: bytearray, marker: str) -> bytes:
    # not necessarily at offset 0: a login shell's rc file may have printed first
    return re.sub(re.escape(marker.encode()) + rb"\d*\n?", b"", bytes(err), count=1)


def _rename(sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
    try:
        sftp.posix_rename(src, dst)  # atomic replace (OpenSSH extension)
    except OSError as e:
        if e.errno is not None:
            raise
        # server without posix-rename: SFTPv3 rename refuses an existing target
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(dst)
        sftp.rename(src, dst)


def _load_known_hosts(path: Path, keys: paramiko.HostKeys) -> None:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    except OSError as e:
        raise TransportError(f"cannot read known_hosts {path}: {e}") from e
    for line in text.splitlines():
        line = line.strip()
        # markers (@cert-authority, @revoked) are not supported by paramiko: skipped
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line)
        except (paramiko.SSHException, InvalidHostKey, ValueError):
            continue
        if entry is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _fingerprint(key: paramiko.PKey) -> str:
    try:
        return str(key.fingerprint)  # "SHA256:...", as ssh-keygen -l prints it
    except Exception:
        return key.get_base64()[:24] + "..."


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _allowed_types(e: paramiko.AuthenticationException) -> str:
    allowed = getattr(e, "allowed_types", None)
    return f" (the server allows: {', '.join(allowed)})" if allowed else ""


def _tune_socket(sock: Any, keepalive_s: float, dead_after_s: float) -> None:
    if not isinstance(sock, socket.socket):
        return
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    # ssh keepalives are data, so an unanswered one is "unacknowledged data": TCP_USER_TIMEOUT
    # turns that into an error; TCP keepalive probes cover the idle case
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        opts.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead_after_s * 1000)))
    if hasattr(socket, "TCP_KEEPIDLE"):
        opts += [
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(keepalive_s))),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(keepalive_s))),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, int(dead_after_s / keepalive_s))),
        ]
    for level, opt, value in opts:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, opt, value)
