"""Shared fixtures: a real coordinator (uvicorn in a subprocess, SQLite file in a temp dir) and
tiny ONNX models.

``coordinator_factory(**settings)`` starts a server and returns a :class:`CoordinatorProcess`;
keyword arguments become ``BNNBENCH_<NAME>`` environment variables of the server process (any
``CoordinatorSettings`` field: ``lease_seconds=2``, ``max_upload_bytes=10_000``,
``max_attempts=2``, ``conversion_workers=0`` ...). ``coordinator`` is one started with the
test defaults below. Every server is stopped at teardown (terminate, then kill; the process
group is killed too, so no converter process outlives it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from helpers.postgres import PostgresServer, postgres_server, unavailable

from bnnbench.client import BnnbenchClient
from bnnbench.schemas import JobLease, RegisterResponse, ResultIn

if TYPE_CHECKING:
    from helpers.agents import AgentProcess

REPO = Path(__file__).resolve().parent.parent

# `python -m coordinator` is `bnnbench serve` (the same command function) without the other
# parts' CLI modules: half a second of CPU less per start. `bnnbench serve` itself runs in
# test_security (its refusals) and in `make demo`.
SERVE_CMD = [sys.executable, "-m", "coordinator"]

# the admin token of the test coordinators: the coordinator refuses to start with one that is
# shorter than 16 characters or a placeholder (coordinator.auth.admin_token_problem)
ADMIN_TOKEN = "test-admin-token"

TEST_SETTINGS: dict[str, Any] = {
    "lease_seconds": 3,
    "reaper_interval_seconds": 0.5,
    "conversion_poll_seconds": 0.5,
    "long_poll_seconds": 10,
    "max_attempts": 3,
    # real agents share this machine's cores with the server and each other: noisy samples
    # are expected and most tests are not about them; tests of re-measuring turn it on
    "max_remeasures": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def result_for(lease: JobLease, samples_ms: list[float], runtime_version: str = "test") -> ResultIn:
    """A result for ``lease`` with these samples (what a test agent posts)."""
    return ResultIn(lease_id=lease.lease_id, samples_ms=samples_ms, runtime_version=runtime_version)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    what: str = "condition",
    context: Callable[[], str] = lambda: "",
    poll: float = 0.1,
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); a deadline, not a
    timing assertion: it only bounds a hang. ``context`` adds diagnostics (logs) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = context()
            raise TimeoutError(
                f"{what} not reached within {timeout} s" + (f"\n{extra}" if extra else "")
            )
        time.sleep(poll)


class CoordinatorProcess:
    """A coordinator server in a subprocess; ``start``/``stop``/``restart`` keep the data dir
    and port."""

    def __init__(self, data_dir: Path, settings: dict[str, Any], admin_token: str) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / "bnnbench.db"
        self.log_path = data_dir / "server.log"
        self.admin_token = admin_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = dict(settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: BnnbenchClient | None = None
        self._clients: list[BnnbenchClient] = []

    # ---------------------------------------------------------------- lifecycle

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BNNBENCH_")}
        env.update({f"BNNBENCH_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["BNNBENCH_ADMIN_TOKEN"] = self.admin_token
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
        return env

    def start(self, timeout: float = 60.0, **settings: Any) -> CoordinatorProcess:
        """Start (again); ``settings`` update the overrides for this and later starts."""
        if self.running:
            raise RuntimeError("coordinator already running")
        self.settings.update(settings)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *SERVE_CMD,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "info",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: converter children die with it
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"coordinator exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"coordinator not healthy after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """Graceful stop (SIGTERM), SIGKILL if it hangs; returns the exit code."""
        for c in self._clients:
            c.close()
        self._clients.clear()
        self._client = None
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers in its group, if any
        return proc.returncode

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the server, no shutdown code runs."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.stop()

    def restart(self, **settings: Any) -> CoordinatorProcess:
        self.stop()
        return self.start(**settings)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # ---------------------------------------------------------------- helpers

    @property
    def client(self) -> BnnbenchClient:
        """A client with the admin token (recreated after a restart)."""
        if self._client is None:
            self._client = self.make_client(self.admin_token)
        return self._client

    def make_client(self, token: str) -> BnnbenchClient:
        c = BnnbenchClient(self.url, token)
        self._clients.append(c)
        return c

    def register_agent(
        self, name: str = "agent", runtimes: dict[str, str] | None = None, **device: Any
    ) -> tuple[RegisterResponse, BnnbenchClient]:
        """Register an agent (device fields overridable); returns it and a client with its
        token."""
        dev = {
            "hostname": f"host-{name}",
            "arch": "x86_64",
            "os": "Linux test",
            "cpu_model": "Test CPU",
            "cores": 2,
            "isa_flags": [],
            "transport": "local",
        }
        dev.update(device)
        reg = self.client.register_agent(
            {"name": name, "device": dev, "runtimes": runtimes or {"native": "test-1"}}
        )
        return reg, self.make_client(reg.token)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the server's SQLite file directly (what is really stored); a statement that
        changes rows is committed (a state the API cannot make, e.g. one an older version
        left)."""
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            with con:
                return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def blob_files(self) -> list[Path]:
        return sorted(p for p in (self.data_dir / "blobs").glob("??/*") if p.is_file())

    def tmp_files(self) -> list[Path]:
        tmp = self.data_dir / "tmp"
        return sorted(tmp.iterdir()) if tmp.is_dir() else []


