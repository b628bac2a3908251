"""The converters on what ``torch.onnx.export`` really writes.

A session fixture runs ``tools/export_torch_models.py`` in the separate torch venv
(``.venv-torch``, made by ``tools/torch_env.sh`` when missing: the main venv pins onnx 1.17,
which the dynamo exporter's onnxscript cannot use). It exports BiBench-style ResNet-18/34 and
VGG-Small in fp32/bnn/react, written the way research code writes binarization (STE autograd
functions, ``(sign(x) − x).detach() + x``, ReActNet's polynomial STE and weight scaling), with
the TorchScript exporter (opset 13) and the dynamo exporter (opset 18, weights in
``.onnx.data``), plus a few small special cases. Exports are cached under
``var/torch-exports/<hash of the two tools scripts>``, so they run once per machine.

Every model must be analysed with the right binary conv count and converted to a ``.bnn`` that
passes the onnxruntime fidelity check; archives (zip/tar of an export with external data) must
convert the same way, and unsafe archives must be refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import make_tiny_onnx

from bnnbench.digest import sha256_file
from converters import api
from converters.errors import MalformedModelError, UnsupportedModelError
from converters.frontend import (
    archive_kind,
    check_model_archive,
    external_data_locations,
    extract_model_archive,
    load_onnx,
    model_file,
)
from native import format as nf

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ENV_SCRIPT = REPO / "tools" / "torch_env.sh"
EXPORT_SCRIPT = REPO / "tools" / "export_torch_models.py"
TORCH_PYTHON = REPO / ".venv-torch" / "bin" / "python"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnnbench"

ARCHS = ("resnet18", "resnet34", "vggsmall")
ALGORITHMS = ("fp32", "bnn", "react")
EXPORTERS = ("torchscript", "dynamo")
MAIN_MODELS = [f"{a}_{g}_{e}" for a in ARCHS for g in ALGORITHMS for e in EXPORTERS]
BINARY_CONVS = {"resnet18": 16, "resnet34": 32, "vggsmall": 5}
ALL_CONVS = {"resnet18": 20, "resnet34": 36, "vggsmall": 6}
EXTRA_CONVERT = ["extra_functions_torchscript", "extra_minmax_torchscript", "extra_minmax_dynamo"]
EXTRA_REFUSE = [
    "extra_mean_nokeep_torchscript",
    "extra_mean_nokeep_dynamo",
    "extra_sign_pool_torchscript",
    "extra_sign_pool_dynamo",
]
EXTRA_ZERO = ["extra_zero_weight_torchscript", "extra_zero_weight_dynamo"]


def _export_key() -> str:
    h = hashlib.sha256()
    for p in (ENV_SCRIPT, EXPORT_SCRIPT):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def exports() -> tuple[Path, dict[str, dict[str, Any]]]:
    """(directory, manifest entries by name) of the torch exports, made once per machine and
    kept outside the clone (``$XDG_CACHE_HOME/bnnbench``), keyed by the scripts' hash."""
    root = CACHE / "torch-exports"
    out = root / _export_key()
    root.mkdir(parents=True, exist_ok=True)
    # one exporter at a time (xdist workers, two sessions): the others wait, then find it
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").is_file():
            _export(root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    return out, {e["name"]: e for e in manifest["models"]}


def _export(root: Path, out: Path) -> None:
    """Export every model into ``out`` (under the lock); exports of older scripts go."""
    for stale in root.iterdir():  # exports of older scripts (~0.9 GB each)
        if stale.is_dir() and stale.name != out.name:
            shutil.rmtree(stale, ignore_errors=True)
    log = root / "export.log"
    tmp = root / f"{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with open(log, "w") as f:
        # creates .venv-torch when missing; a no-op when it is installed
        env_rc = subprocess.run(
            ["bash", str(ENV_SCRIPT)], stdout=f, stderr=subprocess.STDOUT, timeout=1800
        ).returncode
        rc = (
            env_rc
            or subprocess.run(
                [str(TORCH_PYTHON), str(EXPORT_SCRIPT), str(tmp), "--jobs", "2"],
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=1800,
            ).returncode
        )
    if rc:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"torch export failed (rc {rc}), see {log}:\n{tail}")
    shutil.rmtree(out, ignore_errors=True)  # a partial one, without its manifest
    os.replace(tmp, out)


def _model(exports: tuple[Path, dict], name: str) -> tuple[Path, dict[str, Any]]:
    d, entries = exports
    assert name in entries, f"{name} missing from the export manifest"
    return d / entries[name]["file"], entries[name]


# ----------------------------------------------------------------------------- the exports


