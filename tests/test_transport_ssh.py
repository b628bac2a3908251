"""SshTransport against a real OpenSSH server on loopback (the "device" is this machine)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.procs import pid_alive
from helpers.sshd import SshServer, make_keypair, start_sshd

from agent.transports.base import Transport, TransportError
from agent.transports.ssh import SshTransport


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def ssh(sshd: SshServer, tmp_path: Path) -> Iterator[SshTransport]:
    t = SshTransport(**sshd.transport_kwargs(workdir=str(tmp_path / "work")))
    yield t
    t.close()


def wait_dead(pid: int, within: float = 3.0) -> bool:
    end = time.monotonic() + within
    while pid_alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def wait_file(path: Path, within: float = 5.0) -> str:
    end = time.monotonic() + within
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < end, f"{path} never written"
        time.sleep(0.02)
    return path.read_text()


def test_address_and_url(sshd: SshServer) -> None:
    t = SshTransport.from_url("ssh://pi@board.lan:2222/opt/bench", key_file="/k")
    assert (t.host, t.port, t.user, t.workdir) == ("board.lan", 2222, "pi", "/opt/bench")
    assert t.address == "ssh://pi@board.lan:2222" and t.name == "ssh"
    assert SshTransport("b", user="u").workdir == "/tmp/bnnbench-u"
    assert SshTransport.from_url("ssh://[::1]", user="u").address == "ssh://u@[::1]:22"
    assert isinstance(SshTransport(**sshd.transport_kwargs()), Transport)
    with pytest.raises(ValueError):
        SshTransport.from_url("http://x")
    with pytest.raises(ValueError):
        SshTransport("x", host_key_policy="yolo")


def test_run_stdout_stderr_exit_code(ssh: SshTransport) -> None:
    r = ssh.run("echo out; echo 'err  line' >&2; exit 3", timeout=10)
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out, r.ok) == (
        "out\n",
        "err  line\n",
        3,
        False,
        False,
    )
    r = ssh.run("printf '%s' \"$0\" | tr -d '\\n'; echo ' ok'", timeout=10)
    assert r.ok and r.stdout.endswith(" ok\n")
    # a signal death reports 128+N, as a local shell would
    assert ssh.run("kill -9 $$", timeout=10).exit_code == 137


def test_large_output_on_both_streams(ssh: SshTransport) -> None:
    # stderr first: a reader that waited for stdout's EOF would deadlock on a full window
    r = ssh.run(
        "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o",
        timeout=30,
    )
    assert r.ok
    assert len(r.stdout) == 3_000_000 and set(r.stdout) == {"o"}
    assert len(r.stderr) == 3_000_000 and set(r.stderr) == {"e"}


def test_timeout_kills_command_and_children(ssh: SshTransport, tmp_path: Path) -> None:
    # a background child, a grandchild that left the process group (setsid), the shell itself
    cmd = (
        f"echo $$ > {tmp_path}/sh.pid; sleep 300 & echo $! > {tmp_path}/child.pid; "
        f"setsid sh -c 'echo $$ > {tmp_path}/escaped.pid; exec sleep 300' & "
        "echo started; sleep 300"
    )
    start = time.monotonic()
    r = ssh.run(cmd, timeout=1.5)
    assert r.timed_out and r.exit_code == -1 and not r.ok
    assert r.stdout == "started\n"
    assert time.monotonic() - start < 8
    for name in ("sh", "child", "escaped"):
        pid = int((tmp_path / f"{name}.pid").read_text())
        assert wait_dead(pid), f"{name} ({pid}) survived the timeout"
    assert ssh.run("echo still usable", timeout=10).stdout == "still usable\n"


def test_push_pull_roundtrip(ssh: SshTransport, tmp_path: Path) -> None:
    workdir = Path(ssh.ensure_workdir())
    assert workdir.is_dir()
    data = os.urandom(700_000)
    src = tmp_path / "cli"
    src.write_bytes(data)
    remote = f"{workdir}/bnnbench-native"
    (workdir / "bnnbench-native").write_bytes(b"old version")  # replaced atomically
    ssh.push(src, remote, mode=0o750)
    dst = workdir / "bnnbench-native"
    assert dst.read_bytes() == data
    assert stat.S_IMODE(dst.stat().st_mode) == 0o750
    assert sorted(p.name for p in workdir.iterdir()) == ["bnnbench-native"]  # no .part
    assert ssh.run(f"test -x {remote}", timeout=10).ok

    back = tmp_path / "back.bin"
    ssh.pull(remote, back)
    assert back.read_bytes() == data
    assert not (tmp_path / "back.bin.part").exists()


def test_missing_files_are_os_errors(ssh: SshTransport, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ssh://"):
        ssh.pull(f"{tmp_path}/nope", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileNotFoundError):
        ssh.push(tmp_path / "f", f"{tmp_path}/no/such/dir/f")
    with pytest.raises(FileNotFoundError):
        ssh.push(tmp_path / "missing-local", f"{tmp_path}/g")


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_changed_host_key_refused(sshd: SshServer, tmp_path: Path, policy: str) -> None:
    other = make_keypair(tmp_path / "impostor").split()
    known = tmp_path / "known_hosts"
    line = f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n"
    known.write_text(line)
    t = SshTransport(**sshd.transport_kwargs(known_hosts=known, host_key_policy=policy))
    with pytest.raises(TransportError) as e:
        t.run(f"touch {tmp_path}/ran", timeout=10)
    msg = str(e.value)
    assert f"[127.0.0.1]:{sshd.port}" in msg and "does not match known_hosts" in msg
    assert not (tmp_path / "ran").exists()
    assert known.read_text() == line  # never overwritten


def test_unknown_host_refused_when_strict(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    # a file paramiko's own loader chokes on: markers, comments, junk, another host
    known.write_text(
        f"# comment\n@cert-authority * {sshd.host_key_line}\ngarbage\n"
        f"other.host {sshd.host_key_line}\n"
    )
    t = SshTransport(**sshd.transport_kwargs(known_hosts=known))
    with pytest.raises(TransportError, match="not in known_hosts"):
        t.run(f"touch {tmp_path}/ran", timeout=10)
    assert not (tmp_path / "ran").exists()
    t = SshTransport(**sshd.transport_kwargs(known_hosts=tmp_path / "absent"))
    with pytest.raises(TransportError, match="not in known_hosts"):
        t.run("true", timeout=10)


def test_unknown_host_accepted_and_recorded(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "new" / "known_hosts"
    known.parent.mkdir()
    known.write_text("other.host ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOrrAeAsXTFO6YkTr1Yd2lrb")
    t = SshTransport(**sshd.transport_kwargs(known_hosts=known, host_key_policy="accept-new"))
    assert t.run("echo hi", timeout=10).stdout == "hi\n"
    t.close()
    lines = known.read_text().splitlines()
    assert lines[0].startswith("other.host ")  # kept, and the missing newline was added
    assert lines[1] == f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}"
    # now known: strict accepts it
    strict = SshTransport(**sshd.transport_kwargs(known_hosts=known))
    assert strict.run("true", timeout=10).ok
    strict.close()


def test_wrong_key_refused(sshd: SshServer, tmp_path: Path) -> None:
    make_keypair(tmp_path / "stranger")
    t = SshTransport(**sshd.transport_kwargs(key_file=tmp_path / "stranger"))
    with pytest.raises(TransportError, match="authentication failed for user"):
        t.run("true", timeout=10)
    with pytest.raises(TransportError, match="key file .* not found"):
        SshTransport(**sshd.transport_kwargs(key_file=tmp_path / "nope")).run("true", 10)


def test_wrong_password_refused(sshd: SshServer) -> None:
    # this sshd takes keys only: the password is refused with the allowed methods named
    t = SshTransport(**sshd.transport_kwargs(key_file=None, password="wrong"))
    with pytest.raises(TransportError, match=r"authentication failed.*allows: publickey"):
        t.run("true", timeout=10)


def test_connection_refused(sshd: SshServer) -> None:
    from helpers.sshd import free_port

    port = free_port()
    t = SshTransport(**sshd.transport_kwargs(port=port))
    with pytest.raises(TransportError, match=f"ssh://.*:{port}: cannot connect"):
        t.run("true", timeout=10)


def test_drop_mid_run_then_reconnect(sshd: SshServer, ssh: SshTransport, tmp_path: Path) -> None:
    assert ssh.run("true", timeout=10).ok  # connected
    pid_file = tmp_path / "sleep.pid"
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(ssh.run, f"echo $$ > {pid_file}; exec sleep 30", 60)
        orphan = int(wait_file(pid_file))
        start = time.monotonic()
        assert sshd.kill_sessions()
        with pytest.raises(TransportError, match="connection lost"):
            fut.result(timeout=10)
        assert time.monotonic() - start < 5
    assert pid_alive(orphan)  # a dead link kills nothing on the device by itself...
    r = ssh.run("echo back", timeout=10)  # same object: reconnects transparently
    assert r.ok and r.stdout == "back\n"
    assert wait_dead(orphan)  # ...the reconnect cleans up what the lost run left running


def test_reconnect_after_close_and_stale_connection(sshd: SshServer, ssh: SshTransport) -> None:
    assert ssh.run("true", timeout=10).ok
    ssh.close()
    assert ssh.run("echo again", timeout=10).stdout == "again\n"
    # the connection died between calls: the next call just reconnects
    sshd.kill_sessions()
    time.sleep(0.2)
    assert ssh.run("echo fresh", timeout=10).stdout == "fresh\n"
