"""``BnnbenchClient``: the coordinator's REST API as typed methods, for the CLI, the agent,
scripts and tests (the one place a caller names an endpoint: ``schemas.Endpoint``).

Construct it with the admin token for user operations (upload, jobs, results) or with an
agent's token for the agent side (register, heartbeat, lease, result, failure, download).
Errors raise :class:`bnnbench.http.ApiError` with the server's ``detail`` message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bnnbench.http import ApiError, HttpCore
from bnnbench.schemas import (
    ArtifactOut,
    DeviceOut,
    Endpoint,
    HeartbeatRequest,
    HeartbeatResponse,
    JobFailure,
    JobLease,
    JobOut,
    MeasurementProtocol,
    ModelOut,
    RegisterRequest,
    RegisterResponse,
    ResultIn,
    ResultOut,
)

TERMINAL = ("done", "failed", "cancelled")


class BnnbenchClient(HttpCore):
    """Typed calls on the HTTP core; ``retry=Retry(...)`` keeps trying through outages (the
    agent), without it the first failure raises (the CLI)."""

    def health(self) -> dict[str, Any]:
        return self.call("GET", Endpoint.HEALTH).json()

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
        fields = {
            k: v for k, v in {"name": name, "arch": arch, "algorithm": algorithm}.items() if v
        }
        resp = self.call("POST", Endpoint.MODELS, files={"file": file}, data=fields)
        return ModelOut.model_validate(resp.json())

    def list_models(self) -> list[ModelOut]:
        return [ModelOut.model_validate(m) for m in self.call("GET", Endpoint.MODELS).json()]

    def get_model(self, model_id: int) -> ModelOut:
        resp = self.call("GET", Endpoint.MODEL.format(model_id=model_id))
        return ModelOut.model_validate(resp.json())

    def model_artifacts(self, model_id: int) -> list[ArtifactOut]:
        resp = self.call("GET", Endpoint.MODEL_ARTIFACTS.format(model_id=model_id))
        return [ArtifactOut.model_validate(a) for a in resp.json()]

    # -------------------------------------------------------------- artifacts

    def list_artifacts(self, status: str | None = None) -> list[ArtifactOut]:
        params = {"status": status} if status else None
        resp = self.call("GET", Endpoint.ARTIFACTS, params=params)
        return [ArtifactOut.model_validate(a) for a in resp.json()]

    def get_artifact(self, artifact_id: int) -> ArtifactOut:
        resp = self.call("GET", Endpoint.ARTIFACT.format(artifact_id=artifact_id))
        return ArtifactOut.model_validate(resp.json())

    def retry_artifact(self, artifact_id: int) -> ArtifactOut:
        resp = self.call("POST", Endpoint.ARTIFACT_RETRY.format(artifact_id=artifact_id))
        return ArtifactOut.model_validate(resp.json())

    def download_artifact(self, artifact_id: int, dest: str | Path) -> str:
        """Writes the artifact to ``dest``; returns the sha256 the server announced after
        checking it against the bytes received."""
        with open(dest, "wb") as f:
            got = self.download(Endpoint.ARTIFACT_DOWNLOAD.format(artifact_id=artifact_id), f)
        if got.sha256 != got.announced:
            raise ApiError(200, f"sha256 mismatch: got {got.sha256}, header {got.announced}")
        return got.announced

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
            "model_id": model_id,
            "library": library,
            "threads": list(threads),
            "device_id": device_id,
            "warmup": warmup,
            "runs": runs,
        }
        if devices:
            body["devices"] = list(devices)
        if protocol is not None:
            body["protocol"] = MeasurementProtocol.model_validate(protocol).model_dump()
        resp = self.call("POST", Endpoint.JOBS, json=body)
        return [JobOut.model_validate(j) for j in resp.json()]

    def devices(self) -> list[DeviceOut]:
        return [DeviceOut.model_validate(d) for d in self.call("GET", Endpoint.DEVICES).json()]

    def list_jobs(
        self,
        status: str | None = None,
        ids: Iterable[int] | None = None,
        model_id: int | None = None,
    ) -> list[JobOut]:
        params: list[tuple[str, Any]] = []
        if status:
            params.append(("status", status))
        if model_id is not None:
            params.append(("model_id", model_id))
        if ids is None:
            resp = self.call("GET", Endpoint.JOBS, params=params)
            return [JobOut.model_validate(j) for j in resp.json()]
        wanted = list(ids)
        out: list[JobOut] = []
        for i in range(0, len(wanted), 200):  # keep URLs short
            chunk = [("id", j) for j in wanted[i : i + 200]]
            resp = self.call("GET", Endpoint.JOBS, params=params + chunk)
            out += [JobOut.model_validate(j) for j in resp.json()]
        return out

    def get_job(self, job_id: int) -> JobOut:
        return JobOut.model_validate(self.call("GET", Endpoint.JOB.format(job_id=job_id)).json())

    def cancel_job(self, job_id: int) -> JobOut:
        """Waiting, queued or leased -> cancelled (409 otherwise)."""
        resp = self.call("POST", Endpoint.JOB_CANCEL.format(job_id=job_id))
        return JobOut.model_validate(resp.json())

    def retry_job(self, job_id: int) -> JobOut:
        """Failed or cancelled -> queued again, attempts reset (409 otherwise)."""
        resp = self.call("POST", Endpoint.JOB_RETRY.format(job_id=job_id))
        return JobOut.model_validate(resp.json())

    def rerun_job(self, job_id: int) -> JobOut:
        """A new job with the same model, artifact, device, threads and protocol."""
        resp = self.call("POST", Endpoint.JOB_RERUN.format(job_id=job_id))
        return JobOut.model_validate(resp.json())

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

    def register_agent(
        self, req: RegisterRequest | dict[str, Any], *, token: str | None = None
    ) -> RegisterResponse:
        """Enrol an agent; ``token``: the enrolment (admin) token when this client holds
        another (an agent registering again)."""
        body = req.model_dump(mode="json") if isinstance(req, RegisterRequest) else req
        resp = self.call("POST", Endpoint.AGENT_REGISTER, json=body, token=token)
        return RegisterResponse.model_validate(resp.json())

    def heartbeat(self, job_id: int | None = None, *, retry: bool = True) -> HeartbeatResponse:
        """``retry=False``: one try; a periodic beat need not wait out an outage."""
        body = HeartbeatRequest(job_id=job_id).model_dump(mode="json")
        resp = self.call("POST", Endpoint.AGENT_HEARTBEAT, json=body, retry=retry)
        return HeartbeatResponse.model_validate(resp.json())

    def lease(self, wait: float = 0.0) -> JobLease | None:
        """A job to run, or None when none came within ``wait`` seconds (a long poll)."""
        resp = self.call(
            "POST", Endpoint.AGENT_LEASE, params={"wait": round(wait, 1)}, timeout=wait + 30.0
        )
        if resp.status_code == 204:
            return None
        return JobLease.model_validate(resp.json())

    def post_result(self, job_id: int, result: ResultIn) -> ResultOut:
        resp = self.call(
            "POST", Endpoint.JOB_RESULT.format(job_id=job_id), json=result.model_dump(mode="json")
        )
        return ResultOut.model_validate(resp.json())

    def post_failure(self, job_id: int, failure: JobFailure) -> JobOut:
        resp = self.call(
            "POST", Endpoint.JOB_FAILURE.format(job_id=job_id), json=failure.model_dump(mode="json")
        )
        return JobOut.model_validate(resp.json())

    # -------------------------------------------------------------- results

    def results(self, **filters: Any) -> list[ResultOut]:
        params = {k: v for k, v in filters.items() if v is not None}
        resp = self.call("GET", Endpoint.RESULTS, params=params)
        return [ResultOut.model_validate(r) for r in resp.json()]

    def table(self, reference: bool = False) -> dict[str, Any]:
        """The hardware-track table; ``reference`` adds the paper's rows and figures."""
        return self.call("GET", Endpoint.RESULTS_TABLE, params=_ref(reference)).json()

    def table_csv(self, reference: bool = False) -> str:
        return self.call("GET", Endpoint.RESULTS_TABLE_CSV, params=_ref(reference)).text

    def table_markdown(self, reference: bool = False) -> str:
        return self.call("GET", Endpoint.RESULTS_TABLE_MD, params=_ref(reference)).text

    def table_latex(self, reference: bool = False) -> str:
        return self.call("GET", Endpoint.RESULTS_TABLE_TEX, params=_ref(reference)).text

    def plot(self, kind: str, fmt: str = "png") -> bytes:
        """A chart of the results (``coordinator.plots.KINDS``) as PNG or SVG bytes."""
        return self.call("GET", Endpoint.RESULTS_PLOT.format(kind=kind, fmt=fmt)).content

    def compare(
        self,
        a: str,
        b: str,
        *,
        alpha: float | None = None,
        resamples: int | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Two selectors' cells side by side with a significance test (bnnbench.compare)."""
        extra = {"alpha": alpha, "resamples": resamples, "seed": seed}
        params = {"a": a, "b": b, **{k: v for k, v in extra.items() if v is not None}}
        return self.call("GET", Endpoint.RESULTS_COMPARE, params=params).json()


def _ref(reference: bool) -> dict[str, str]:
    return {"reference": "true"} if reference else {}