def test_exports_are_what_each_exporter_writes(exports: tuple[Path, dict]) -> None:
    d, entries = exports
    assert sorted(n for n, e in entries.items() if e["kind"] == "main") == sorted(MAIN_MODELS)
    for name in MAIN_MODELS:
        path, e = _model(exports, name)
        m = onnx.load(str(path), load_external_data=False)
        opset = next(i.version for i in m.opset_import if i.domain in ("", "ai.onnx"))
        external = [
            t.name for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        ]
        if e["exporter"] == "dynamo":
            assert opset >= 18
            # the weights really are in the .onnx.data file beside the model
            assert (d / f"{path.name}.data").is_file(), name
            assert external, name
        else:
            assert opset == 13
            assert not external, name
            # TorchScript exports keep a symbolic batch dim (dynamic_axes)
            assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


# ----------------------------------------------------------------------------- 18 models


@pytest.mark.parametrize("name", MAIN_MODELS)
def test_export_analyzes_and_converts(
    exports: tuple[Path, dict], name: str, tmp_path: Path
) -> None:
    path, e = _model(exports, name)
    arch, algo = e["arch"], e["algorithm"]
    expected_bin = 0 if algo == "fp32" else BINARY_CONVS[arch]
    assert e["expected_binary_convs"] == expected_bin

    report = api.analyze(path)
    assert report["n_binary_convs"] == expected_bin
    assert report["n_convs"] == ALL_CONVS[arch]
    # no bnnbench metadata in a torch export: the algorithm is inferred from the graph, so
    # "react" here means every binary conv's threshold was recognised
    assert report["algorithm"] == algo

    out = tmp_path / f"{name}.bnn"
    summary = api.convert(path, "native", out)
    assert summary["n_binary_convs"] == expected_bin
    fid = summary["fidelity"]
    assert fid["passed"], fid["verdict"]
    assert fid["layerwise"]["checked"] > 0 and not fid["layerwise"]["failed"]
    assert fid["top1_agreement"] == 1.0
    model = nf.loads(out.read_bytes())
    bins = [la for la in model.layers if isinstance(la, nf.Conv2dBin)]
    assert len(bins) == expected_bin
    assert sum(la.threshold is not None for la in bins) == (expected_bin if algo == "react" else 0)
    assert model.input_shape == tuple(e["input_shape"])


# ----------------------------------------------------------------------------- LCE, daBNN

# a subset, for time: VGG-Small has the unfolded BatchNorm after MaxPool (an affine whose Add
# LCE fuses with the next Clip), ResNet-18 the residual structure
LCE_MODELS = [f"vggsmall_{g}_{e}" for g in ALGORITHMS for e in EXPORTERS] + [
    f"resnet18_bnn_{e}" for e in EXPORTERS
]
DABNN_MODELS = [f"resnet18_{g}_{e}" for g in ("bnn", "fp32") for e in EXPORTERS] + [
    f"vggsmall_bnn_{e}" for e in EXPORTERS
]


def _converted(exports: tuple[Path, dict], name: str, library: str, out: Path) -> dict[str, Any]:
    """Export ``name`` converted for ``library`` and verified on one input: every binary conv
    of the export converted, and the fidelity check passed."""
    path, e = _model(exports, name)
    summary = api.convert(path, library, out, verify_inputs=1)
    assert summary["n_binary_convs"] == e["expected_binary_convs"]
    assert summary["fidelity"]["passed"], summary["fidelity"]["verdict"]
    return summary


@pytest.mark.parametrize("name", LCE_MODELS)
def test_export_converts_to_lce_and_verifies(
    exports: tuple[Path, dict], name: str, tmp_path: Path
) -> None:
    summary = _converted(exports, name, "lce", tmp_path / "m.tflite")
    assert summary["n_lce_bconv2d"] == summary["n_binary_convs"]
    lw = summary["fidelity"]["layerwise"]
    assert lw["checked"] > 0 and not lw["failed"]
    assert lw["checked"] + len(lw["no_own_tensor"]) == summary["n_layers"]


@pytest.mark.parametrize("name", DABNN_MODELS)
def test_export_converts_to_dabnn_and_verifies(
    exports: tuple[Path, dict], name: str, tmp_path: Path
) -> None:
    _converted(exports, name, "dabnn", tmp_path / "m.dab")


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_react_export_is_refused_by_dabnn_naming_the_node(
    exports: tuple[Path, dict], exporter: str, tmp_path: Path
) -> None:
    path, _ = _model(exports, f"vggsmall_react_{exporter}")
    node_names = {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}
    with pytest.raises(UnsupportedModelError, match="threshold") as err:
        api.convert(path, "dabnn", tmp_path / "m.dab")
    assert err.value.node in node_names
    assert not (tmp_path / "m.dab").exists()


# ----------------------------------------------------------------------------- special cases


