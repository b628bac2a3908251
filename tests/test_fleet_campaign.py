"""One host agent, three devices, one queue: this machine (local), a board over a real
OpenSSH server and a phone over the real ``adb`` client, all through the same job path.

The phone is a protocol-faithful fake adbd (``helpers.fake_adbd``) answering getprop,
``/proc`` and ``/sys`` from a recorded Snapdragon-865-like profile (1+3+4 clusters); the
board is this machine through sshd. Both run the static aarch64 CLI under
``qemu-aarch64-static`` (their exec wrapper), so they are emulated: flagged in every result
and kept out of tables and OM, while the local device's numbers make the table.

A second test shows the throttling rule on a non-emulated phone (an x86_64 Android device,
like the Android emulator's images): a frequency drop seen between the readings before and
after a run makes the result invalid, and the job is measured again with more runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import EMULATOR, make_tiny_onnx
from helpers.agents import ctx_of, run_cli, wait_jobs, wait_until
from helpers.fake_adbd import FakeAdbd, isolated_adb_server
from helpers.sshd import start_sshd

pytestmark = [pytest.mark.cross, pytest.mark.fleet]

REPO = Path(__file__).resolve().parents[1]


def _devices_add(devices: Path, url: str, *opts: str, env: dict[str, str]) -> None:
    out = run_cli("devices", "add", url, "--devices", str(devices), *opts, env=env)
    assert out.returncode == 0, out.stdout + out.stderr


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BNNBENCH_")}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def test_campaign_over_local_ssh_and_adb_devices(
    arm_clis: Path, coordinator_factory: Any, agents: Any, tmp_path: Path
) -> None:
    sshd = start_sshd(tmp_path / "sshd")
    with isolated_adb_server(tmp_path / "adb") as adb_env, FakeAdbd(tmp_path / "phone") as phone:
        env = _env(adb_env)
        devices = tmp_path / "devices.toml"
        _devices_add(
            devices, "local://", "--name", "host", "--workdir", str(tmp_path / "local-dev"), env=env
        )
        on_board = ["--exec-wrapper", EMULATOR, "--workdir", str(tmp_path / "board")]
        _devices_add(devices, sshd.url, *sshd.cli_options(), *on_board, env=env)
        _devices_add(devices, f"adb://{phone.serial}", "--exec-wrapper", EMULATOR, env=env)

        # three devices share this machine's two cores: noise is expected and not the subject
        coord = coordinator_factory(max_rel_ci=1e9)
        client = coord.client
        host = agents(coord, "host", "--devices", str(devices), env=adb_env)
        ctx = ctx_of(coord, host)
        devs = wait_until(
            lambda: d if len(d := client.devices()) == 3 else None,
            "three devices to register",
            context=ctx,
        )
        by_transport = {d.transport: d for d in devs}
        assert set(by_transport) == {"local", "ssh", "adb"}
        local, board, pho = by_transport["local"], by_transport["ssh"], by_transport["adb"]
        assert not local.emulated and board.emulated and pho.emulated
        assert local.label == "host"
        # the phone as probed through adb: SoC, ABI, big.LITTLE clusters, identity
        a = pho.attributes
        assert pho.label == "SM8250" and a["abi"] == "arm64-v8a"
        assert a["identity"] == "android:BNNB865A0001"
        assert [c["cpus"] for c in a["clusters"]] == [[7], [4, 5, 6], [0, 1, 2, 3]]
        assert [c["core"] for c in a["clusters"]] == ["Cortex-A77"] * 2 + ["Cortex-A55"]
        assert a["governor"] == "schedutil" and pho.cores == 8
        # one process, three devices: the host's and the board's identity differ only by
        # what runs there (x86_64 natively vs aarch64 under qemu), never by hostname
        assert local.fingerprint != board.fingerprint
        assert local.attributes["identity"] == board.attributes["identity"]

        # `bnnbench devices list` shows the same fleet
        token = ["--token", coord.admin_token]
        listed = run_cli("devices", "list", "--coordinator", coord.url, *token, "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [d["fingerprint"] for d in json.loads(listed.stdout)] == [
            d.fingerprint for d in devs
        ]

        # every matching device gets its own jobs; threads are checked against its cores
        fp32 = client.upload_model(make_tiny_onnx(tmp_path / "t_fp32.onnx", "fp32"))
        bnn = client.upload_model(make_tiny_onnx(tmp_path / "t_bnn.onnx", "bnn"))
        with pytest.raises(Exception, match="cores"):
            client.create_jobs(bnn.id, "native", [16], devices=["all"])
        jobs = []
        for m in (fp32, bnn):
            jobs += client.create_jobs(m.id, "native", [1, 2], devices=["all"], warmup=2, runs=5)
        assert len(jobs) == 12
        assert {j.device_id for j in jobs} == {local.id, board.id, pho.id}
        final = wait_jobs(client, [j.id for j in jobs], ctx)
        assert all(j.status == "done" for j in final), [j.error for j in final]

        results = {j.id: client.results(job_id=j.id) for j in final}
        for j in final:
            res = results[j.id][-1]
            assert res.device_id == j.device_id
            assert res.emulated == (j.device_id != local.id)
        phone_res = [results[j.id][-1] for j in final if j.device_id == pho.id]
        for r in phone_res:
            assert r.env["transport"] == "adb" and r.env["runner"]["kernel_isa"] == "neon"
            # pinned to the fastest cores: the prime core, then the big cluster
            assert r.env["affinity_cpus"] == ([7] if r.threads == 1 else [4, 5, 6, 7])
            assert r.env["readings_before"]["battery"]["level"] >= 0
            assert "cpu7" in r.env["readings_after"]["cur_freq_khz"]
        # the table holds the local device only; emulated rows never enter it or OM
        table = client.table()
        assert {r["device"] for r in table["rows"]} == {"host"}
        assert {c["device_id"] for c in table["cells"]} == {local.id}
        [om] = table["om"]
        assert om["speedup_cells"] == 2

        # the dashboard shows each device with its probed attributes and the verdicts
        with httpx.Client(base_url=coord.url, timeout=30) as http:
            page = http.get("/", headers={"Authorization": f"Bearer {coord.admin_token}"})
        assert page.status_code == 200
        html = page.text
        for text in (
            "SM8250",
            "arm64-v8a",
            "Cortex-A77",
            "schedutil",
            "android:BNNB865A0001",
            "emulated (qemu-aarch64-static)",
            board.fingerprint,
            "host",
        ):
            assert text in html, text
        assert html.count("data-result-id=") == sum(len(r) for r in results.values())
    sshd.stop()


def test_throttling_on_a_phone_invalidates_and_remeasures(
    arm_clis: Path, coordinator_factory: Any, agents: Any, tmp_path: Path
) -> None:
    # an x86_64 Android device (as the Android emulator's images are): it runs the host
    # build of the CLI for real, so its verdicts count
    cpu7 = "/sys/devices/system/cpu/cpu7/cpufreq/scaling_cur_freq"
    with (
        isolated_adb_server(tmp_path / "adb") as adb_env,
        FakeAdbd(
            tmp_path / "phone", props={"ro.product.cpu.abi": "x86_64", "ro.serialno": "X86PHONE"}
        ) as phone,
    ):
        devices = tmp_path / "devices.toml"
        _devices_add(devices, f"adb://{phone.serial}", "--name", "x86-phone", env=_env(adb_env))
        # only throttling may make a result invalid here (noise on a shared CI core must not)
        coord = coordinator_factory(max_remeasures=2, remeasure_pause_s=1.0, max_rel_ci=1e9)
        client = coord.client
        host = agents(coord, "host", "--devices", str(devices), env=adb_env)
        ctx = ctx_of(coord, host)
        [dev] = wait_until(lambda: client.devices() or None, "the phone to register", context=ctx)
        assert not dev.emulated and dev.attributes["abi"] == "x86_64"
        model = client.upload_model(make_tiny_onnx(tmp_path / "t.onnx", "bnn"))
        full = phone.read_file(cpu7).decode().strip()
        [job] = client.create_jobs(
            model.id,
            "native",
            [1],
            devices=["x86-phone"],
            warmup=1,
            runs=4,
            protocol={"warmup_ms": 1000.0},
        )
        # the prime core's clock falls while the first run is going on (its warm-up lasts a
        # second: after the readings before it, before the readings after it)
        cli = str(phone.path("/data/local/tmp/bnnbench/bin"))
        wait_until(
            lambda: (
                subprocess.run(["pgrep", "-f", cli], capture_output=True, check=False).returncode
                == 0
            ),
            "the CLI to run on the phone",
            context=ctx,
        )
        phone.write_file(cpu7, "1200000")
        wait_until(
            lambda: client.get_job(job.id).remeasures == 1 or None,
            "the throttled result to send the job back",
            context=ctx,
        )
        phone.write_file(cpu7, full)  # cooled down: the re-measurement is clean
        [done] = wait_jobs(client, [job.id], ctx)
        assert done.status == "done" and done.runs == 8, done.error
        first, second = client.results(job_id=job.id)
        assert not first.valid and "frequency dropped: cpu7 2841->1200 MHz" in first.verdict
        assert first.env["readings_after"]["cur_freq_khz"]["cpu7"] == 1200000
        assert second.valid and len(second.samples_ms) >= 8, second.verdict
        [(history,)] = coord.query("SELECT history FROM jobs WHERE id = ?", job.id)
        assert [e["event"] for e in json.loads(history)].count("re-measure") == 1
