"""The coordinator's REST API against a real server (uvicorn subprocess, SQLite file):
uploads, background conversion, bad input, auth, size cap, the dashboard."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, wait_for
from helpers.campaign import module_coordinator

from bnnbench.http import ApiError

API = "/api/v1"


def _hdr(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _snapshot(c: CoordinatorProcess) -> dict[str, Any]:
    """Everything stored: rows of every table and every blob's bytes hash."""
    tables = ["models", "artifacts", "jobs", "results", "agents", "devices"]
    return {
        "rows": {t: c.query(f"SELECT * FROM {t} ORDER BY id") for t in tables},
        "blobs": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in c.blob_files()},
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """One coordinator for the tests that look only at their own models, jobs and agents;
    a test that compares everything stored, or counts queued jobs, starts its own."""
    with module_coordinator(tmp_path_factory, "test-admin-token") as c:
        yield c


def _ready_model(c: CoordinatorProcess, path: Path, threads: tuple[int, ...] = (1,)) -> Any:
    m = c.client.upload_model(path)
    jobs = c.client.create_jobs(m.id, "native", threads)
    art = c.client.wait_artifact(jobs[0].artifact_id)
    assert art.status == "ready", art.error
    # the analysis runs after the conversion; wait so that nothing changes in the background
    wait_for(lambda: c.client.get_model(m.id).analysis_status == "done", what="analysis")
    return m, jobs, art


def test_upload_converts_in_background_and_download_matches(
    shared: CoordinatorProcess, tiny_onnx: Path, tmp_path: Path
) -> None:
    c = shared
    m = c.client.upload_model(tiny_onnx)
    assert m.sha256 == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert m.size == tiny_onnx.stat().st_size and m.name == tiny_onnx.name
    # the upload stored the ONNX bytes in the content-addressed store
    blob = c.data_dir / "blobs" / m.sha256[:2] / m.sha256
    assert blob.read_bytes() == tiny_onnx.read_bytes()

    jobs = c.client.create_jobs(m.id, "native", [1, 2], warmup=1, runs=5)
    assert [j.threads for j in jobs] == [1, 2]
    assert {j.status for j in jobs} <= {"waiting", "queued"}
    art = c.client.wait_artifact(jobs[0].artifact_id)
    assert art.status == "ready", art.error
    assert art.report["converter_version"] and art.report["sha256"] == art.sha256
    assert {j.status for j in c.client.list_jobs(ids=[j.id for j in jobs])} == {"queued"}

    model = wait_for(
        lambda: (x := c.client.get_model(m.id)).analysis_status == "done" and x, what="analysis"
    )
    assert model.arch == "TinyVGG" and model.algorithm == "bnn"
    assert model.analysis["n_binary_convs"] == 2

    dest = tmp_path / "artifact.bnn"
    sha = c.client.download_artifact(art.id, dest)
    assert sha == art.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert dest.stat().st_size == art.size
    assert (c.data_dir / "blobs" / sha[:2] / sha).is_file()
    # agents download with their own token (the artifact of a job they lease)
    _, agent = c.register_agent("dl")
    lease = agent.lease(wait=5)
    assert lease is not None and lease.artifact.id == art.id
    resp = httpx.get(f"{c.url}{API}/artifacts/{art.id}/download", headers=_hdr(agent.token))
    assert resp.status_code == 200 and resp.headers["X-Content-SHA256"] == sha
    assert hashlib.sha256(resp.content).hexdigest() == sha


def test_duplicate_upload_returns_the_existing_model(
    shared: CoordinatorProcess, tmp_path: Path
) -> None:
    c = shared
    models, blobs = c.query("SELECT count(*) FROM models"), len(c.blob_files())
    new = make_tiny_onnx(tmp_path / "new.onnx", seed=7)  # bytes no other test uploads
    files = {"file": ("a.onnx", new.read_bytes())}
    r1 = httpx.post(f"{c.url}{API}/models", files=files, headers=_hdr(c.admin_token))
    r2 = httpx.post(
        f"{c.url}{API}/models",
        headers=_hdr(c.admin_token),
        files={"file": ("other-name.onnx", new.read_bytes())},
    )
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r1.json()["id"] == r2.json()["id"] and r2.json()["name"] == "a.onnx"
    assert c.query("SELECT count(*) FROM models") == [(models[0][0] + 1,)]
    other = make_tiny_onnx(tmp_path / "other.onnx", seed=8)
    assert c.client.upload_model(other).id != r1.json()["id"]
    assert len(c.blob_files()) == blobs + 2