@pytest.mark.parametrize("name", EXTRA_CONVERT)
def test_extra_forms_convert(exports: tuple[Path, dict], name: str, tmp_path: Path) -> None:
    path, e = _model(exports, name)
    if e["variant"] == "functions":
        assert len(onnx.load(str(path), load_external_data=False).functions) > 0
    if name == "extra_minmax_torchscript":
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert {"Min", "Max", "MatMul"} <= ops
    summary = api.convert(path, "native", tmp_path / "m.bnn")
    assert summary["n_binary_convs"] == e["expected_binary_convs"]
    assert summary["fidelity"]["passed"], summary["fidelity"]["verdict"]
    assert summary["fidelity"]["layerwise"]["checked"] > 0


@pytest.mark.parametrize("name", EXTRA_ZERO)
def test_exact_zero_binary_weight_converts_with_a_note_and_fails_fidelity(
    exports: tuple[Path, dict], name: str, tmp_path: Path
) -> None:
    path, e = _model(exports, name)
    report = api.analyze(path)
    assert report["n_binary_convs"] == 2
    notes = [n["why"] for n in report["nodes"] if "exactly 0" in n.get("why", "")]
    assert len(notes) == 1 and "1 weight(s)" in notes[0]
    summary = api.convert(path, "native", tmp_path / "m.bnn")
    # Sign(0) = 0 in the ONNX model, +1 in the engine: the layer-wise check names that layer
    fid = summary["fidelity"]
    assert not fid["passed"]
    zero_layer = next(n["name"] for n in report["nodes"] if "exactly 0" in n.get("why", ""))
    assert fid["layerwise"]["failed"] == [zero_layer]


@pytest.mark.parametrize("name", EXTRA_REFUSE)
def test_unsupported_exports_are_refused_naming_the_node(
    exports: tuple[Path, dict], name: str, tmp_path: Path
) -> None:
    path, e = _model(exports, name)
    node_names = {n.name for n in onnx.load(str(path)).graph.node}
    with pytest.raises(UnsupportedModelError) as err:
        api.convert(path, "native", tmp_path / "m.bnn")
    assert e["expect_detail"] in str(err.value)
    assert err.value.node in node_names
    assert not (tmp_path / "m.bnn").exists()


# ----------------------------------------------------------------------------- archives


