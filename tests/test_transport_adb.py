"""AdbTransport against the real adb client and server, talking to fake phones over TCP.

Each fake phone (tests/helpers/fake_adbd.py) speaks adbd's side of the wire protocol; the adb
server is this module's own (its port, HOME and keys in a temp dir), killed at the end, so a
developer's server on 5037 is never touched.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from helpers.fake_adbd import FakeAdbd, isolated_adb_server
from helpers.procs import pid_alive

from agent.transports.adb import AdbTransport
from agent.transports.base import Transport, TransportError

ADB = shutil.which("adb")  # the real client (Debian package adb, installed by make test)

CPU7 = "/sys/devices/system/cpu/cpu7/cpufreq"


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    assert ADB is not None, "the adb client is not installed: make system-deps installs it"
    with isolated_adb_server(tmp_path_factory.mktemp("adb"), ADB) as env:
        yield env


@pytest.fixture
def adb_env(adb_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # in the process environment too: a transport made without env= (from_url) inherits it
    for key, value in adb_server.items():
        monkeypatch.setenv(key, value)
    return adb_server


def _adb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    assert ADB is not None
    return subprocess.run(
        [ADB, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )


@pytest.fixture
def phone(tmp_path: Path, adb_env: dict[str, str]) -> Iterator[FakeAdbd]:
    with FakeAdbd(tmp_path / "phone") as fake:
        yield fake
    _adb(adb_env, "disconnect", fake.serial)


@pytest.fixture
def transport(phone: FakeAdbd, adb_env: dict[str, str]) -> AdbTransport:
    return AdbTransport(phone.serial, env=adb_env)


def test_reads_the_phone_profile(phone: FakeAdbd, adb_env: dict[str, str]) -> None:
    t = AdbTransport.from_url(f"adb://{phone.serial}")  # env inherited from the process
    assert isinstance(t, Transport)
    assert (t.name, t.address, t.workdir) == (
        "adb",
        f"adb://{phone.serial}",
        "/data/local/tmp/bnnbench",
    )
    assert t.connect_first  # HOST:PORT is adb connect-ed first
    res = t.run("getprop ro.soc.model", timeout=20)
    assert res.ok and res.stdout == "SM8250\n", res.describe()
    assert t.run(f"cat {CPU7}/cpuinfo_max_freq", timeout=20).stdout.strip() == "2841600"
    assert "shell_v2" in t.features()
    res = t.run(
        "getprop | grep soc; uname -m; nproc; cat /sys/devices/system/cpu/cpu0/cpufreq/"
        "related_cpus; dumpsys battery | grep level; taskset 80 echo pinned",
        timeout=20,
    )
    assert res.stdout.splitlines() == [
        "[ro.soc.manufacturer]: [QTI]",
        "[ro.soc.model]: [SM8250]",
        "aarch64",
        "8",
        "0 1 2 3",
        "  level: 87",
        "pinned",
    ], res.describe()
    parts = t.run("grep 'CPU part' /proc/cpuinfo | awk '{print $4}'", timeout=20).stdout.split()
    assert parts == ["0xd05"] * 4 + ["0xd0d"] * 4
    assert "model:SM8250_Reference_Phone" in _adb(adb_env, "devices", "-l").stdout
    assert phone.services[0].startswith("shell,v2,")  # what adb 29 opens on a shell_v2 phone


def test_exit_code_and_separate_stderr(transport: AdbTransport) -> None:
    res = transport.run("echo out; echo err >&2; exit 3", timeout=20)
    assert (res.exit_code, res.stdout, res.stderr, res.timed_out) == (3, "out\n", "err\n", False)
    # adb's own failures exit 1 and say "not found" too: a command that ran is not one of them
    res = transport.run("no-such-tool --version", timeout=20)
    assert res.exit_code == 127 and "not found" in res.stderr
    assert transport.run("false", timeout=20).exit_code == 1
    # a signal is reported as 128 + N, like adbd
    assert transport.run("kill -TERM $$", timeout=20).exit_code == 128 + 15
    res = transport.run("printf 'a\\nb'", timeout=20)
    assert res.stdout == "a\nb"


def test_large_output_is_flow_controlled(transport: AdbTransport) -> None:
    res = transport.run("head -c 3000000 /dev/zero | tr '\\000' a", timeout=30)
    assert res.ok and res.stdout == "a" * 3_000_000


def test_device_without_shell_v2(tmp_path: Path, adb_env: dict[str, str]) -> None:
    # a pre-Android-7 device: `shell:` v1, stderr merged, exit code only via the marker
    with FakeAdbd(tmp_path / "old", features=("fixed_push_mkdir",)) as old:
        t = AdbTransport(old.serial, env=adb_env)
        assert "shell_v2" not in t.features()
        res = t.run("echo out; echo err >&2; exit 5", timeout=20)
        assert (res.exit_code, res.stdout, res.stderr) == (5, "out\nerr\n", "")
        res = t.run("printf 'no newline'", timeout=20)
        assert (res.exit_code, res.stdout) == (0, "no newline")
        assert t.run("getprop ro.soc.model", timeout=20).stdout == "SM8250\n"
        src = tmp_path / "f.txt"
        src.write_text("v1 sync\n")
        t.push(src, "/data/local/tmp/f.txt")  # STAT v1 instead of STA2
        assert old.read_file("/data/local/tmp/f.txt") == b"v1 sync\n"
        assert old.services[-1].startswith("shell:")
        res = t.run("sleep 30", timeout=1.0)
        assert res.timed_out
    _adb(adb_env, "disconnect", old.serial)


def test_push_pull_and_run_a_script(
    transport: AdbTransport, phone: FakeAdbd, tmp_path: Path
) -> None:
    transport.run(f"mkdir -p {transport.workdir}", timeout=20)
    script = tmp_path / "hello.sh"
    script.write_bytes(b'#!/bin/sh\necho "hello $1 from $(getprop ro.product.model)"\n')
    remote = f"{transport.workdir}/hello.sh"
    transport.push(script, remote, mode=0o755)
    on_phone = phone.path(remote)
    assert on_phone.read_bytes() == script.read_bytes()
    assert stat.S_IMODE(on_phone.stat().st_mode) == 0o755
    assert not phone.path(remote + ".part").exists()
    res = transport.run(f"cd {transport.workdir} && ./hello.sh bnn", timeout=20)
    assert res.stdout == "hello bnn from SM8250 Reference Phone\n", res.describe()
    back = tmp_path / "back.sh"
    transport.pull(remote, back)
    assert back.read_bytes() == script.read_bytes()
    assert not (tmp_path / "back.sh.part").exists()
    with pytest.raises(FileNotFoundError):
        transport.pull("/data/local/tmp/no-such-file", tmp_path / "x")


def test_push_pull_3mb(transport: AdbTransport, phone: FakeAdbd, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)  # many 64 KiB DATA chunks, a ragged last one
    src = tmp_path / "model.bnn"
    src.write_bytes(data)
    transport.push(src, "/data/local/tmp/model.bnn", mode=0o600)
    assert phone.read_file("/data/local/tmp/model.bnn") == data
    assert stat.S_IMODE(phone.path("/data/local/tmp/model.bnn").stat().st_mode) == 0o600
    dst = tmp_path / "pulled.bnn"
    transport.pull("/data/local/tmp/model.bnn", dst)
    assert dst.read_bytes() == data
    assert "sync:" in phone.services


def test_timeout_kills_the_remote_process_tree(transport: AdbTransport, phone: FakeAdbd) -> None:
    start = time.monotonic()
    res = transport.run(
        "echo started; sleep 30 & echo $! > /data/local/tmp/sleeper.pid; wait", timeout=2.0
    )
    assert res.timed_out and res.exit_code == -1 and not res.ok
    assert res.stdout == "started\n"  # the pid marker line is stripped
    assert time.monotonic() - start < 10
    sleeper = int(phone.read_file("/data/local/tmp/sleeper.pid"))
    # the fake runs commands on this host: the background child must be gone, not orphaned
    wait_for(lambda: not pid_alive(sleeper), timeout=5, what="the sleeper to die")
    assert transport.run("echo still usable", timeout=20).stdout == "still usable\n"


def test_readings_change_during_a_test(transport: AdbTransport, phone: FakeAdbd) -> None:
    phone.write_file(f"{CPU7}/scaling_cur_freq", "1094400\n")
    assert transport.run(f"cat {CPU7}/scaling_cur_freq", timeout=20).stdout == "1094400\n"
    zone = "/sys/class/thermal/thermal_zone5/temp"
    assert transport.run(f"cat {zone}", timeout=20).stdout == "38400\n"
    phone.write_file_later(0.3, zone, "61000\n")
    wait_for(
        lambda: transport.run(f"cat {zone}", timeout=20).stdout == "61000\n",
        timeout=5,
        what="the zone to read 61000",
    )
    phone.set_prop("ro.soc.model", "SM8250-AB")
    assert transport.run("getprop ro.soc.model", timeout=20).stdout == "SM8250-AB\n"


def test_pushed_aarch64_binary_runs_under_qemu(
    transport: AdbTransport, phone: FakeAdbd, tmp_path: Path
) -> None:
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64-static")
    assert cc and qemu, "needs aarch64-linux-gnu-gcc and qemu-aarch64-static (make system-deps)"
    src = tmp_path / "hello.c"
    src.write_text(
        "#include <stdio.h>\nint main(int c, char **v) "
        '{ printf("hello %s\\n", c > 1 ? v[1] : "?"); return 7; }\n'
    )
    subprocess.run(
        [cc, "-static", "-O1", str(src), "-o", str(tmp_path / "hello")], check=True, timeout=60
    )
    transport.push(tmp_path / "hello", "/data/local/tmp/bnnbench/bin/hello", mode=0o755)
    res = transport.run("qemu-aarch64-static /data/local/tmp/bnnbench/bin/hello phone", timeout=30)
    assert (res.exit_code, res.stdout) == (7, "hello phone\n"), res.describe()


def test_phone_back_on_the_same_port_reconnects(
    transport: AdbTransport, phone: FakeAdbd, tmp_path: Path
) -> None:
    assert transport.run("true", timeout=20).ok
    phone.stop()  # adbd restarted: adb keeps a stale offline entry ("already connected")
    with FakeAdbd(phone.root, port=phone.port):
        res = transport.run("getprop ro.soc.model", timeout=20)
        assert res.stdout == "SM8250\n", res.describe()


def test_command_rewrite() -> None:
    fake = FakeAdbd("/tmp/phone-root")
    assert fake.rewrite("cat /proc/cpuinfo 2>/dev/null") == (
        "cat /tmp/phone-root/proc/cpuinfo 2>/dev/null"
    )
    assert fake.rewrite("x --out=/data/local/tmp/o /system/bin/sh '/sys/a' /usr/bin/sys/") == (
        "x --out=/tmp/phone-root/data/local/tmp/o /tmp/phone-root/system/bin/sh "
        "'/tmp/phone-root/sys/a' /usr/bin/sys/"
    )
    assert fake.rewrite("ls /sys /systemd /data-x") == "ls /tmp/phone-root/sys /systemd /data-x"


def test_two_phones_are_two_serials(tmp_path: Path, adb_env: dict[str, str]) -> None:
    with (
        FakeAdbd(tmp_path / "a", props={"ro.serialno": "PHONE-A"}) as a,
        FakeAdbd(tmp_path / "b", props={"ro.serialno": "PHONE-B"}) as b,
    ):
        ta, tb = AdbTransport(a.serial, env=adb_env), AdbTransport(b.serial, env=adb_env)
        assert ta.serial != tb.serial
        assert ta.run("getprop ro.serialno", timeout=20).stdout == "PHONE-A\n"
        assert tb.run("getprop ro.serialno", timeout=20).stdout == "PHONE-B\n"
        listed = _adb(adb_env, "devices").stdout
        assert f"{a.serial}\tdevice" in listed and f"{b.serial}\tdevice" in listed
    for fake in (a, b):
        _adb(adb_env, "disconnect", fake.serial)


def test_gone_device_raises_transport_error(
    transport: AdbTransport, phone: FakeAdbd, tmp_path: Path, adb_env: dict[str, str]
) -> None:
    assert transport.run("true", timeout=20).ok
    # unplugged mid-command: adb 29 itself exits 0 then; the missing status marker tells
    threading.Timer(0.5, phone.stop).start()
    with pytest.raises(TransportError, match="without its exit status"):
        transport.run("echo a; sleep 5; echo b", timeout=20)
    with pytest.raises(TransportError, match="offline|refused|reset|not found"):
        transport.run("true", timeout=20)
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(TransportError):
        transport.push(src, "/data/local/tmp/f")
    with pytest.raises(TransportError, match="not found"):
        AdbTransport("NO-SUCH-SERIAL", env=adb_env).run("true", timeout=20)