def test_malformed_uploads_are_rejected_and_nothing_stored_changes(
    coordinator: CoordinatorProcess, tiny_onnx: Path
) -> None:
    c = coordinator
    _ready_model(c, tiny_onnx)
    before = _snapshot(c)
    cases = {
        "garbage": b"definitely not protobuf \x00\x01\x02" * 50,
        "truncated": tiny_onnx.read_bytes()[:2000],
        "empty": b"",
    }
    for what, data in cases.items():
        with pytest.raises(ApiError) as err:
            c.client.upload_bytes(data, f"{what}.onnx")
        assert err.value.status_code == 422, what
        assert "ONNX" in err.value.detail or "empty" in err.value.detail, err.value.detail
    # not multipart at all
    resp = httpx.post(f"{c.url}{API}/models", content=b"x", headers=_hdr(c.admin_token))
    assert resp.status_code == 422 and "multipart/form-data" in resp.json()["detail"]
    assert _snapshot(c) == before
    assert c.tmp_files() == []


def test_parseable_but_invalid_onnx_fails_in_the_background(
    shared: CoordinatorProcess, tiny_onnx: Path, tmp_path: Path
) -> None:
    c = shared
    good, good_jobs, good_art = _ready_model(c, tiny_onnx)
    # a node reading a tensor nothing produces: parses, but the ONNX checker rejects it
    model = onnx.load(str(tiny_onnx))
    model.graph.node[0].input[0] = "no_such_tensor"
    bad_path = tmp_path / "dangling.onnx"
    onnx.save(model, str(bad_path))
    bad = c.client.upload_model(bad_path)
    jobs = c.client.create_jobs(bad.id, "native", [1, 2])
    art = c.client.wait_artifact(jobs[0].artifact_id)
    assert art.status == "failed" and "invalid ONNX model" in art.error
    failed = c.client.list_jobs(ids=[j.id for j in jobs])
    assert {j.status for j in failed} == {"failed"}
    assert all(art.error in j.error for j in failed)
    m = wait_for(
        lambda: (x := c.client.get_model(bad.id)).analysis_status == "failed" and x,
        what="analysis failure",
    )
    assert "invalid ONNX model" in m.analysis_error
    # the other model is untouched
    assert c.client.get_artifact(good_art.id) == good_art
    assert {j.status for j in c.client.list_jobs(ids=[j.id for j in good_jobs])} == {"queued"}


def test_unsupported_op_fails_artifact_and_jobs_only(
    coordinator: CoordinatorProcess, tiny_onnx: Path, tmp_path: Path
) -> None:
    c = coordinator
    good, good_jobs, good_art = _ready_model(c, tiny_onnx)
    before_blobs = {p.name for p in c.blob_files()}
    unsupported = make_tiny_onnx(tmp_path / "softplus.onnx", extra_op="Softplus")
    m = c.client.upload_model(unsupported)
    jobs = c.client.create_jobs(m.id, "native", [1, 2, 4])
    art = c.client.wait_artifact(jobs[0].artifact_id)
    assert art.status == "failed"
    assert "Softplus" in art.error and "/features.2/Softplus" in art.error
    assert art.sha256 is None and art.size is None
    for j in c.client.list_jobs(ids=[j.id for j in jobs]):
        assert j.status == "failed"
        assert j.error == f"artifact conversion failed: {art.error}"
    # later jobs for the same model and library fail at once with the same cause
    (again,) = c.client.create_jobs(m.id, "native", [8])
    assert again.status == "failed" and "Softplus" in again.error
    # the model itself stays stored; the other model's artifact and jobs are untouched
    assert c.client.get_model(m.id).sha256 == m.sha256
    assert (c.data_dir / "blobs" / m.sha256[:2] / m.sha256).is_file()
    assert c.client.get_artifact(good_art.id) == good_art
    assert {j.status for j in c.client.list_jobs(ids=[j.id for j in good_jobs])} == {"queued"}
    assert {p.name for p in c.blob_files()} == before_blobs | {m.sha256}
    # an operator may retry a failed conversion (after a converter upgrade): same cause here
    assert c.client.retry_artifact(art.id).status == "pending"
    again_art = wait_for(
        lambda: (x := c.client.get_artifact(art.id)).status == "failed" and x,
        what="second conversion",
    )
    assert again_art.error == art.error
    with pytest.raises(ApiError) as err:
        c.client.retry_artifact(good_art.id)
    assert err.value.status_code == 409 and "not failed" in err.value.detail


