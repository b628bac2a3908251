"""The client commands against a coordinator that is not there: one clear line, exit 2."""

from __future__ import annotations

import subprocess
import sys

from conftest import free_port


def test_unreachable_coordinator_gives_one_clear_error(tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used: the upload never gets a connection")
    for args in (["results"], ["submit", str(model)]):
        proc = subprocess.run(
            [sys.executable, "-m", "bnnbench.cli", *args, "--coordinator", url, "--token", "t"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert "cannot reach the coordinator" in proc.stderr
        assert "Traceback" not in proc.stderr
