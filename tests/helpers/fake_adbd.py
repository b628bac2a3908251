"""A fake Android phone for tests: a TCP server speaking adbd's side of the adb protocol.

The real ``adb`` client and server talk to it exactly as to a phone on the network:
``adb connect 127.0.0.1:PORT``, then ``adb -s 127.0.0.1:PORT shell|push|pull ...``. No phone
exists on a CI machine; this is the stand-in, so it speaks the wire protocol (AOSP
``packages/modules/adb``: protocol.txt, SERVICES.TXT, SYNC.TXT) rather than stubbing the
transport's functions.

What of the protocol it implements
----------------------------------
- Packets: 24-byte little-endian header ``command, arg0, arg1, data_length, data_check,
  magic = command ^ 0xffffffff`` and the payload. The device answers the host's ``CNXN`` with
  its own ``CNXN(A_VERSION=0x01000001, max_payload, banner)``, no ``AUTH`` (an unsecured or
  already-authorized device) and no TLS (``STLS``). ``data_check`` (a byte sum, not a CRC) is
  sent only when the host is older than 0x01000001; incoming checks are not verified, as
  modern adbd does not either. The banner is ``device::ro.product.name=…;ro.product.model=…;
  ro.product.device=…;features=…`` with ``features`` = :data:`DEFAULT_FEATURES` (shell_v2,
  stat_v2, fixed_push_mkdir), or what the test passes.
- Streams: ``OPEN(host_id, 0, "service\\0")`` → ``OKAY(dev_id, host_id)`` or, for an unknown
  service, ``CLSE(0, host_id)``; ``WRTE`` both ways with flow control (one unacknowledged
  ``WRTE`` per stream and direction: the device acknowledges each host ``WRTE`` with ``OKAY``
  and waits for the host's ``OKAY`` before its next one); payloads are cut to
  min(host max, device max); ``CLSE`` from either side.
- ``shell,v2[,raw|pty][,TERM=…]:CMD`` (when shell_v2 is advertised): shell protocol packets
  ``[u8 id][u32 LE length][data]``, id 0 stdin, 1 stdout, 2 stderr, 3 exit (one byte; 128+N
  for a signal), 4 close-stdin, 5 window size (ignored). No pty is ever allocated.
- ``shell:CMD`` and ``exec:CMD`` (v1): one raw byte stream, stderr merged into stdout (adbd
  uses a raw-mode pty there); the exit code is not transmitted. An empty command runs an
  interactive ``sh`` reading the stream.
- ``sync:`` — ``STAT`` (v1, lstat), ``STA2``/``LST2`` (v2, 72-byte reply with errno),
  ``LIST`` (``DENT``… then ``DONE``), ``SEND path,mode`` + ``DATA``… + ``DONE mtime`` →
  ``OKAY`` or ``FAIL msg`` (parent folders are created, as adbd does; a ``S_IFLNK`` mode makes a
  symlink), ``RECV path`` → ``DATA``… ``DONE`` or ``FAIL msg``, ``QUIT``.
- When the host closes a running shell stream the shell gets SIGHUP, like adbd's
  "protocol FD died, sending SIGHUP": its children survive (they may not), as on a phone, so a
  transport must kill them itself. Each shell is a session leader (adbd calls ``setsid``).

How the fake device runs commands
---------------------------------
The device's filesystem is a folder on the host, ``root``, populated from a recorded phone
profile (``tests/data/devices/*.json``: ``props``, ``files``, ``uname``, ``dumpsys``). Commands
run under the host's ``/bin/sh -c`` after one textual rewrite: an absolute path in the command
text that starts a word (not preceded by a path character) and begins with one of
:data:`DEVICE_PREFIXES` (``/data``, ``/proc``, ``/sys``, ``/system``, ``/vendor``, ``/sdcard``,
``/storage``, ``/etc``) gets ``root`` put in front; everything else (``/bin/sh``,
``/dev/null``, ``/usr/bin/...``) is the host's. Paths a program opens by itself are not
rewritten, nor is output (``pwd`` prints the host path). The sync service maps every device
path into ``root``. Pushed executables run for real on the host (a test runs aarch64 builds
under ``qemu-aarch64-static``); pushed scripts should use ``#!/bin/sh`` (Android 10+ has
``/bin -> /system/bin``), since the kernel does not see the rewrite.

``root/system/bin`` is first on the shell's PATH and holds small scripts answering from the
profile: ``getprop [NAME [DEFAULT]]``, ``dumpsys SERVICE``, ``uname``, ``getconf
_NPROCESSORS_ONLN``/``nproc`` (the phone's CPU count), ``hostname``, and ``taskset`` (the host's
util-linux taskset; a mask naming none of the host's CPUs runs the command unpinned, since the
phone has more cores than a CI host may have). Readings change during a test through
:meth:`FakeAdbd.write_file` / :meth:`FakeAdbd.write_file_later` / :meth:`FakeAdbd.set_prop`.

Use::

    with isolated_adb_server(tmp_path) as env, FakeAdbd(tmp_path / "phone") as phone:
        # env: the test's own adb server (port, HOME, keys); pass it on or monkeypatch it in
        t = AdbTransport(phone.serial, env=env)   # adb connect-s 127.0.0.1:PORT itself
        t.run("getprop ro.soc.model", timeout=20)  # -> "SM8250\n"
        phone.write_file("/sys/class/thermal/thermal_zone1/temp", "61000")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).resolve().parent.parent / "data" / "devices"
DEFAULT_PROFILE = PROFILES / "snapdragon865_phone.json"

A_VERSION = 0x01000001  # the version from which data_check is no longer sent nor checked
A_VERSION_MIN = 0x01000000
MAX_PAYLOAD = 1024 * 1024  # what adbd announces since Android 9
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024

DEFAULT_FEATURES: tuple[str, ...] = ("shell_v2", "stat_v2", "fixed_push_mkdir")
DEVICE_PREFIXES: tuple[str, ...] = (
    "/data",
    "/proc",
    "/sys",
    "/system",
    "/vendor",
    "/sdcard",
    "/storage",
    "/etc",
)


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


CNXN, AUTH, OPEN, OKAY, WRTE, CLSE, STLS = (
    _cmd(n) for n in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"WRTE", b"CLSE", b"STLS")
)
HEADER = struct.Struct("<6I")

# shell protocol (v2) packet ids
SH_STDIN, SH_STDOUT, SH_STDERR, SH_EXIT, SH_CLOSE_STDIN, SH_WINSIZE = range(6)
SH_HEADER = struct.Struct("<BI")

STAT_V1 = struct.Struct("<4sIII")
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
DENT_V1 = struct.Struct("<4sIIII")
SYNC_MSG = struct.Struct("<4sI")


class StreamClosed(Exception):
    """The host closed the stream (or the connection went away)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_adb_env(tmp: Path) -> dict[str, str]:
    """Environment for an adb server of the test's own, never a developer's on 5037.

    ``ANDROID_ADB_SERVER_PORT`` picks the server; ``HOME`` is where adb 29 keeps
    ``.android/adbkey`` (generated on first start); ``ADB_VENDOR_KEYS`` must not point at real
    keys; ``ANDROID_ADB_LOG_PATH`` keeps the server's log next to the test (read it when a
    test fails). Pass the result to :class:`AdbTransport` (``env=``) or monkeypatch it in,
    and call :func:`kill_adb_server` at teardown.
    """
    home = Path(tmp) / "adb-home"
    (home / "vendor-keys").mkdir(parents=True, exist_ok=True)
    return {
        "ANDROID_ADB_SERVER_PORT": str(free_port()),
        "HOME": str(home),
        "ADB_VENDOR_KEYS": str(home / "vendor-keys"),
        "ANDROID_ADB_LOG_PATH": str(home / "adb-server.log"),
        "TMPDIR": str(home),
    }