@pytest.fixture
def coordinator_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., CoordinatorProcess]]:
    started: list[CoordinatorProcess] = []

    def make(admin_token: str = ADMIN_TOKEN, **settings: Any) -> CoordinatorProcess:
        data_dir = tmp_path_factory.mktemp("coordinator")
        proc = CoordinatorProcess(data_dir, {**TEST_SETTINGS, **settings}, admin_token)
        started.append(proc)
        return proc.start()

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def coordinator(coordinator_factory: Callable[..., CoordinatorProcess]) -> CoordinatorProcess:
    return coordinator_factory()


# ------------------------------------------------------------------ tiny ONNX models


def make_tiny_onnx(
    path: str | Path,
    algorithm: str = "bnn",
    seed: int = 0,
    *,
    arch: str = "TinyVGG",
    extra_op: str | None = None,
) -> Path:
    """A small VGG-like model shaped like a torch export: FP32 stem conv, two binary convs
    (``Conv(Sign(x), Sign(W))``, ``Sign(x - t)`` for react) with BatchNorm + Hardtanh (Clip),
    max-pool, Gemm. Input 1×3×8×8, 10 classes. ``extra_op`` inserts a unary node of that type
    after the stem (an op the converters do not support makes an "unsupported model")."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []

    def param(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"{name}_output_0"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def bn(x: str, m: str, c: int, scale: float) -> str:
        return node(
            "BatchNormalization",
            [
                x,
                param(f"{m}.weight", rng.uniform(0.5, 1.5, c)),
                param(f"{m}.bias", rng.normal(0, 0.2, c)),
                param(f"{m}.running_mean", rng.normal(0, 0.2 * scale, c)),
                param(f"{m}.running_var", scale**2 * rng.uniform(0.5, 2.0, c)),
            ],
            f"/{m}/BatchNormalization",
            epsilon=1e-5,
            momentum=0.9,
        )

    def hardtanh(x: str, m: str) -> str:
        lo = param(f"{m}.min", np.array(-1.0))
        hi = param(f"{m}.max", np.array(1.0))
        return node("Clip", [x, lo, hi], f"/{m}/Clip")

    def conv(x: str, m: str, cin: int, cout: int, binary: bool) -> tuple[str, float]:
        w = param(f"{m}.weight", rng.normal(0, np.sqrt(2.0 / (cin * 9)), (cout, cin, 3, 3)))
        if binary and algorithm != "fp32":
            if algorithm == "react":
                t = param(f"{m}.threshold", rng.normal(0, 0.2, (1, cin, 1, 1)))
                x = node("Sub", [x, t], f"/{m}/Sub")
            x = node("Sign", [x], f"/{m}/Sign")
            w = node("Sign", [w], f"/{m}/Sign_1")
            scale = float(np.sqrt(cin * 9))
        else:
            scale = 1.0
        y = node(
            "Conv",
            [x, w],
            f"/{m}/Conv",
            dilations=[1, 1],
            group=1,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        )
        return y, scale

    y, s = conv("input", "features.0", 3, 8, binary=False)
    y = hardtanh(bn(y, "features.1", 8, s), "features.2")
    if extra_op:
        y = node(extra_op, [y], f"/features.2/{extra_op}")
    y, s = conv(y, "features.3", 8, 16, binary=True)
    y = hardtanh(bn(y, "features.4", 16, s), "features.5")
    y, s = conv(y, "features.6", 16, 16, binary=True)
    y = hardtanh(bn(y, "features.7", 16, s), "features.8")
    y = node(
        "MaxPool",
        [y],
        "/features.9/MaxPool",
        kernel_shape=[2, 2],
        strides=[2, 2],
        pads=[0, 0, 0, 0],
        ceil_mode=0,
    )
    y = node("Flatten", [y], "/Flatten", axis=1)
    w = param("classifier.weight", rng.normal(0, 0.1, (10, 16 * 4 * 4)))
    b = param("classifier.bias", rng.normal(0, 0.01, 10))
    nodes.append(
        helper.make_node(
            "Gemm", [y, w, b], ["output"], name="/classifier/Gemm", alpha=1.0, beta=1.0, transB=1
        )
    )
    graph = helper.make_graph(
        nodes,
        f"tiny_{algorithm}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="bnnbench-tests",
        ir_version=8,
    )
    helper.set_model_props(model, {"bnnbench.arch": arch, "bnnbench.algorithm": algorithm})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    """A tiny valid binarized (BNN) ONNX model file."""
    return make_tiny_onnx(tmp_path / "tiny_bnn.onnx", "bnn")


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    from helpers.agents import AgentProcess  # not at the top: helpers import this module

    def make(
        coord: Any,
        name: str,
        *extra: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
    ) -> AgentProcess:
        a = AgentProcess(
            coord.url,
            coord.admin_token if token is None else token,
            name,
            tmp_path,
            *extra,
            env=env,
        )
        started.append(a)
        return a.start()

    yield make
    for a in started:
        a.stop()


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All nine zoo models (ResNet-18/34, VGG-Small x FP32/BNN/ReAct), written once per
    session."""
    from converters.zoo import write_zoo

    d = tmp_path_factory.mktemp("zoo")
    write_zoo(d)
    return d


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the module (tests/helpers/postgres.py); where the
    server binaries or psycopg are missing the test fails, saying what to install."""
    why = unavailable()
    if why:
        pytest.fail(why)
    with postgres_server() as server:
        yield server


# ------------------------------------------------------------------ parallel runs (xdist)

# `make test` runs the files on three workers with ``--dist loadfile``: a file stays whole on
# one worker (its module fixtures are built once). It builds the library, the CLIs (host,
# aarch64, armv7) and the ASan objects first, so the tests' own make calls are no-ops and two
# workers never compile into one build folder (the cross test binaries have their own).


EMULATOR = "qemu-aarch64-static"  # the exec wrapper of the emulated boards in the fleet tests


@pytest.fixture(scope="session")
def arm_clis() -> Path:
    """The static aarch64/armv7 CLIs the agent pushes to boards (built here when missing) and
    the tools the fleet tests drive; ``make test`` installs them (``make system-deps``)."""
    native = Path(__file__).resolve().parents[1] / "native"
    proc = subprocess.run(
        ["make", "-C", str(native), "-j2", "cross-deps", "cross", "all"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for tool, package in ((EMULATOR, "qemu-user-static"), ("adb", "adb")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing (Debian package {package}; make test installs it)")
    return native / "build"
