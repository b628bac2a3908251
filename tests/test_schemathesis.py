"""Schemathesis against a real coordinator (issue 14): every operation of its OpenAPI schema
gets generated requests — valid ones (positive) and ones that break the schema (negative) —
a bounded, seeded number per operation, with the token each operation needs. No answer may
be a 5xx; the positive ones must also be documented status codes with bodies matching the
declared response schemas, and the negative ones must be refused with a 4xx.

The coordinator holds one model, one agent and a job that agent leased (so generated ids
meet real rows); it runs with conversions paused and a short long poll, so a generated
``POST /jobs`` does not start a TensorFlow conversion and a generated lease ``wait`` does not
hold the test. The upload (``POST /models``) is exercised like every operation,
but random bytes are never an ONNX model, so only its refusals are reached here:
tests/test_fuzz_inputs.py mutates real models and archives through it instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from conftest import make_tiny_onnx, wait_for
from helpers.campaign import module_coordinator
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from bnnbench.schemas import API_PREFIX, Endpoint

pytestmark = pytest.mark.slow

ADMIN = "schemathesis-admin-token"
EXAMPLES = 25  # per operation and generation mode
# the operations an agent's token is for; every other one gets the admin token
AGENT_PATHS = {
    API_PREFIX + p
    for p in (
        Endpoint.AGENT_HEARTBEAT,
        Endpoint.AGENT_LEASE,
        Endpoint.JOB_RESULT,
        Endpoint.JOB_FAILURE,
    )
}
CHECKS: dict[GenerationMode, list[Callable[..., Any]]] = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ],
    GenerationMode.NEGATIVE: [not_a_server_error, negative_data_rejection],
}

# the token is ours to send, not generated (a generated one is merely a 401); no undeclared
# query parameters: the API ignores unknown ones, as HTTP APIs do, which the negative check
# would call accepting invalid data
CONFIG = schemathesis.Config.from_dict(
    {"generation": {"with-security-parameters": False, "allow-extra-parameters": False}}
)


@dataclass
class Target:
    url: str
    admin: str
    agent: str
    log_tail: Callable[[int], str]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with module_coordinator(tmp_path_factory, ADMIN) as c:
        model = c.client.upload_model(make_tiny_onnx(tmp_path_factory.mktemp("st") / "m.onnx"))
        reg, agent = c.register_agent("fuzzed", runtimes={"native": "test-1"}, cores=4)
        c.client.create_jobs(model.id, "native", [1], runs=3, device_id=reg.device_id)
        wait_for(lambda: agent.lease(wait=2), timeout=120, what="the job's lease")
        # no conversions (a generated job for lce would run TensorFlow), short long polls
        c.restart(conversion_workers=0, long_poll_seconds=0.05, lease_seconds=600)
        yield Target(c.url, ADMIN, reg.token, c.log_tail)


def _run_operation(
    target: Target, operation: Any, mode: GenerationMode, session: requests.Session
) -> None:
    token = target.agent if operation.path in AGENT_PATHS else target.admin
    headers = {"Authorization": f"Bearer {token}"}

    # seeded (derandomize) and bounded; no shrinking: the first failing request is reported
    # as it was sent
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=target.url, session=session, headers=headers, timeout=60)
        case.validate_response(response, checks=CHECKS[mode], headers=headers)

    run()


def _with_inputs(spec: dict[str, Any]) -> set[str]:
    """Labels of the operations that take parameters or a body: the others have no invalid
    request to generate (their one input, the token, is sent by the test)."""
    return {
        f"{method.upper()} {path}"
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if op.get("parameters") or op.get("requestBody")
    }


def test_no_5xx_and_the_schema_holds_for_generated_requests(target: Target) -> None:
    started = time.monotonic()
    spec = httpx.get(f"{target.url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json", config=CONFIG, timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    # every route of the API is exercised, the upload and /metrics included
    assert f"POST {API_PREFIX}{Endpoint.MODELS}" in labels and "GET /metrics" in labels
    assert len(operations) >= 30, sorted(labels)
    with_inputs = _with_inputs(spec)
    assert f"POST {API_PREFIX}{Endpoint.JOBS}" in with_inputs
    failures, runs = [], 0
    session = requests.Session()  # one connection for all: no connect per request
    for op in operations:
        modes = [GenerationMode.POSITIVE]
        if op.label in with_inputs:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            runs += 1
            try:
                _run_operation(target, op, mode, session)
            except Exception as exc:  # every operation runs; all failures are reported
                failures.append(f"{op.label} ({mode.value}): {exc}"[:3000])
    session.close()
    assert not failures, "\n\n".join(failures)
    assert "unhandled error" not in target.log_tail(100_000)
    # the server is still healthy afterwards
    assert httpx.get(f"{target.url}/health", timeout=30).json()["status"] == "ok"
    print(
        f"{len(operations)} operations, {runs} runs of up to {EXAMPLES} examples: "
        f"{time.monotonic() - started:.1f} s"
    )
