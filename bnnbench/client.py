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
from typing import Any, TypeVar

from pydantic import BaseModel

from bnnbench.http import ApiError, HttpCore
from bnnbench.schemas import (
    ArtifactOut,
    DeviceOut,
    Endpoint,
    EnrolmentTokenCreate,
    EnrolmentTokenCreated,
    EnrolmentTokenOut,
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

S = TypeVar("S", bound=BaseModel)


class BnnbenchClient(HttpCore):
    """Typed calls on the HTTP core; ``retry=Retry(...)`` keeps trying through outages (the
    agent), without it the first failure raises (the CLI)."""

    def _one(self, schema: type[S], method: str, path: str, **kw: Any) -> S:
        """The call's answer as one ``schema``."""
        return schema.model_validate(self.call(method, path, **kw).json())

    def _many(self, schema: type[S], method: str, path: str, **kw: Any) -> list[S]:
        """The call's answer, a list, as ``schema`` items."""
        return [schema.model_validate(x) for x in self.call(method, path, **kw).json()]

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
        return self._one(ModelOut, "POST", Endpoint.MODELS, files={"file": file}, data=fields)

    def list_models(self) -> list[ModelOut]:
        return self._many(ModelOut, "GET", Endpoint.MODELS)

    def get_model(self, model_id: int) -> ModelOut:
        return self._one(ModelOut, "GET", Endpoint.MODEL.format(model_id=model_id))

    def model_artifacts(self, model_id: int) -> list[ArtifactOut]:
        return self._many(ArtifactOut, "GET", Endpoint.MODEL_ARTIFACTS.format(model_id=model_id))

    # -------------------------------------------------------------- artifacts

    def list_artifacts(self, status: str | None = None) -> list[ArtifactOut]:
        params = {"status": status} if status else None
        return self._many(ArtifactOut, "GET", Endpoint.ARTIFACTS, params=params)

    def get_artifact(self, artifact_id: int) -> ArtifactOut:
        return self._one(ArtifactOut, "GET", Endpoint.ARTIFACT.format(artifact_id=artifact_id))

    def retry_artifact(self, artifact_id: int) -> ArtifactOut:
        path = Endpoint.ARTIFACT_RETRY.format(artifact_id=artifact_id)
        return self._one(ArtifactOut, "POST", path)

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
        return self._many(JobOut, "POST", Endpoint.JOBS, json=body)

    def devices(self) -> list[DeviceOut]:
        return self._many(DeviceOut, "GET", Endpoint.DEVICES)

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
            return self._many(JobOut, "GET", Endpoint.JOBS, params=params)
        wanted = list(ids)
        out: list[JobOut] = []
        for i in range(0, len(wanted), 200):  # keep URLs short
            chunk = [("id", j) for j in wanted[i : i + 200]]
            out += self._many(JobOut, "GET", Endpoint.JOBS, params=params + chunk)
        return out

    def get_job(self, job_id: int) -> JobOut:
        return self._one(JobOut, "GET", Endpoint.JOB.format(job_id=job_id))

    def cancel_job(self, job_id: int) -> JobOut:
        """Waiting, queued or leased -> cancelled (409 otherwise)."""
        return self._one(JobOut, "POST", Endpoint.JOB_CANCEL.format(job_id=job_id))

    def retry_job(self, job_id: int) -> JobOut:
        """Failed or cancelled -> queued again, attempts reset (409 otherwise)."""
        return self._one(JobOut, "POST", Endpoint.JOB_RETRY.format(job_id=job_id))

    def rerun_job(self, job_id: int) -> JobOut:
        """A new job with the same model, artifact, device, threads and protocol."""
        return self._one(JobOut, "POST", Endpoint.JOB_RERUN.format(job_id=job_id))

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

    # -------------------------------------------------------------- enrolment tokens

    def create_enrolment_token(
        self,
        *,
        note: str | None = None,
        max_uses: int | None = None,
        expires_in_seconds: float | None = None,
    ) -> EnrolmentTokenCreated:
        """A token that may only register agents (admin); ``.token`` is shown this once."""
        body = EnrolmentTokenCreate(
            note=note, max_uses=max_uses, expires_in_seconds=expires_in_seconds
        ).model_dump(mode="json")
        return self._one(EnrolmentTokenCreated, "POST", Endpoint.ENROLMENT_TOKENS, json=body)

    def enrolment_tokens(self) -> list[EnrolmentTokenOut]:
        return self._many(EnrolmentTokenOut, "GET", Endpoint.ENROLMENT_TOKENS)

    def revoke_enrolment_token(self, token_id: int) -> EnrolmentTokenOut:
        path = Endpoint.ENROLMENT_TOKEN.format(token_id=token_id)
        return self._one(EnrolmentTokenOut, "DELETE", path)

    # -------------------------------------------------------------- agent side

    def register_agent(
        self, req: RegisterRequest | dict[str, Any], *, token: str | None = None
    ) -> RegisterResponse:
        """Register an agent; ``token``: the token to register with when this client holds
        another: an enrolment token (or the admin token), or the agent's own token to
        register itself again (same identity, same token)."""
        body = req.model_dump(mode="json") if isinstance(req, RegisterRequest) else req
        return self._one(RegisterResponse, "POST", Endpoint.AGENT_REGISTER, json=body, token=token)

    def heartbeat(self, job_id: int | None = None, *, retry: bool = True) -> HeartbeatResponse:
        """``retry=False``: one try; a periodic beat need not wait out an outage."""
        body = HeartbeatRequest(job_id=job_id).model_dump(mode="json")
        return self._one(
            HeartbeatResponse, "POST", Endpoint.AGENT_HEARTBEAT, json=body, retry=retry
        )

    def lease(self, wait: float = 0.0) -> JobLease | None:
        """A job to run, or None when none came within ``wait`` seconds (a long poll)."""
        resp = self.call(
            "POST", Endpoint.AGENT_LEASE, params={"wait": round(wait, 1)}, timeout=wait + 30.0
        )
        if resp.status_code == 204:
            return None
        return JobLease.model_validate(resp.json())

    def post_result(self, job_id: int, result: ResultIn) -> ResultOut:
        path, body = Endpoint.JOB_RESULT.format(job_id=job_id), result.model_dump(mode="json")
        return self._one(ResultOut, "POST", path, json=body)

    def post_failure(self, job_id: int, failure: JobFailure) -> JobOut:
        path, body = Endpoint.JOB_FAILURE.format(job_id=job_id), failure.model_dump(mode="json")
        return self._one(JobOut, "POST", path, json=body)

    # -------------------------------------------------------------- results

    def results(self, **filters: Any) -> list[ResultOut]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._many(ResultOut, "GET", Endpoint.RESULTS, params=params)

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