def kill_adb_server(env: Mapping[str, str], adb: str = "adb") -> None:
    """Stop the adb server that ``env`` names (``adb kill-server``; quiet when none runs)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [adb, "kill-server"],
            env={**os.environ, **env},
            timeout=15,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def isolated_adb_server(tmp: Path, adb: str = "adb") -> Iterator[dict[str, str]]:
    """Start an adb server of the test's own (:func:`isolated_adb_env`); killed on exit."""
    env = isolated_adb_env(tmp)
    subprocess.run(
        [adb, "start-server"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    try:
        yield env
    finally:
        kill_adb_server(env, adb)


def load_profile(profile: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(profile, Mapping):
        return json.loads(json.dumps(profile))  # a deep copy: the fake mutates its own
    path = Path(profile)
    if not path.is_absolute() and not path.exists():
        path = PROFILES / path
    return json.loads(path.read_text())


class FakeAdbd:
    """One fake phone: ``start()`` listens on ``127.0.0.1:port``; ``serial`` is what adb calls it.

    ``profile``: a profile file (name under tests/data/devices, or a path) or its dict;
    ``props``: properties to override (e.g. a distinct ``ro.serialno`` per phone);
    ``features``: the banner's feature list (drop ``shell_v2`` to get a pre-Android-7 device
    without exit codes; drop ``stat_v2`` for v1 STAT only); ``max_payload``: what the device
    announces in its CNXN.
    """

    def __init__(
        self,
        root: str | Path,
        profile: str | Path | Mapping[str, Any] = DEFAULT_PROFILE,
        *,
        props: Mapping[str, str] | None = None,
        features: Iterable[str] = DEFAULT_FEATURES,
        max_payload: int = MAX_PAYLOAD,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.root = Path(root).resolve()
        # the root goes unquoted into command text by the rewrite: keep it shell-inert
        if not re.fullmatch(r"[\w./+-]+", str(self.root)):
            raise ValueError(f"fake device root {self.root} must not need shell quoting")
        self.profile = load_profile(profile)
        self.props: dict[str, str] = {**self.profile.get("props", {}), **(props or {})}
        self.features = tuple(features)
        self.max_payload = max_payload
        self.host = host
        self.port = port
        self.services: list[str] = []  # every service the host opened, for tests to check
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._connections: set[_Connection] = set()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._prefix_re = re.compile(
            r"(?<![\w./~-])(" + "|".join(re.escape(p) for p in DEVICE_PREFIXES) + r")(?![\w.-])"
        )

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        """The adb serial after ``adb connect``: ``127.0.0.1:PORT``."""
        return f"{self.host}:{self.port}"

    def start(self) -> FakeAdbd:
        self._populate()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(16)
        sock.settimeout(0.2)  # accept() polls so stop() needs no cross-thread close
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._stopping.clear()
        self._spawn(self._accept_loop, "fake-adbd-accept")
        return self

    def stop(self) -> None:
        """Go away like an unplugged phone: listener and connections closed, commands killed."""
        self._stopping.set()
        for t in self._timers:
            t.cancel()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._connections)
            procs = list(self._procs)
        for conn in conns:
            conn.shutdown()
        for proc in procs:
            _kill_group(proc)  # the shell's whole session: background children too
        with self._lock:
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(timeout=5)

    def __enter__(self) -> FakeAdbd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the device's state, for tests -----------------------------------------------------

    def path(self, device_path: str) -> Path:
        """The host path standing for ``device_path`` on the phone."""
        rel = os.path.normpath("/" + device_path.lstrip("/")).lstrip("/")
        return self.root / rel

    def write_file(self, device_path: str, content: str | bytes, mode: int | None = None) -> None:
        """Change a reading (``/sys/...``, ``/proc/...``) or any file; atomic for readers."""
        target = self.path(device_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        tmp = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        if mode is not None:
            tmp.chmod(mode)
        os.replace(tmp, target)

    def write_file_later(self, delay_s: float, device_path: str, content: str | bytes) -> None:
        """``write_file`` after ``delay_s`` seconds (throttling mid-run); cancelled by stop()."""
        timer = threading.Timer(delay_s, self.write_file, args=(device_path, content))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def read_file(self, device_path: str) -> bytes:
        return self.path(device_path).read_bytes()

    def set_prop(self, name: str, value: str) -> None:
        self.props[name] = value
        self._write_props()

    def set_dumpsys(self, service: str, text: str) -> None:
        """What ``dumpsys SERVICE`` prints from now on (e.g. ``battery`` with a new level)."""
        self.write_file(f"/.fakeadbd/dumpsys/{service}", text)

    def banner(self) -> bytes:
        ids = "".join(
            f"{k}={self.props.get(k, '')};"
            for k in ("ro.product.name", "ro.product.model", "ro.product.device")
        )
        return f"device::{ids}features={','.join(self.features)}".encode()

    def rewrite(self, command: str) -> str:
        """The command as the host's sh runs it: device path prefixes moved under ``root``."""
        return self._prefix_re.sub(lambda m: f"{self.root}{m.group(1)}", command)

    # ---- internals -------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        return t

    def _populate(self) -> None:
        for sub in (
            "data/local/tmp",
            "sdcard",
            "system/bin",
            "system/etc",
            "vendor",
            ".fakeadbd/dumpsys",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for device_path, content in self.profile.get("files", {}).items():
            self.write_file(device_path, content)
        for service, text in self.profile.get("dumpsys", {}).items():
            self.set_dumpsys(service, text)
        self._write_props()
        self._install_tools()

    def _write_props(self) -> None:
        # one `name=value` a line; values with newlines are not supported (nor seen in props)
        lines = "".join(f"{k}={v}\n" for k, v in sorted(self.props.items()))
        self.write_file("/.fakeadbd/props", lines)

    def _install_tools(self) -> None:
        bin_dir = self.root / "system" / "bin"
        fake = self.root / ".fakeadbd"
        sh = shutil.which("sh") or "/bin/sh"
        uname = {
            "sysname": "Linux",
            "nodename": "localhost",
            "release": "",
            "version": "",
            "machine": "aarch64",
            **self.profile.get("uname", {}),
        }
        q = {k: shlex.quote(str(v)) for k, v in uname.items()}
        cpuinfo = self.root / "proc" / "cpuinfo"
        ncpu = f"grep -c '^processor' {cpuinfo} 2>/dev/null || echo 1"
        host_taskset = shutil.which("taskset")
        tools = {
            "getprop": f"""\
# answers from the recorded profile's props (tests/helpers/fake_adbd.py)
f={fake}/props
if [ $# -eq 0 ]; then
  exec awk '{{ i = index($0, "=")
    printf "[%s]: [%s]\\n", substr($0, 1, i - 1), substr($0, i + 1) }}' "$f"
fi
exec awk -v k="$1" -v d="$2" 'BEGIN {{ v = d }}
  {{ i = index($0, "="); if (substr($0, 1, i - 1) == k) v = substr($0, i + 1) }}
  END {{ print v }}' "$f"
""",
            "dumpsys": f"""\
if [ -n "$1" ] && [ -f {fake}/dumpsys/"$1" ]; then exec cat {fake}/dumpsys/"$1"; fi
echo "Can't find service: $1" >&2
exit 1
""",
            "uname": f"""\
s=0 n=0 r=0 v=0 m=0
[ $# -eq 0 ] && set -- -s
for a in "$@"; do
  case "$a" in -*) ;; *) echo "uname: unknown argument $a" >&2; exit 1 ;; esac
  f=${{a#-}}
  while [ -n "$f" ]; do
    c=${{f%"${{f#?}}"}}; f=${{f#?}}
    case "$c" in
      a) s=1 n=1 r=1 v=1 m=1 ;; s|o) s=1 ;; n) n=1 ;; r) r=1 ;; v) v=1 ;; m|p|i) m=1 ;;
      *) echo "uname: unknown option -$c" >&2; exit 1 ;;
    esac
  done
done
out=
[ $s = 1 ] && out="$out "{q["sysname"]}
[ $n = 1 ] && out="$out "{q["nodename"]}
[ $r = 1 ] && out="$out "{q["release"]}
[ $v = 1 ] && out="$out "{q["version"]}
[ $m = 1 ] && out="$out "{q["machine"]}
echo "${{out# }}"
""",
            "getconf": f"""\
case "$1" in _NPROCESSORS_ONLN|_NPROCESSORS_CONF|NPROCESSORS_ONLN) {ncpu}; exit 0 ;; esac
exec {shutil.which("getconf") or "getconf"} "$@"
""",
            "nproc": f"{ncpu}\n",
            "hostname": f"echo {q['nodename']}\n",
            "taskset": (
                f"""\
# the phone's cores (cpu7 ...) may not exist here: such a mask runs the command unpinned
t={host_taskset}
case "$1" in
  -p|-a|--pid|--all-tasks) exec "$t" "$@" ;;
  -c|--cpu-list) if "$t" -c "$2" {sh} -c : 2>/dev/null; then exec "$t" "$@"; fi; shift 2 ;;
  *) if "$t" "$1" {sh} -c : 2>/dev/null; then exec "$t" "$@"; fi; shift ;;
esac
exec "$@"
"""
                if host_taskset
                else """\
case "$1" in -c|--cpu-list) shift 2 ;; -*) exit 0 ;; *) shift ;; esac
exec "$@"
"""
            ),
        }
        for name, body in tools.items():
            p = bin_dir / name
            p.write_text(f"#!{sh}\n{body}")
            p.chmod(0o755)
        link = bin_dir / "sh"
        if not link.exists():
            link.symlink_to(sh)

    def shell_env(self) -> dict[str, str]:
        tmp = str(self.root / "data" / "local" / "tmp")
        return {
            # the host's system tools stand in for toybox; nothing from a developer's PATH
            "PATH": f"{self.root}/system/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": tmp,
            "TMPDIR": tmp,
            "ANDROID_ROOT": "/system",
            "ANDROID_DATA": "/data",
            "FAKEADBD_ROOT": str(self.root),  # for tests; a phone has no such thing
            "LANG": "C.UTF-8",
        }

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set() and listener is not None:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._connections.add(conn)
            self._spawn(conn.serve, "fake-adbd-conn")

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _popen(self, command: str, *, merge_stderr: bool) -> subprocess.Popen[bytes]:
        argv = ["/bin/sh", "-c", self.rewrite(command)] if command else ["/bin/sh"]
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=self.shell_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,  # adbd's child calls setsid()
        )
        with self._lock:
            self._procs.add(proc)
        return proc

    def _reap(self, proc: subprocess.Popen[bytes]) -> int:
        code = proc.wait()
        with self._lock:
            self._procs.discard(proc)
        return 0x80 | -code if code < 0 else code & 0xFF


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Connection:
    """One TCP connection from an adb server: the packet layer and its streams."""

    def __init__(self, device: FakeAdbd, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.version = A_VERSION
        self.max_send = 4096  # until the host's CNXN says more
        self.online = False
        self.closed = threading.Event()

    def shutdown(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        check = sum(data) & 0xFFFFFFFF if self.version < A_VERSION else 0
        header = HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF)
        with self.send_lock:
            if self.closed.is_set():
                raise StreamClosed("connection closed")
            try:
                self.sock.sendall(header + data)
            except OSError as exc:
                self.closed.set()
                raise StreamClosed(str(exc)) from exc

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def serve(self) -> None:
        try:
            while not self.closed.is_set():
                command, arg0, arg1, length, _check, magic = HEADER.unpack(self._recv_exact(24))
                if magic != command ^ 0xFFFFFFFF:
                    break  # not adb: drop the connection, as adbd does
                data = self._recv_exact(length) if length else b""
                self._handle(command, arg0, arg1, data)
        except (EOFError, OSError, StreamClosed):
            pass
        finally:
            self.shutdown()
            for stream in list(self.streams.values()):
                stream.remote_closed()
            self.device._forget(self)

    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == CNXN:
            # version: the lower of both; max payload: what both sides can take
            self.version = max(A_VERSION_MIN, min(arg0, A_VERSION))
            self.max_send = max(4096, min(arg1, self.device.max_payload))
            self.online = True
            self.send(CNXN, A_VERSION, self.device.max_payload, self.device.banner())
        elif not self.online:
            return  # before the handshake a device ignores everything else
        elif command == OPEN:
            self._open(arg0, data.rstrip(b"\0").decode(errors="replace"))
        elif command == OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.acked(arg0)
        elif command == WRTE:
            stream = self.streams.get(arg1)
            if stream is None:
                self.send(CLSE, 0, arg0)
                return
            stream.received(data)
            self.send(OKAY, stream.local_id, stream.remote_id)
        elif command == CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None:
                stream.remote_closed()
        # AUTH and STLS are never started by this device; anything else is ignored

    def _open(self, remote_id: int, service: str) -> None:
        handler = _service_handler(self.device, service)
        self.device.services.append(service)
        if handler is None:
            self.send(CLSE, 0, remote_id)
            return
        local_id = self.next_id
        self.next_id += 1
        stream = _Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        self.send(OKAY, local_id, remote_id)
        self.device._spawn(_run_service, f"fake-adbd-{service.split(':')[0]}", handler, stream)


def _run_service(handler: Callable[[_Stream], None], stream: _Stream) -> None:
    try:
        handler(stream)
    except (StreamClosed, EOFError):
        pass
    finally:
        stream.close()


class _Stream:
    """One adb stream as a service sees it: blocking reads of the host's bytes, flow-controlled
    writes (one WRTE in flight, the next after the host's OKAY)."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.inbox = bytearray()
        self.cond = threading.Condition()
        self.can_send = True
        self.host_closed = False
        self.closed = False
        self.write_lock = threading.Lock()  # keeps one shell packet's WRTEs together

    # called by the connection's reader thread
    def received(self, data: bytes) -> None:
        with self.cond:
            self.inbox += data
            self.cond.notify_all()

    def acked(self, remote_id: int) -> None:
        with self.cond:
            self.remote_id = remote_id
            self.can_send = True
            self.cond.notify_all()

    def remote_closed(self) -> None:
        with self.cond:
            self.host_closed = True
            self.cond.notify_all()

    # called by the service's thread
    def read(self, limit: int = 1 << 20) -> bytes:
        """Some bytes from the host, b"" once it closed the stream."""
        with self.cond:
            while not self.inbox and not (self.host_closed or self.closed):
                self.cond.wait()
            data = bytes(self.inbox[:limit])
            del self.inbox[:limit]
            return data

    def read_exact(self, n: int) -> bytes:
        with self.cond:
            while len(self.inbox) < n and not (self.host_closed or self.closed):
                self.cond.wait()
            if len(self.inbox) < n:
                raise EOFError
            data = bytes(self.inbox[:n])
            del self.inbox[:n]
            return data

    def write(self, data: bytes) -> None:
        with self.write_lock:
            view = memoryview(data)
            while view:
                with self.cond:
                    while not self.can_send and not self.host_closed:
                        self.cond.wait()
                    if self.host_closed:
                        raise StreamClosed("host closed the stream")
                    self.can_send = False
                chunk, view = view[: self.conn.max_send], view[self.conn.max_send :]
                self.conn.send(WRTE, self.local_id, self.remote_id, bytes(chunk))

    def close(self) -> None:
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()  # wakes a reader of the host's bytes (the stdin feeder)
        self.conn.streams.pop(self.local_id, None)
        if not self.host_closed:
            with contextlib.suppress(StreamClosed):
                self.conn.send(CLSE, self.local_id, self.remote_id)


# ---- services ---------------------------------------------------------------------------------


def _service_handler(device: FakeAdbd, service: str) -> Callable[[_Stream], None] | None:
    name, _, command = service.partition(":")
    head, *args = name.split(",")
    if head == "shell":
        v2 = "v2" in args and "shell_v2" in device.features
        return lambda s: _shell(device, s, command, v2=v2)
    if head == "exec" and not args:
        return lambda s: _shell(device, s, command, v2=False)
    if service == "sync:":
        return lambda s: _sync(device, s)
    return None


def _shell(device: FakeAdbd, stream: _Stream, command: str, *, v2: bool) -> None:
    proc = device._popen(command, merge_stderr=not v2)
    assert proc.stdin is not None and proc.stdout is not None

    def pump(pipe: Any, packet_id: int) -> None:
        # once the host is gone the output is drained and dropped, so the child never blocks
        alive = True
        while chunk := os.read(pipe.fileno(), 65536):
            if not alive:
                continue
            try:
                stream.write(SH_HEADER.pack(packet_id, len(chunk)) + chunk if v2 else chunk)
            except StreamClosed:
                alive = False
        pipe.close()

    pumps = [device._spawn(pump, "fake-adbd-stdout", proc.stdout, SH_STDOUT)]
    if v2 and proc.stderr is not None:
        pumps.append(device._spawn(pump, "fake-adbd-stderr", proc.stderr, SH_STDERR))
    device._spawn(_feed_stdin, "fake-adbd-stdin", stream, proc, v2)
    for t in pumps:
        t.join()
    code = device._reap(proc)
    if v2:
        with contextlib.suppress(StreamClosed):
            stream.write(SH_HEADER.pack(SH_EXIT, 1) + bytes([code]))


def _feed_stdin(stream: _Stream, proc: subprocess.Popen[bytes], v2: bool) -> None:
    """Host → the command's stdin; the host closing the stream hangs the shell up (SIGHUP)."""
    stdin = proc.stdin
    assert stdin is not None
    try:
        while True:
            if v2:
                try:
                    packet_id, length = SH_HEADER.unpack(stream.read_exact(SH_HEADER.size))
                    data = stream.read_exact(length) if length else b""
                except EOFError:
                    break
                if packet_id == SH_STDIN and stdin is not None:
                    _write_quietly(stdin, data)
                elif packet_id == SH_CLOSE_STDIN and stdin is not None:
                    _close_quietly(stdin)
                    stdin = None
            else:
                data = stream.read()
                if not data:
                    break
                if stdin is not None:
                    _write_quietly(stdin, data)
    finally:
        if stdin is not None:
            _close_quietly(stdin)
    if stream.host_closed and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGHUP)  # the shell only: its children live on


def _write_quietly(pipe: Any, data: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):
        pipe.write(data)
        pipe.flush()


def _close_quietly(pipe: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        pipe.close()


def _sync(device: FakeAdbd, stream: _Stream) -> None:
    while True:
        try:
            ident, length = SYNC_MSG.unpack(stream.read_exact(SYNC_MSG.size))
        except EOFError:
            return
        if ident == b"QUIT":
            return
        if length > SYNC_PATH_MAX:
            _sync_fail(stream, "path too long")
            return
        path = stream.read_exact(length).decode(errors="surrogateescape")
        if ident in (b"STAT", b"STA2", b"LST2"):
            _sync_stat(device, stream, ident, path)
        elif ident == b"LIST":
            _sync_list(device, stream, path)
        elif ident == b"SEND":
            if not _sync_send(device, stream, path):
                return
        elif ident == b"RECV":
            if not _sync_recv(device, stream, path):
                return
        else:
            _sync_fail(stream, f"unknown sync command {ident!r}")
            return


def _sync_fail(stream: _Stream, message: str) -> None:
    data = message.encode()
    stream.write(SYNC_MSG.pack(b"FAIL", len(data)) + data)


def _sync_stat(device: FakeAdbd, stream: _Stream, ident: bytes, path: str) -> None:
    host_path = device.path(path)
    try:
        st = os.stat(host_path) if ident == b"STA2" else os.lstat(host_path)
    except OSError as exc:
        if ident == b"STAT":
            stream.write(STAT_V1.pack(b"STAT", 0, 0, 0))  # v1: all zero = does not exist
        else:
            stream.write(STAT_V2.pack(ident, exc.errno or 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        return
    if ident == b"STAT":
        stream.write(STAT_V1.pack(b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
    else:
        stream.write(
            STAT_V2.pack(
                ident,
                0,
                st.st_dev,
                st.st_ino,
                st.st_mode,
                st.st_nlink,
                st.st_uid,
                st.st_gid,
                st.st_size,
                int(st.st_atime),
                int(st.st_mtime),
                int(st.st_ctime),
            )
        )


def _sync_list(device: FakeAdbd, stream: _Stream, path: str) -> None:
    host_dir = device.path(path)
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(host_dir), key=lambda e: e.name):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            name = entry.name.encode(errors="surrogateescape")
            stream.write(
                DENT_V1.pack(
                    b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(name)
                )
                + name
            )
    stream.write(DENT_V1.pack(b"DONE", 0, 0, 0, 0))


def _sync_send(device: FakeAdbd, stream: _Stream, spec: str) -> bool:
    path, comma, mode_text = spec.rpartition(",")
    if not comma:
        path, mode_text = spec, "33188"  # 0o100644, as adbd assumes
    try:
        mode = int(mode_text)
    except ValueError:
        _sync_fail(stream, f"bad mode in {spec!r}")
        return False
    target = device.path(path)
    data = bytearray()
    # the host sends DATA… DONE without waiting; read it all before answering
    while True:
        ident, length = SYNC_MSG.unpack(stream.read_exact(SYNC_MSG.size))
        if ident == b"DATA":
            if length > SYNC_DATA_MAX:
                _sync_fail(stream, "oversize data message")
                return False
            data += stream.read_exact(length)
        elif ident == b"DONE":
            mtime = length
            break
        else:
            _sync_fail(stream, f"invalid data message {ident!r}")
            return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # adbd mkdirs the parents
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()
        if stat.S_ISLNK(mode):
            os.symlink(data.decode(errors="surrogateescape"), target)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(target, stat.S_IMODE(mode))
            os.utime(target, (mtime, mtime))
    except OSError as exc:
        _sync_fail(stream, f"{path}: {exc.strerror or exc}")
        return False
    stream.write(SYNC_MSG.pack(b"OKAY", 0))
    return True


def _sync_recv(device: FakeAdbd, stream: _Stream, path: str) -> bool:
    try:
        f = open(device.path(path), "rb")  # noqa: SIM115 - closed below, after the stream
    except OSError as exc:
        _sync_fail(stream, exc.strerror or str(exc))
        return False
    with f:
        while chunk := f.read(SYNC_DATA_MAX):
            stream.write(SYNC_MSG.pack(b"DATA", len(chunk)) + chunk)
    stream.write(SYNC_MSG.pack(b"DONE", 0))
    return True
