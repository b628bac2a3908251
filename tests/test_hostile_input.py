"""Bad input gets a clear error, and nothing is lost (issue 14): hostile requests to every
endpoint of a real coordinator — integers past 64 bits, megabyte strings, NUL characters,
wrong types, empty and malformed bodies, huge and deep JSON, impossible latencies, a valid
but weightless ONNX model — answer a 4xx naming the field and the limit (never a 500), store
nothing, and leave every listing readable for everyone.

One coordinator for the module (max_json_bytes lowered to 1 MiB so that the cap is cheap to
cross); each test that posts a result leases its own job. The last test checks the server
still answers every listing normally and that the database holds only the valid rows."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, result_for, wait_for
from helpers.campaign import module_coordinator

from bnnbench.client import BnnbenchClient
from bnnbench.schemas import (
    API_PREFIX,
    INT64_MAX,
    MAX_FREE_JSON_BYTES,
    MAX_JSON_DEPTH,
    JobLease,
    ModelOut,
    RegisterResponse,
)
from bnnbench.stats import summarize

ADMIN = "hostile-input-admin-token"  # 16+ characters: the coordinator refuses less
MAX_JSON_BYTES = 1024 * 1024
BIG = 2**63  # one past the largest SQLite / PostgreSQL integer
DEVICE = {
    "hostname": "bench-1",
    "arch": "x86_64",
    "os": "Linux test",
    "cpu_model": "Test CPU",
    "cores": 4,
    "transport": "local",
}
GOOD_SAMPLES = [10.0, 10.05, 9.95]


@dataclass
class World:
    c: CoordinatorProcess
    admin: httpx.Client  # raw requests with the admin token
    agent_http: httpx.Client  # raw requests with the agent's token
    agent: BnnbenchClient
    reg: RegisterResponse
    model: ModelOut
    tmp: Path


def _hostile_world(c: CoordinatorProcess, tmp: Path) -> World:
    model = c.client.upload_model(make_tiny_onnx(tmp / "tiny_bnn.onnx", "bnn"))
    reg, agent = c.register_agent("bench", runtimes={"native": "test-1"}, **DEVICE)
    base = c.url + API_PREFIX
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    agent_http = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {reg.token}"}, timeout=60
    )
    return World(c, admin, agent_http, agent, reg, model, tmp)


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # leases outlive the 100 MB bodies sent under them on a loaded machine (no heartbeat here)
    with module_coordinator(
        tmp_path_factory, ADMIN, max_json_bytes=MAX_JSON_BYTES, lease_seconds=120
    ) as c:
        world = _hostile_world(c, tmp_path_factory.mktemp("hostile"))
        try:
            yield world
        finally:
            world.admin.close()
            world.agent_http.close()


def _lease(w: World) -> JobLease:
    """A fresh lease of a new job of the agent's device (its artifact converts once)."""
    (job,) = w.c.client.create_jobs(w.model.id, "native", [1], runs=3, device_id=w.reg.device_id)
    lease = wait_for(lambda: w.agent.lease(wait=2), timeout=120, what="a lease")
    assert lease.job_id == job.id
    return lease


