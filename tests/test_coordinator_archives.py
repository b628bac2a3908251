"""Models whose weights live in external data files travel as a zip/tar through the API."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, wait_for
from helpers.campaign import module_coordinator

from bnnbench.http import ApiError


def _external_data_model(tmp_path: Path) -> tuple[Path, Path]:
    src = make_tiny_onnx(tmp_path / "src.onnx", "bnn")
    model = onnx.load(str(src))
    out = tmp_path / "tiny_ext.onnx"
    onnx.save_model(
        model,
        str(out),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="tiny_ext.onnx.data",
        size_threshold=0,
    )
    data = tmp_path / "tiny_ext.onnx.data"
    assert data.stat().st_size > 0
    return out, data


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """One coordinator for the module: the refusals compare the blobs stored before and after."""
    with module_coordinator(tmp_path_factory, "test-admin-token") as c:
        yield c


def test_zip_with_external_data_converts(coordinator: CoordinatorProcess, tmp_path: Path) -> None:
    onnx_path, data_path = _external_data_model(tmp_path)
    archive = tmp_path / "tiny_ext.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(onnx_path, onnx_path.name)
        z.write(data_path, data_path.name)
    c = coordinator
    m = c.client.upload_model(archive)
    jobs = c.client.create_jobs(m.id, "native", [1], warmup=0, runs=2)
    art = c.client.wait_artifact(jobs[0].artifact_id)
    assert art.status == "ready", art.error
    assert art.report["n_binary_convs"] == 2
    model = wait_for(
        lambda: (x := c.client.get_model(m.id)).analysis_status == "done" and x, what="analysis"
    )
    assert model.analysis["n_binary_convs"] == 2


def test_plain_onnx_with_external_data_is_refused(
    coordinator: CoordinatorProcess, tmp_path: Path
) -> None:
    onnx_path, _ = _external_data_model(tmp_path)
    blobs = coordinator.blob_files()
    with pytest.raises(ApiError) as err:
        coordinator.client.upload_model(onnx_path)
    assert err.value.status_code == 422
    assert "upload a .zip or .tar" in err.value.detail
    assert coordinator.blob_files() == blobs  # nothing half-stored


def test_archive_with_path_traversal_is_refused(
    coordinator: CoordinatorProcess, tmp_path: Path
) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", "bnn")
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as t:
        t.add(model, "m.onnx")
        info = tarfile.TarInfo("../../escape.onnx.data")
        payload = b"x" * 16
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    blobs = coordinator.blob_files()
    with pytest.raises(ApiError) as err:
        coordinator.client.upload_model(archive)
    assert err.value.status_code == 422
    assert "archive" in err.value.detail
    assert coordinator.blob_files() == blobs