def _zip(path: Path, members: dict[str, Path | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for arc, src in members.items():
            if isinstance(src, bytes):
                # a ZipInfo keeps the name as given ("/abs", "../x"), as a hostile tool would
                zf.writestr(zipfile.ZipInfo(arc), src)
            else:
                zf.write(src, arc)
    return path


def _bin_layers(data: bytes) -> list[tuple[str, bytes]]:
    return [
        (la.name, la.weight_sign.tobytes() + la.scale.tobytes() + la.bias.tobytes())
        for la in nf.loads(data).layers
        if isinstance(la, nf.Conv2dBin)
    ]


def test_zip_of_dynamo_export_with_external_data_converts(
    exports: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = _model(exports, "resnet18_react_dynamo")
    data = path.with_name(path.name + ".data")
    # in a folder, with the macOS resource-fork copies Finder adds
    archive = _zip(
        tmp_path / "upload.bin",
        {
            f"export/{path.name}": path,
            f"export/{data.name}": data,
            f"__MACOSX/export/._{path.name}": b"\x00\x05\x16\x07junk",
        },
    )
    assert archive_kind(archive) == "zip"
    report = api.analyze(archive)
    assert report["n_binary_convs"] == 16 and report["algorithm"] == "react"
    summary = api.convert(archive, "native", tmp_path / "r18.bnn")
    assert summary["fidelity"]["passed"], summary["fidelity"]["verdict"]
    assert summary["source_sha256"] == sha256_file(archive)
    direct = api.convert(path, "native", tmp_path / "direct.bnn", verify=False)
    # same network as converting the unpacked files (metadata names the source, so compare
    # the binary layers)
    zipped = (tmp_path / "r18.bnn").read_bytes()
    assert _bin_layers(zipped) == _bin_layers((tmp_path / "direct.bnn").read_bytes())
    assert nf.loads(zipped).metadata["source_sha256"] == sha256_file(archive)
    assert direct["n_layers"] == summary["n_layers"]


def test_tar_gz_of_dynamo_export_converts(exports: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = _model(exports, "vggsmall_bnn_dynamo")
    archive = tmp_path / "vgg.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(path, path.name)
        tf.add(path.with_name(path.name + ".data"), path.name + ".data")
    assert archive_kind(archive) == "tar"
    summary = api.convert(archive, "native", tmp_path / "vgg.bnn")
    assert summary["n_binary_convs"] == 5
    assert summary["fidelity"]["passed"], summary["fidelity"]["verdict"]


def test_dynamo_export_without_its_data_file_is_refused_clearly(
    exports: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = _model(exports, "vggsmall_fp32_dynamo")
    assert external_data_locations(path) == [f"{path.name}.data"]
    assert external_data_locations(_model(exports, "vggsmall_fp32_torchscript")[0]) == []
    alone = tmp_path / path.name
    shutil.copy(path, alone)
    with pytest.raises(
        MalformedModelError,
        match=r"external data file .*\.onnx\.data.* not "
        r"found next to the model",
    ):
        api.analyze(alone)
    archive = _zip(tmp_path / "alone.zip", {path.name: path})
    with pytest.raises(MalformedModelError, match="not found next to the model"):
        api.convert(archive, "native", tmp_path / "x.bnn")


def test_path_traversal_archives_are_refused(tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "src" / "tiny.onnx")
    work = tmp_path / "work"
    work.mkdir()
    cases = {}
    blob = model.read_bytes()
    cases["zip_dotdot"] = _zip(work / "a.zip", {"tiny.onnx": model, "../escaped.onnx": blob})
    cases["zip_abs"] = _zip(work / "b.zip", {"/tmp/abs_escaped.onnx": blob})
    for name, member in (("tar_dotdot", "sub/../../escaped.onnx"), ("tar_abs", "/escaped.onnx")):
        p = work / f"{name}.tar"
        with tarfile.open(p, "w") as tf:
            info = tarfile.TarInfo(member)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
        cases[name] = p
    link = work / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tf:
        tf.add(model, "tiny.onnx")
        info = tarfile.TarInfo("tiny.onnx.data")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    cases["tar_symlink"] = link
    for name, archive in cases.items():
        with pytest.raises(MalformedModelError, match="unsafe member path|is a link") as err:
            api.convert(archive, "native", work / f"{name}.bnn")
        assert "refused" in str(err.value), name
        with pytest.raises(MalformedModelError):
            api.analyze(archive)
        with pytest.raises(MalformedModelError, match="unsafe member path|is a link"):
            check_model_archive(archive)  # the upload-time check, from the listing alone
        assert not (work / f"{name}.bnn").exists()
    assert not (tmp_path / "escaped.onnx").exists() and not (work.parent / "escaped.onnx").exists()
    assert not Path("/tmp/abs_escaped.onnx").exists() and not Path("/escaped.onnx").exists()


def test_archive_limits_and_contents(tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    # the size cap: declared sizes (zip listing), bytes really written (tar extraction)
    big = _zip(tmp_path / "big.zip", {"tiny.onnx": model, "pad.bin": bytes(4 << 20)})
    with pytest.raises(MalformedModelError, match="declares more than the limit"):
        extract_model_archive(big, tmp_path / "out1", max_bytes=1 << 20)
    big_tar = tmp_path / "big.tar.gz"
    with tarfile.open(big_tar, "w:gz") as tf:
        tf.add(model, "tiny.onnx")
        info = tarfile.TarInfo("pad.bin")
        info.size = 4 << 20
        tf.addfile(info, io.BytesIO(bytes(4 << 20)))
    with pytest.raises(MalformedModelError, match="unpacks to more than the limit"):
        extract_model_archive(big_tar, tmp_path / "out2", max_bytes=1 << 20)
    with pytest.raises(MalformedModelError, match="more than the limit"):
        check_model_archive(big, max_bytes=1 << 20)
    two = _zip(tmp_path / "two.zip", {"a.onnx": model, "b/b.onnx": model})
    with pytest.raises(MalformedModelError, match="exactly one .onnx file.*holds 2"):
        api.analyze(two)
    none = _zip(tmp_path / "none.zip", {"readme.txt": b"hello"})
    with pytest.raises(MalformedModelError, match="holds 0"):
        api.analyze(none)
    gz_not_tar = tmp_path / "m.onnx.gz"
    import gzip

    gz_not_tar.write_bytes(gzip.compress(model.read_bytes()))
    with pytest.raises(MalformedModelError, match="unreadable tar archive"):
        api.analyze(gz_not_tar)
    # a plain model goes through untouched, and an archive's temp dir is gone afterwards
    with model_file(model) as p:
        assert p == model
    ok = _zip(tmp_path / "ok.zip", {"m/tiny.onnx": model})
    assert check_model_archive(ok) == "m/tiny.onnx"
    with model_file(ok) as p:
        assert p.name == "tiny.onnx" and p.is_file()
        unpacked = p.parent
    assert not unpacked.exists()
    a = load_onnx(ok)
    b = load_onnx(model)
    assert a.SerializeToString() == b.SerializeToString()
    assert np.isfinite(api.analyze(ok)["theoretical"]["om"])
