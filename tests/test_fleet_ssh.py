"""A board over ssh, end to end: a real OpenSSH server on loopback (generated host and user
keys), ``bnnbench devices add`` probing it, a host agent (``bnnbench agent --devices``)
pushing the static aarch64 CLI and a zoo model, running them through ``qemu-aarch64-static``
as the device's exec wrapper, and the coordinator storing the result flagged as emulated.

The "board" is this machine seen through sshd; what makes it an aarch64 board is the
wrapper, which is also why its numbers never enter a table.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import EMULATOR
from helpers.agents import ctx_of, run_cli, wait_jobs, wait_until
from helpers.sshd import SshServer, start_sshd

from agent.fleet import load_devices

pytestmark = pytest.mark.cross


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def _add(sshd: SshServer, devices: Path, workdir: Path, *extra: str) -> Any:
    login = sshd.cli_options()
    board = ["--exec-wrapper", EMULATOR, "--workdir", str(workdir), *extra]
    return run_cli("devices", "add", sshd.url, "--devices", str(devices), *login, *board)


def test_devices_add_probes_the_board_and_refuses_a_wrong_host_key(
    sshd: SshServer, tmp_path: Path
) -> None:
    devices = tmp_path / "devices.toml"
    # a known_hosts naming another key for this host: refused before anything runs
    wrong = tmp_path / "known_hosts_wrong"
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {other.with_suffix('.pub').read_text()}")
    login = sshd.cli_options(known_hosts=wrong)
    out = run_cli("devices", "add", sshd.url, "--devices", str(devices), *login)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "host key" in out.stderr.lower() and "known_hosts" in out.stderr, out.stderr
    assert not devices.exists()

    out = _add(sshd, devices, tmp_path / "board", "--name", "pi-emu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pi-emu (arm64-v8a" in out.stdout and "emulated:" in out.stdout, out.stdout
    [spec] = load_devices(devices)
    assert spec.url == sshd.url and spec.exec_wrapper == EMULATOR and spec.name == "pi-emu"
    again = _add(sshd, devices, tmp_path / "board")
    assert again.returncode == 2 and "already in" in again.stderr


def test_ssh_board_runs_a_zoo_model_and_a_dropped_connection_is_retried(
    sshd: SshServer,
    arm_clis: Path,
    coordinator_factory: Any,
    tmp_path: Path,
    agents: Any,
) -> None:
    from converters.zoo import write_zoo

    coord = coordinator_factory(lease_seconds=30)
    client = coord.client
    devices = tmp_path / "devices.toml"
    workdir = tmp_path / "board"
    assert _add(sshd, devices, workdir, "--name", "pi-emu").returncode == 0
    host = agents(coord, "host", "--devices", str(devices))
    ctx = ctx_of(coord, host)

    dev = wait_until(
        lambda: next(iter(client.devices()), None), "the ssh device to register", context=ctx
    )
    assert dev.transport == "ssh" and dev.emulated and dev.label == "pi-emu"
    assert dev.attributes["abi"] == "arm64-v8a" and dev.attributes["exec_wrapper"] == EMULATOR
    assert dev.attributes["identity_source"] == "machine-id"

    [bnn] = [e for e in write_zoo(tmp_path / "zoo", archs=("vggsmall",), algorithms=("bnn",))]
    model = client.upload_model(bnn.path, arch="VGG-Small", algorithm="bnn")
    jobs = client.create_jobs(
        model.id, "native", [1, 2], devices=["transport=ssh"], warmup=1, runs=3
    )
    assert {j.device_id for j in jobs} == {dev.id}
    final = wait_jobs(client, [j.id for j in jobs], ctx)
    assert [j.status for j in final] == ["done", "done"], [j.error for j in final]
    for job in final:
        [res] = client.results(job_id=job.id)
        assert res.emulated and res.device_id == dev.id and len(res.samples_ms) >= 3
        assert "aarch64 static" in res.runtime_version
        runner = res.env["runner"]
        assert runner["kernel_isa"] == "neon" and runner["exec_wrapper"] == EMULATOR
        assert res.env["transport"] == "ssh" and res.env["device"]["emulated"] is True
        assert "readings_before" in res.env and "readings_after" in res.env
    # the CLI and the model were pushed once each into the device's sha256-keyed cache
    assert len(list((workdir / "bin").iterdir())) == 1
    assert len(list((workdir / "artifacts").iterdir())) == 1
    # emulated numbers prove correctness only: no row in the table, no OM cell
    assert client.table()["rows"] == []

    # a job long enough to be cut: the ssh connection drops mid-run, the job is reported
    # as a retryable failure and the next attempt on a fresh connection completes it
    [job] = client.create_jobs(model.id, "native", [1], devices=[str(dev.id)], warmup=0, runs=60)
    wait_until(lambda: _cli_running(workdir), "the CLI to run on the board", context=ctx)
    killed = sshd.kill_sessions()
    assert killed
    [done] = wait_jobs(client, [job.id], ctx)
    assert done.status == "done", done.error
    assert done.attempts == 1
    [(history,)] = coord.query("SELECT history FROM jobs WHERE id = ?", job.id)
    history = json.loads(history)
    events = [e["event"] for e in history]
    assert "failure reported" in events and events[-1] == "done", events
    assert any("unreachable" in (e.get("detail") or "") for e in history), history
    [res] = client.results(job_id=job.id)
    assert len(res.samples_ms) == 60


def _cli_running(workdir: Path) -> bool:
    out = subprocess.run(
        ["pgrep", "-f", f"{workdir}/bin/bnnbench-native"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode == 0:
        time.sleep(0.5)  # let it get into its timed runs
        return True
    return False