def test_auth_errors(shared: CoordinatorProcess, tiny_onnx: Path) -> None:
    c = shared
    url = c.url + API
    models = c.query("SELECT count(*) FROM models")
    r = httpx.get(f"{url}/models")
    assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
    assert r.headers["WWW-Authenticate"] == "Bearer"
    r = httpx.get(f"{url}/models", headers=_hdr("wrong"))
    assert r.status_code == 401 and "invalid token" in r.json()["detail"]
    r = httpx.get(f"{url}/models", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    assert httpx.get(f"{c.url}/health").status_code == 200  # no auth needed
    assert httpx.get(f"{url}/health").json()["status"] == "ok"

    # a runtime no job here asks for: its lease finds nothing whatever other tests queued
    reg, agent = c.register_agent("auth", runtimes={"tflite": "2.14"})
    agent_hdr = _hdr(reg.token)
    for method, path, kw in [
        ("GET", "/models", {}),
        ("POST", "/models", {"files": {"file": ("m.onnx", tiny_onnx.read_bytes())}}),
        ("POST", "/jobs", {"json": {"model_id": 1}}),
        ("GET", "/jobs", {}),
        ("GET", "/results/table", {}),
        (
            "POST",
            "/agents/register",
            {
                "json": {
                    "name": "x",
                    "device": {
                        "hostname": "h",
                        "arch": "a",
                        "os": "o",
                        "cpu_model": "c",
                        "cores": 1,
                    },
                }
            },
        ),
    ]:
        r = httpx.request(method, f"{url}{path}", headers=agent_hdr, **kw)
        assert r.status_code == 403, (method, path, r.text)
        assert "admin token" in r.json()["detail"]
    # and the admin token is not an agent
    r = httpx.post(f"{url}/agents/lease", headers=_hdr(c.admin_token))
    assert r.status_code == 403 and "agent token" in r.json()["detail"]
    # the agent token works where it should
    assert httpx.post(f"{url}/agents/lease", headers=agent_hdr).status_code == 204
    # only the token's hash is stored
    stored = c.query("SELECT token_hash FROM agents WHERE id = ?", reg.agent_id)
    assert stored == [(hashlib.sha256(reg.token.encode()).hexdigest(),)]
    assert reg.token not in c.db_path.read_bytes().decode(errors="replace")
    assert c.query("SELECT count(*) FROM models") == models  # the agent's upload was refused


def test_oversized_upload_413_and_no_partial_blob(
    coordinator_factory: Any, tiny_onnx: Path
) -> None:
    size = tiny_onnx.stat().st_size
    # conversions paused: no background work writes to tmp/ while we look at it
    c: CoordinatorProcess = coordinator_factory(max_upload_bytes=size + 100, conversion_workers=0)
    big_model = make_tiny_onnx(tiny_onnx.parent / "big.onnx", arch="X" * 20_000)
    assert big_model.stat().st_size > size + 100
    # slightly over the cap: caught while streaming
    with pytest.raises(ApiError) as err:
        c.client.upload_model(big_model)
    assert err.value.status_code == 413 and f"{size + 100} bytes" in err.value.detail
    # far over the cap: refused from Content-Length before reading
    with pytest.raises(ApiError) as err:
        c.client.upload_bytes(b"\x08\x08" + b"\x00" * 2_000_000, "huge.onnx")
    assert err.value.status_code == 413 and "max_upload_bytes" in err.value.detail
    assert c.blob_files() == [] and c.tmp_files() == []
    assert c.query("SELECT count(*) FROM models") == [(0,)]
    # under the cap still works
    assert c.client.upload_model(tiny_onnx).size == size
    assert len(c.blob_files()) == 1 and c.tmp_files() == []


def test_request_errors_are_json_strings(shared: CoordinatorProcess) -> None:
    c = shared
    hdr = _hdr(c.admin_token)
    r = httpx.post(f"{c.url}{API}/jobs", json={"model_id": 1, "threads": []}, headers=hdr)
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    assert "threads" in r.json()["detail"]
    r = httpx.post(f"{c.url}{API}/jobs", json={"model_id": 99999}, headers=hdr)
    assert r.status_code == 404 and r.json()["detail"] == "model 99999 not found"
    r = httpx.post(f"{c.url}{API}/jobs", json={"model_id": 1, "library": "caffe"}, headers=hdr)
    assert r.status_code == 422 and "library" in r.json()["detail"]
    for path in ("/jobs/99999", "/models/99999", "/artifacts/99999", "/artifacts/99999/download"):
        r = httpx.get(f"{c.url}{API}{path}", headers=hdr)
        assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert httpx.get(f"{c.url}/openapi.json").json()["info"]["title"] == "bnnbench coordinator"


def test_dashboard(coordinator: CoordinatorProcess, tiny_onnx: Path) -> None:
    c = coordinator
    _ready_model(c, tiny_onnx)
    r = httpx.get(c.url + "/")
    assert r.status_code == 401 and "Admin token" in r.text
    with httpx.Client(base_url=c.url, follow_redirects=True) as browser:
        r = browser.post("/login", data={"token": c.admin_token})
        assert r.status_code == 200 and "queued 1" in r.text
        models = browser.get("/models").text
        assert "tiny_bnn.onnx" in models and "ready" in models
        browser.cookies.set("bnnbench_session", "wrong")
        assert browser.get("/").status_code == 401


def test_tiny_models_pass_the_onnx_checker(tmp_path: Path) -> None:
    # the fixtures' models are valid ONNX (failures in the tests above come from the cause
    # each test builds in, not from a sloppy fixture)
    for algo in ("fp32", "bnn", "react"):
        onnx.checker.check_model(onnx.load(str(make_tiny_onnx(tmp_path / f"{algo}.onnx", algo))))