def _detail(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/json"), r.text[:200]
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    return detail


def _expect(r: httpx.Response, status: int, *words: str) -> None:
    """The exact status and a one-line detail naming the field and the limit."""
    assert r.status_code == status, (r.request.method, str(r.request.url)[:200], r.text[:300])
    detail = _detail(r)
    for word in words:
        assert word in detail, (word, detail)
    assert len(detail) < 2000, detail[:300]  # never the hostile input echoed back whole


def _db_bytes(c: CoordinatorProcess) -> int:
    return sum(p.stat().st_size for p in c.data_dir.glob("bnnbench.db*"))


def _counts(c: CoordinatorProcess) -> dict[str, int]:
    tables = ("models", "devices", "agents", "jobs", "results")
    return {t: c.query(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


# ------------------------------------------------------------------ integers past 64 bits

ID_PATHS = [
    ("GET", "/models/{}", "path.model_id"),
    ("GET", "/models/{}/artifacts", "path.model_id"),
    ("GET", "/artifacts/{}", "path.artifact_id"),
    ("GET", "/artifacts/{}/download", "path.artifact_id"),
    ("POST", "/artifacts/{}/retry", "path.artifact_id"),
    ("GET", "/jobs/{}", "path.job_id"),
    ("POST", "/jobs/{}/cancel", "path.job_id"),
    ("POST", "/jobs/{}/retry", "path.job_id"),
    ("POST", "/jobs/{}/rerun", "path.job_id"),
    ("GET", "/devices/{}", "path.device_id"),
]


def test_ids_past_64_bits_in_paths_are_422(w: World) -> None:
    before = _counts(w.c)
    for method, path, field in ID_PATHS:
        for value in (BIG, 10**30):
            _expect(w.admin.request(method, path.format(value)), 422, field, str(INT64_MAX))
        _expect(w.admin.request(method, path.format(-1)), 422, field, "greater than or equal")
        # the largest id fits its column: merely not found
        assert w.admin.request(method, path.format(INT64_MAX)).status_code == 404
    # the agent's endpoints too (checked before the lease is)
    body = {"lease_id": "x", "samples_ms": [1.0], "runtime_version": "t"}
    r = w.agent_http.post(f"/jobs/{BIG}/result", json=body)
    _expect(r, 422, "path.job_id", str(INT64_MAX))
    r = w.agent_http.post(f"/jobs/{BIG}/fail", json={"lease_id": "x", "error": "e"})
    _expect(r, 422, "path.job_id", str(INT64_MAX))
    # the dashboard's pages of one row, too (with a bearer header, as a script reads them)
    auth = {"Authorization": f"Bearer {w.c.admin_token}"}
    for page in ("devices", "jobs", "models", "results"):
        r = httpx.get(f"{w.c.url}/{page}/{BIG}", headers=auth)
        assert r.status_code == 422, (page, r.status_code)
    assert _counts(w.c) == before


def test_integers_past_64_bits_in_queries_and_bodies_are_422(w: World) -> None:
    before = _counts(w.c)
    top = str(INT64_MAX)
    queries: list[tuple[str, dict[str, Any], str, str]] = [
        ("/jobs", {"offset": BIG}, "query.offset", top),
        ("/jobs", {"model_id": BIG}, "query.model_id", top),
        ("/jobs", {"model_id": -BIG - 1}, "query.model_id", "greater than or equal to 0"),
        ("/jobs", {"id": [1, BIG]}, "query.id.1", top),
        ("/jobs", {"limit": BIG}, "query.limit", "10000"),
        ("/results", {"offset": BIG}, "query.offset", top),
        ("/results", {"job_id": BIG}, "query.job_id", top),
        ("/results", {"model_id": BIG}, "query.model_id", top),
        ("/results", {"limit": 10_001}, "query.limit", "10000"),
        ("/artifacts", {"model_id": BIG}, "query.model_id", top),
        ("/results/compare", {"a": "device=1", "b": "device=2", "seed": BIG}, "query.seed", top),
    ]
    for path, params, field, limit in queries:
        _expect(w.admin.get(path, params=params), 422, field, limit)
    # selectors of /results/compare carry ids too
    for selector in (f"model={BIG}", f"jobs=1-{BIG}", "model=²"):
        r = w.admin.get("/results/compare", params={"a": selector, "b": "library=native"})
        _expect(r, 422, selector.split("=")[0], str(INT64_MAX))

    job = {"model_id": w.model.id, "threads": [1]}
    for extra, field, limit in (
        ({"model_id": BIG}, "model_id", str(INT64_MAX)),
        ({"device_id": BIG}, "device_id", str(INT64_MAX)),
        ({"threads": [BIG]}, "threads", "16"),
        ({"warmup": BIG}, "warmup", "1000"),
        ({"runs": -1}, "runs", "1"),
        ({"protocol": {"max_runs": BIG}}, "protocol.max_runs", "100000"),
    ):
        _expect(w.admin.post("/jobs", json={**job, **extra}), 422, field, limit)
    r = w.agent_http.post("/agents/heartbeat", json={"job_id": BIG})
    _expect(r, 422, "job_id", str(INT64_MAX))
    for device, field, limit in (
        ({"cores": BIG}, "device.cores", "4096"),
        ({"cores": 0}, "device.cores", "1"),
        ({"ram_mb": BIG}, "device.ram_mb", str(INT64_MAX)),
        ({"clusters": [{"cpus": [BIG], "max_freq_khz": 1}]}, "device.clusters.0.cpus.0", "4096"),
        ({"clusters": [{"cpus": [0], "max_freq_khz": BIG}]}, "max_freq_khz", str(INT64_MAX)),
    ):
        body = {"name": "intruder", "device": {**DEVICE, **device}}
        _expect(w.admin.post("/agents/register", json=body), 422, field, limit)
    assert _counts(w.c) == before


# ------------------------------------------------------------------ strings, types, bodies


def test_hostile_strings_types_and_bodies_are_4xx(w: World) -> None:
    before = _counts(w.c)
    mb = "x" * 1_000_000

    def register(**over: Any) -> httpx.Response:
        device = {**DEVICE, **over.pop("device", {})}
        return w.admin.post("/agents/register", json={"name": "n", "device": device, **over})

    _expect(register(name=mb), 422, "name", "200")
    _expect(register(device={"hostname": mb}), 422, "device.hostname", "255")
    _expect(register(device={"cpu_model": "c" * 256}), 422, "device.cpu_model", "255")
    _expect(register(device={"arch": "a" * 65}), 422, "device.arch", "64")
    _expect(register(device={"identity": "i" * 256}), 422, "device.identity", "255")
    # each field fits, the fingerprint made of them (hostname|arch|cpu_model|…) does not
    long_fp = {"hostname": "h" * 255, "cpu_model": "c" * 255}
    _expect(register(device=long_fp), 422, "fingerprint", "512")
    _expect(register(name="a\x00b"), 422, "name", "NUL")
    _expect(register(device={"hostname": "pi\x00"}), 422, "device.hostname", "NUL")
    _expect(register(runtimes={"native": "1\x00"}), 422, "runtimes.native", "NUL")
    tools = {"t" * 100_000: "/bin/sh"}
    r = register(device={"tools": tools})
    _expect(r, 422, "device.tools", "64")
    assert len(_detail(r)) < 1000  # the 100 kB key is not echoed back
    _expect(register(device={"cores": "many"}), 422, "device.cores", "integer")
    _expect(register(device={"isa_flags": "avx2"}), 422, "device.isa_flags", "list")
    # control and bidi characters other than NUL are only text: stored and shown escaped
    assert register(name="\u202eevil\u0007", device={"identity": "odd"}).status_code == 200

    job = {"model_id": w.model.id}
    for selector, status, words in (
        ("1" * 5000, 422, ("devices.0", "1000 characters")),  # int() refuses 4300+ digits
        ("²", 422, ("matches no device",)),  # a digit to str.isdigit, not to int()
        (str(BIG), 422, ("matches no device",)),
        ("\x00", 422, ("devices.0", "NUL")),
        ("", 422, ("devices.0", "at least 1")),
    ):
        _expect(w.admin.post("/jobs", json={**job, "devices": [selector]}), status, *words)
    _expect(w.admin.post("/jobs", json={**job, "threads": "1"}), 422, "threads", "list")
    _expect(w.admin.post("/jobs", json={**job, "library": "caffe"}), 422, "library")
    hdr = {"content-type": "application/json"}
    # what FastAPI's parser refuses (not UTF-8, a 5000-digit integer Python will not
    # parse) is a 400 naming the body
    for content, status, words in (
        (b"", 422, ("body", "required")),
        (b"null", 422, ("body", "dictionary")),
        (b"[1, 2]", 422, ("body", "dictionary")),
        (b"{bad", 422, ("JSON decode error",)),
        (b"\xff\xfe\x00", 400, ("parsing the body",)),
        (b'{"model_id": 1e999}', 422, ("model_id", "finite")),
        (b'{"model_id": ' + b"9" * 5000 + b"}", 400, ("parsing the body",)),
    ):
        _expect(w.admin.post("/jobs", content=content, headers=hdr), status, *words)
    _expect(w.agent_http.post("/agents/heartbeat", content=b"[]", headers=hdr), 422, "body")
    _expect(w.agent_http.post("/agents/lease", params={"wait": "nan"}), 422, "query.wait")
    r = w.agent_http.post("/jobs/1/fail", json={"lease_id": "x" * 65, "error": "e"})
    _expect(r, 422, "lease_id", "64")
    r = w.agent_http.post("/jobs/1/fail", json={"lease_id": "x", "error": "e\x00"})
    _expect(r, 422, "error", "NUL")
    after = _counts(w.c)
    assert after == {**before, "devices": before["devices"] + 1, "agents": before["agents"] + 1}
    assert w.c.query("SELECT count(*) FROM devices WHERE instr(hostname, char(0)) > 0") == [(0,)]


# ------------------------------------------------------------------ samples


def test_impossible_samples_are_422_and_nothing_is_stored(w: World) -> None:
    lease = _lease(w)
    url = f"/jobs/{lease.job_id}/result"
    stored = _counts(w.c)["results"]
    hdr = {"content-type": "application/json"}

    def raw(samples: str) -> httpx.Response:
        body = (
            f'{{"lease_id": "{lease.lease_id}", "samples_ms": {samples}, "runtime_version": "t"}}'
        )
        return w.agent_http.post(url, content=body.encode(), headers=hdr)

    for samples in ("[NaN, 1.0]", "[Infinity, 1.0]", "[-Infinity]", "[1e999, 1.0]"):
        _expect(raw(samples), 422, "samples_ms[0]", "finite")
    # huge but finite: the statistics are finite (bnnbench.stats scales before summing) ...
    st = summarize([1e308, 1e308])
    assert st.mean_ms == st.median_ms == 1e308 and st.stdev_ms == 0.0
    assert all(math.isfinite(v) for v in st.model_dump().values() if isinstance(v, float))
    # ... but no latency: a stored one made OM overflow (t_fp32 / t_bin squared), a 500 on
    # every table for everyone
    for samples in ("[1e308, 1e308]", "[1.0, 1e7, 2e7]", "[1e-300]", "[-1.0]", "[0.0, 1.0]"):
        r = raw(samples)
        _expect(r, 422, "samples_ms[", "from 1e-06 to 1e+07")
    for samples, words in (
        ("[]", ("samples_ms", "at least 1")),
        ("[true]", ("samples_ms.0", "number")),
        ('["1.5"]', ("samples_ms.0", "number")),
        ("[null]", ("samples_ms.0", "number")),
        ("5", ("samples_ms", "list")),
        ("[" + ",".join(["1.0"] * 100_001) + "]", ("samples_ms", "100000")),
    ):
        _expect(raw(samples), 422, *words)
    assert _counts(w.c)["results"] == stored
    # the lease is intact: the real result is accepted
    posted = w.agent.post_result(lease.job_id, result_for(lease, GOOD_SAMPLES))
    assert posted.valid, posted.verdict


# ------------------------------------------------------------------ free-form JSON (env)


def _nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep (the outermost object is level 1)."""
    env: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        env = {"a": env}
    return env


def test_env_bounds_are_422_and_the_deepest_allowed_reads_back(w: World) -> None:
    lease = _lease(w)
    url = f"/jobs/{lease.job_id}/result"
    stored = _counts(w.c)["results"]

    def post(env: Any) -> httpx.Response:
        body = {"lease_id": lease.lease_id, "samples_ms": GOOD_SAMPLES, "runtime_version": "t"}
        return w.agent_http.post(url, json={**body, "env": env})

    limit = str(MAX_JSON_DEPTH)
    for depth in (MAX_JSON_DEPTH + 1, 256, 300):
        _expect(post(_nested(depth)), 422, "env", f"deeper than {limit} levels")
    # deeper than Python's own parser goes: refused while parsing, a 400
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    body = b'{"lease_id":"x","samples_ms":[1.0],"runtime_version":"t","env":' + deep + b"}"
    r = w.agent_http.post(url, content=body, headers={"content-type": "application/json"})
    _expect(r, 400, "parsing the body")
    r = post({"log": "x" * (MAX_FREE_JSON_BYTES + 1)})
    _expect(r, 422, "env", f"exceed the limit of {MAX_FREE_JSON_BYTES}")
    _expect(post({"note": "a\x00b"}), 422, "env", "NUL")
    _expect(post("not an object"), 422, "env", "dictionary")
    # the keys the coordinator reads (its throttling check) must have their types
    for env, where in (
        ({"readings_before": "hot"}, "readings_before"),
        ({"readings_after": {"temperatures_c": {"cpu": "hot"}}}, "temperatures_c.cpu"),
        ({"readings_after": {"temperatures_c": {"cpu": None}}}, "temperatures_c.cpu"),
        ({"readings_after": {"cur_freq_khz": {"cpu0": "fast"}}}, "cur_freq_khz.cpu0"),
        ({"readings_after": {"cur_freq_khz": []}}, "cur_freq_khz"),
        ({"readings_after": {"throttled": "0xZZ"}}, "throttled"),
        ({"affinity_cpus": 5}, "affinity_cpus"),
        ({"affinity_cpus": [BIG]}, "affinity_cpus.0"),
    ):
        _expect(post(env), 422, "env", where)
    assert _counts(w.c)["results"] == stored
    # the deepest env allowed, with readings the throttling check reads, is stored and read
    env = {
        **_nested(MAX_JSON_DEPTH),
        "affinity_cpus": [0, 1],
        "readings_before": {"cur_freq_khz": {"cpu0": 1800000}, "temperatures_c": {"cpu": 45}},
        "readings_after": {"cur_freq_khz": {"cpu0": 1800000}, "throttled": "0x0", "x": [1]},
    }
    r = post(env)
    assert r.status_code == 200, r.text
    assert r.json()["valid"], r.json()["verdict"]
    listed = w.admin.get("/results", params={"job_id": lease.job_id})
    assert listed.status_code == 200 and listed.json()[0]["env"] == env


def test_oversized_bodies_are_413_unread_and_nothing_grows(w: World) -> None:
    lease = _lease(w)
    url = f"/jobs/{lease.job_id}/result"
    before, size_before = _counts(w.c), _db_bytes(w.c)
    head = f'{{"lease_id":"{lease.lease_id}","samples_ms":[1.0],"runtime_version":"t","env":'
    body = head.encode() + b'{"log":"' + b"x" * 100_000_000 + b'"}}'
    hdr = {"content-type": "application/json"}
    # declared: refused from Content-Length before it is read
    r = w.agent_http.post(url, content=body, headers=hdr)
    _expect(r, 413, f"{len(body)} bytes", f"limit of {MAX_JSON_BYTES} bytes", "max_json_bytes")

    # chunked (no Content-Length): refused once the bytes read pass the limit
    def chunks() -> Iterator[bytes]:
        for i in range(0, 3 * MAX_JSON_BYTES, 64 * 1024):
            yield body[i : i + 64 * 1024]

    r = w.agent_http.post(url, content=chunks(), headers=hdr)
    _expect(r, 413, f"limit of {MAX_JSON_BYTES} bytes", "max_json_bytes")
    # other endpoints and methods too; the dashboard's forms as well
    r = w.admin.post("/jobs", content=b"[" + b"1," * MAX_JSON_BYTES + b"1]", headers=hdr)
    _expect(r, 413, "max_json_bytes")
    r = httpx.post(f"{w.c.url}/login", content=b"token=" + b"x" * (2 * MAX_JSON_BYTES))
    assert r.status_code == 413
    assert _counts(w.c) == before
    assert _db_bytes(w.c) - size_before < MAX_JSON_BYTES
    # the upload streams to disk under its own cap (max_upload_bytes), not this one
    import onnx

    padded = w.tmp / "padded.onnx"
    m = onnx.load(str(make_tiny_onnx(w.tmp / "fp32.onnx", "fp32")))
    m.graph.doc_string = "p" * (2 * MAX_JSON_BYTES)  # bytes the analysis never stores
    onnx.save(m, str(padded))
    up = w.c.client.upload_model(padded)
    assert up.size > MAX_JSON_BYTES
    # the lease survived all of it
    posted = w.agent.post_result(lease.job_id, result_for(lease, GOOD_SAMPLES))
    assert posted.valid, posted.verdict


# ------------------------------------------------------------------ weightless ONNX models


def _one_op_model(path: Path, op: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    out_shape = [1, 48] if op == "Flatten" else [1, 3, 4, 4]
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name=f"/{op}")],
        f"lone_{op.lower()}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_weightless_models_are_analysed_with_undefined_ratios(w: World) -> None:
    ids = [
        w.c.client.upload_model(_one_op_model(w.tmp / f"{op}.onnx", op)).id
        for op in ("Relu", "Flatten")
    ]

    def analysed() -> list[dict[str, Any]] | None:
        models = [w.admin.get(f"/models/{i}").json() for i in ids]
        finished = all(m["analysis_status"] in ("done", "failed") for m in models)
        return models if finished else None

    for m in wait_for(analysed, timeout=120, what="analyses of the weightless models"):
        assert m["analysis_status"] == "done", m["analysis_error"]
        totals, th = m["analysis"]["totals"], m["analysis"]["theoretical"]
        assert totals["params_total"] == totals["flops_total"] == 0
        assert th["speedup"] is None and th["compression"] is None and th["om"] is None
        assert "compression is undefined" in th["undefined"]
        assert "speedup is undefined" in th["undefined"]
    assert w.admin.get("/models").status_code == 200
    assert w.admin.get("/results/plots/theoretical.svg").status_code == 200


# ------------------------------------------------------------------ tar metadata bombs


def _peak_rss_kib(pid: int) -> int:
    """The process' peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _pax_bomb(path: Path, payload_mib: int) -> Path:
    """A .tar.gz whose first header is a pax extended header of ``payload_mib`` MiB of one
    repeated byte (about 1 KiB of gzip per MiB: gzip members may be concatenated, so one
    compressed MiB is written that many times), then the end of the archive."""
    import gzip
    import tarfile

    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, payload_mib << 20
    mib = gzip.compress(b"a" * (1 << 20))
    with open(path, "wb") as f:
        f.write(gzip.compress(header.tobuf(format=tarfile.USTAR_FORMAT)))
        for _ in range(payload_mib):
            f.write(mib)
        f.write(gzip.compress(b"\0" * 1024))
    return path


def test_a_tar_metadata_bomb_is_422_without_reading_it(w: World) -> None:
    """tarfile reads a pax header whole before any limit applies: a 300 KB upload made the
    upload check allocate 300 MB and parse it for 20 s (ever more with a bigger one, up to
    running out of memory); the bounded walk refuses it at the header."""
    from coordinator.uploads import MAX_TAR_METADATA_BYTES

    bomb = _pax_bomb(w.tmp / "bomb.tar.gz", 256)
    assert bomb.stat().st_size < 1 << 20  # a small upload ...
    before, peak = _counts(w.c), _peak_rss_kib(w.c.proc.pid)  # type: ignore[union-attr]
    r = w.admin.post("/models", files={"file": ("bomb.tar.gz", bomb.read_bytes())})
    _expect(r, 422, "pax extended header", f"limit of {MAX_TAR_METADATA_BYTES} bytes")
    # ... that no longer costs the server the 256 MiB it declares
    grown_mib = (_peak_rss_kib(w.c.proc.pid) - peak) / 1024  # type: ignore[union-attr]
    assert grown_mib < 64, f"the coordinator's peak memory grew by {grown_mib:.0f} MiB"
    assert _counts(w.c) == before and w.c.tmp_files() == []


# ------------------------------------------------------------------ afterwards


def test_the_coordinator_still_answers_and_stored_only_valid_rows(w: World) -> None:
    for path in (
        "/results",
        "/results/table",
        "/results/table.csv",
        "/results/table.md",
        "/jobs",
        "/models",
        "/devices",
        "/artifacts",
        "/health",
    ):
        r = w.admin.get(path)
        assert r.status_code == 200, (path, r.text[:300])
    assert httpx.get(f"{w.c.url}/health").json()["status"] == "ok"
    # the openapi schema states the bounds
    spec = httpx.get(f"{w.c.url}/openapi.json").json()
    (param,) = spec["paths"][f"{API_PREFIX}/jobs/{{job_id}}"]["get"]["parameters"]
    assert param["schema"]["maximum"] == INT64_MAX and param["schema"]["minimum"] == 0
    # nothing a hostile request sent was stored: every stored env is small, shallow JSON,
    # every sample a latency
    for env_text, samples_text in w.c.query("SELECT env, samples_ms FROM results"):
        assert len(env_text) <= MAX_FREE_JSON_BYTES and "\\u0000" not in env_text
        assert all(1e-6 <= x <= 1e7 for x in json.loads(samples_text))
    assert w.c.query("SELECT max(cores), max(length(hostname)) FROM devices") == [(4, 7)]
    assert "unhandled error" not in w.c.log_tail(1000)  # no 500 along the way
