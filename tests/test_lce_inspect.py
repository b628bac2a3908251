"""LCE back end without TensorFlow: the flatbuffer reader and the padding plans."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from converters import ir
from converters.backends.lce.padding import axis_pads, plan_bconv_padding
from converters.backends.tflite.flatbuffer import (
    BUILTIN_NAMES,
    TFLiteFormatError,
    inspect_tflite,
)
from converters.errors import UnsupportedModelError


def _schema():
    """The TFLite schema module shipped with LCE, loaded by path: importing the package
    would import TensorFlow."""
    spec = importlib.util.find_spec("larq_compute_engine")
    assert spec is not None and spec.submodule_search_locations
    path = f"{list(spec.submodule_search_locations)[0]}/mlir/python/tflite_schema.py"
    mod_spec = importlib.util.spec_from_file_location("_lce_tflite_schema", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_builtin_names_match_the_schema() -> None:
    ops = _schema().BuiltinOperator
    for code, name in BUILTIN_NAMES.items():
        assert getattr(ops, name) == code, name


def test_rejects_what_is_not_a_tflite_flatbuffer() -> None:
    with pytest.raises(TFLiteFormatError, match="TFL3"):
        inspect_tflite(b"\x08\x00\x00\x00ONNX" + bytes(64))
    with pytest.raises(TFLiteFormatError):
        inspect_tflite(b"")


def test_truncated_flatbuffer_is_an_error_not_a_crash() -> None:
    # a root offset pointing past the end of the buffer
    data = np.uint32(4096).tobytes() + b"TFL3" + bytes(16)
    with pytest.raises(TFLiteFormatError, match="out of bounds"):
        inspect_tflite(data)


# ----------------------------------------------------------------------------- padding plans


def _binconv(
    c: int, hw: tuple[int, int], stride: int, pads: tuple[int, int, int, int], k: int = 3
) -> tuple[ir.BinConv, tuple[int, ...]]:
    in_shape = (1, c, *hw)
    oh, ow = ir.conv_out_hw(hw[0], hw[1], (k, k), (stride, stride), pads)
    n = ir.BinConv(
        "/conv",
        ["x"],
        "y",
        (1, 8, oh, ow),
        weight_sign=np.ones((8, c, k, k), np.int8),
        strides=(stride, stride),
        pads=pads,
    )
    return n, in_shape


def test_axis_pads_trims_unread_rows_and_knows_tf_same() -> None:
    # PyTorch stride 2, pad 1, 3×3 on 56: reads one padded row on top, none at the bottom;
    # TF SAME pads (0, 1)
    a = axis_pads(56, 3, 2, 1, 28)
    assert (a.before, a.after, a.same) == (1, 0, (0, 1))
    # stride 1, pad 1: both read, equal to SAME
    a = axis_pads(32, 3, 1, 1, 32)
    assert (a.before, a.after, a.same) == (1, 1, (1, 1))
    # odd size with stride 2: PyTorch (1, 1) is TF SAME
    a = axis_pads(7, 3, 2, 1, 4)
    assert (a.before, a.after, a.same) == (1, 1, (1, 1))


@pytest.mark.parametrize(
    ("hw", "stride", "pads", "mapping", "flip"),
    [
        ((32, 32), 1, (1, 1, 1, 1), "same-zero", (False, False)),
        ((56, 56), 2, (1, 1, 1, 1), "same-zero-mirrored", (True, True)),
        ((7, 7), 2, (1, 1, 1, 1), "same-zero", (False, False)),
        ((56, 7), 2, (1, 1, 1, 1), "same-zero-mirrored", (True, False)),
        ((8, 8), 1, (0, 0, 0, 0), "valid", (False, False)),
    ],
)
def test_exact_plans(
    hw: tuple[int, int],
    stride: int,
    pads: tuple[int, int, int, int],
    mapping: str,
    flip: tuple[bool, bool],
) -> None:
    n, in_shape = _binconv(64, hw, stride, pads)
    plan = plan_bconv_padding(n, in_shape, "exact")
    assert (plan.mapping, plan.flip, plan.exact) == (mapping, flip, True)


def test_exact_mode_refuses_pads_it_cannot_express() -> None:
    n, in_shape = _binconv(64, (16, 16), 1, (2, 2, 2, 2))  # 3×3 with pad 2: not SAME
    with pytest.raises(UnsupportedModelError, match="neither TF SAME nor mirrored SAME"):
        plan_bconv_padding(n, in_shape, "exact")
    plan = plan_bconv_padding(n, in_shape, "one")
    assert (plan.mapping, plan.exact, plan.read_pads) == ("explicit-one", False, (2, 2, 2, 2))


def test_one_mode_plans() -> None:
    n, in_shape = _binconv(64, (32, 32), 1, (1, 1, 1, 1))
    assert plan_bconv_padding(n, in_shape, "one").mapping == "same-one"
    n, in_shape = _binconv(64, (56, 56), 2, (1, 1, 1, 1))
    plan = plan_bconv_padding(n, in_shape, "one")
    # the unread bottom/right pad is dropped: an untrimmed (1, 1) pad is what LCE would
    # wrongly fuse into TF SAME (0, 1)
    assert (plan.mapping, plan.read_pads) == ("explicit-one", (1, 1, 0, 0))
