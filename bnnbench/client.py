"""``BnnbenchClient``: the coordinator's REST API over httpx, for the CLI, scripts and tests.

Construct it with the admin token for user operations (upload, jobs, results) or with an
agent's token for the agent side (heartbeat, lease, result). Errors raise
:class:`bnnbench.http.ApiError` with the server's ``detail`` message.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from bnnbench.http import ApiError, error_detail
from bnnbench.schemas import (
    API_PREFIX,
    ArtifactOut,
    DeviceOut,
    HeartbeatResponse,
    JobLease,
    JobOut,
    MeasurementProtocol,
    ModelOut,
    RegisterRequest,
    RegisterResponse,
    ResultOut,
)

TERMINAL = ("done", "failed")


class BnnbenchClient:
    def __init__(
        self,
        url: str,
        token: str = "",
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BnnbenchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- plumbing

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """``path`` relative to /api/v1 (or absolute from the server root); raises ApiError
        for 4xx/5xx."""
        url = path if path.startswith(API_PREFIX) or path == "/health" else API_PREFIX + path
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TransportError as exc:
            # status 0: no HTTP answer at all (refused, timed out, DNS)
            raise ApiError(0, f"cannot reach the coordinator at {self.url}: {exc}", method,
                           url) from None
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, error_detail(resp), method, url)
        return resp

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health").json()

    # -------------------------------------------------------------- models

    def upload_bytes(
        self,
        data: bytes,
        filename: str = "model.onnx",
        *,
        name: str | None = None,
        arch: str | None = None,
        algorithm: str | None = None,
    ) -> ModelOut:
        return self._upload((filename, data, "application/octet-stream"), name, arch, algorithm)

    def upload_model(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        arch: str | None = None,
        algorithm: str | None = None,
    ) -> ModelOut:
        """Streams the file; the same bytes uploaded twice give the same model."""
        path = Path(path)
        with open(path, "rb") as f:
            return self._upload((path.name, f, "application/octet-stream"), name, arch, algorithm)

    def _upload(
        self, file: tuple[str, Any, str], name: str | None, arch: str | None, algorithm: str | None
    ) -> ModelOut:
        fields = {k: v for k, v in {"name": name, "arch": arch, "algorithm": algorithm}.items()
                  if v}
        resp = self.request("POST", "/models", files={"file": file}, data=fields)
        return ModelOut.model_validate(resp.json())

    def list_models(self) -> list[ModelOut]:
        return [ModelOut.model_validate(m) for m in self.request("GET", "/models").json()]

    def get_model(self, model_id: int) -> ModelOut:
        return ModelOut.model_validate(self.request("GET", f"/models/{model_id}").json())

    def model_artifacts(self, model_id: int) -> list[ArtifactOut]:
        resp = self.request("GET", f"/models/{model_id}/artifacts")
        return [ArtifactOut.model_validate(a) for a in resp.json()]

    # -------------------------------------------------------------- artifacts

    def list_artifacts(self, status: str | None = None) -> list[ArtifactOut]:
        params = {"status": status} if status else None
        resp = self.request("GET", "/artifacts", params=params)
        return [ArtifactOut.model_validate(a) for a in resp.json()]

    def get_artifact(self, artifact_id: int) -> ArtifactOut:
        return ArtifactOut.model_validate(self.request("GET", f"/artifacts/{artifact_id}").json())

    def retry_artifact(self, artifact_id: int) -> ArtifactOut:
        resp = self.request("POST", f"/artifacts/{artifact_id}/retry")
        return ArtifactOut.model_validate(resp.json())

    def download_artifact(self, artifact_id: int, dest: str | Path) -> str:
        """Writes the artifact to ``dest``; returns the X-Content-SHA256 header after checking
        it against the bytes received."""
        url = f"{API_PREFIX}/artifacts/{artifact_id}/download"
        h = hashlib.sha256()
        with self._http.stream("GET", url) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ApiError(resp.status_code, error_detail(resp), "GET", url)
            claimed = resp.headers.get("X-Content-SHA256", "")
            with open(dest, "wb") as f:
                for chunk in resp.iter_bytes(1 << 16):
                    h.update(chunk)
                    f.write(chunk)
        if h.hexdigest() != claimed:
            raise ApiError(200, f"sha256 mismatch: got {h.hexdigest()}, header {claimed}")
        return claimed

    def wait_artifact(
        self, artifact_id: int, timeout: float = 120.0, poll: float = 0.2
    ) -> ArtifactOut:
        """Until the artifact is ready or failed (raises TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            a = self.get_artifact(artifact_id)
            if a.status in ("ready", "failed"):
                return a
            if time.monotonic() > deadline:
                raise TimeoutError(f"artifact {artifact_id} still {a.status} after {timeout} s")
            time.sleep(poll)

    # -------------------------------------------------------------- jobs

    def create_jobs(
        self,
        model_id: int,
        library: str = "native",
        threads: Iterable[int] = (1,),
        *,
        device_id: int | None = None,
        devices: Iterable[str] | None = None,
        warmup: int = 3,
        runs: int = 10,
        protocol: MeasurementProtocol | dict[str, Any] | None = None,
    ) -> list[JobOut]:
        body: dict[str, Any] = {
            "model_id": model_id, "library": library, "threads": list(threads),
            "device_id": device_id, "warmup": warmup, "runs": runs,
        }
        if devices:
            body["devices"] = list(devices)
        if protocol is not None:
            body["protocol"] = MeasurementProtocol.model_validate(protocol).model_dump()
        return [JobOut.model_validate(j) for j in self.request("POST", "/jobs", json=body).json()]

    def devices(self) -> list[DeviceOut]:
        return [DeviceOut.model_validate(d) for d in self.request("GET", "/devices").json()]

    def list_jobs(
        self, status: str | None = None, ids: Iterable[int] | None = None,
        model_id: int | None = None,
    ) -> list[JobOut]:
        params: list[tuple[str, Any]] = []
        if status:
            params.append(("status", status))
        if model_id is not None:
            params.append(("model_id", model_id))
        ids = list(ids) if ids is not None else None
        if ids is not None:
            out: list[JobOut] = []
            for i in range(0, len(ids), 200):  # keep URLs short
                chunk = [("id", j) for j in ids[i:i + 200]]
                resp = self.request("GET", "/jobs", params=params + chunk)
                out += [JobOut.model_validate(j) for j in resp.json()]
            return out
        resp = self.request("GET", "/jobs", params=params)
        return [JobOut.model_validate(j) for j in resp.json()]

    def get_job(self, job_id: int) -> JobOut:
        return JobOut.model_validate(self.request("GET", f"/jobs/{job_id}").json())

    def wait_jobs(
        self,
        ids: Iterable[int],
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[list[JobOut]], None] | None = None,
        until: Callable[[JobOut], bool] | None = None,
    ) -> list[JobOut]:
        """Poll until every job is done or failed (or ``until(job)`` holds for each)."""
        ids = list(ids)
        cond = until or (lambda j: j.status in TERMINAL)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = self.list_jobs(ids=ids)
            if on_update:
                on_update(jobs)
            if all(cond(j) for j in jobs):
                return jobs
            if deadline is not None and time.monotonic() > deadline:
                states = ", ".join(f"{j.id}:{j.status}" for j in jobs)
                raise TimeoutError(f"jobs not finished after {timeout} s ({states})")
            time.sleep(poll)

    # -------------------------------------------------------------- agent side

    def register_agent(self, req: RegisterRequest | dict[str, Any]) -> RegisterResponse:
        body = req.model_dump() if isinstance(req, RegisterRequest) else req
        resp = self.request("POST", "/agents/register", json=body)
        return RegisterResponse.model_validate(resp.json())

    def heartbeat(self, job_id: int | None = None) -> HeartbeatResponse:
        resp = self.request("POST", "/agents/heartbeat", json={"job_id": job_id})
        return HeartbeatResponse.model_validate(resp.json())

    def lease(self, wait: float = 0.0) -> JobLease | None:
        resp = self.request("POST", "/agents/lease", params={"wait": wait},
                            timeout=wait + 30.0)
        if resp.status_code == 204:
            return None
        return JobLease.model_validate(resp.json())

    def post_result(
        self, job_id: int, lease_id: str, samples_ms: list[float],
        runtime_version: str = "test", env: dict[str, Any] | None = None,
    ) -> ResultOut:
        body = {"lease_id": lease_id, "samples_ms": samples_ms,
                "runtime_version": runtime_version, "env": env or {}}
        resp = self.request("POST", f"/jobs/{job_id}/result", json=body)
        return ResultOut.model_validate(resp.json())

    def post_failure(
        self, job_id: int, lease_id: str, error: str, retryable: bool = True
    ) -> JobOut:
        body = {"lease_id": lease_id, "error": error, "retryable": retryable}
        return JobOut.model_validate(self.request("POST", f"/jobs/{job_id}/fail", json=body).json())

    # -------------------------------------------------------------- results

    def results(self, **filters: Any) -> list[ResultOut]:
        params = {k: v for k, v in filters.items() if v is not None}
        return [ResultOut.model_validate(r)
                for r in self.request("GET", "/results", params=params).json()]

    def table(self) -> dict[str, Any]:
        return self.request("GET", "/results/table").json()

    def table_csv(self) -> str:
        return self.request("GET", "/results/table.csv").text
