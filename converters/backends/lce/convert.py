"""IR → Larq Compute Engine ``.tflite``: the Keras model of keras.py through LCE's converter
(target arm), written atomically.

After conversion the flatbuffer's ``LceBconv2d`` ops are counted; a binary conv LCE did not
convert (it would run as a float conv) makes the conversion fail.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from converters import ir
from converters.backends.lce.keras import build_keras_model, import_tf, tensor_owner
from converters.backends.lce.padding import BconvPadding, plan_graph_padding
from converters.backends.tflite.flatbuffer import LCE_BCONV2D, TFLiteSummary, inspect_tflite
from converters.errors import ConversionError, UnsupportedModelError

CONVERTER_NAME = "bnnbench-converters/lce"
CONVERTER_VERSION = "0.1.0"


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"bnnbench": CONVERTER_VERSION}
    for dist in ("larq-compute-engine", "tensorflow", "tf-keras"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _concrete_function(model: Any) -> Any:
    """The model's forward pass traced once, with autograph off: Keras would otherwise
    rewrite every layer's Python source (≈15 s for VGG-Small, 30 s for ResNet-18); the layers
    are straight-line TF calls that need no conversion."""
    tf, _ = import_tf()
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False), autograph=False)
    return fn.get_concrete_function(spec)


def lce_flatbuffer(model: Any) -> bytes:
    """LCE's converter on the frozen graph of ``model`` (target arm, float in/out).

    This is the graph-def path of ``lce.convert_keras_model`` (what it falls back to when the
    SavedModel export fails, as it does for Lambda layers), fed with the autograph-free trace;
    if LCE's internals differ from 0.16's, the public entry point is used instead."""
    tf, _ = import_tf()
    import larq_compute_engine as lce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' trace-time chatter, not about the model
        tf.get_logger().setLevel("ERROR")
        try:
            from larq_compute_engine.mlir._tf_tfl_flatbuffer import (
                convert_graphdef_to_tflite_flatbuffer,
            )
            from tensorflow.core.framework.types_pb2 import DataType
            from tensorflow.lite.python.util import get_tensor_name
            from tensorflow.python.framework.convert_to_constants import (
                convert_variables_to_constants_v2,
            )
        except ImportError:
            return bytes(
                lce.convert_keras_model(
                    model,
                    inference_input_type=tf.float32,
                    inference_output_type=tf.float32,
                    target="arm",
                )
            )
        frozen = convert_variables_to_constants_v2(
            _concrete_function(model), lower_control_flow=False
        )
        inputs = [t for t in frozen.inputs if t.dtype != tf.dtypes.resource]
        return bytes(
            convert_graphdef_to_tflite_flatbuffer(
                frozen.graph.as_graph_def().SerializeToString(),
                [get_tensor_name(t) for t in inputs],
                [DataType.Name(t.dtype.as_datatype_enum) for t in inputs],
                [t.shape.as_list() for t in inputs],
                [get_tensor_name(t) for t in frozen.outputs],
                False,  # no training-time quantization ops: float model
                "arm",
                None,
            )
        )


def check_bconv_count(graph: ir.Graph, flatbuffer: bytes | TFLiteSummary) -> int:
    """Raise :class:`UnsupportedModelError` unless every binary conv became ``LceBconv2d``.

    A binary conv that LCE did not match stays a float ``CONV_2D``: correct numbers, but no
    binary kernel, so its timings would be reported as binary ones wrongly."""
    summary = flatbuffer if isinstance(flatbuffer, TFLiteSummary) else inspect_tflite(flatbuffer)
    bins = graph.binary_convs()
    got = summary.count(LCE_BCONV2D)
    if got == len(bins):
        return got
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    converted = {
        tensor_owner(nm, outputs_only=False)
        for o in summary.operators
        if o.op == LCE_BCONV2D
        for nm in o.output_names
    }
    missing = [n.name for n in bins if index[id(n)] not in converted]
    if len(missing) != len(bins) - got:  # names unavailable: report the count only
        missing = missing or ["(names not recoverable from the flatbuffer)"]
    k = len(bins) - got
    raise UnsupportedModelError(
        f"{k} of {len(bins)} binarized convs were not converted to {LCE_BCONV2D}: "
        f"{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}"
        if k > 0
        else f"the flatbuffer has {got} {LCE_BCONV2D} ops for {len(bins)} binarized convs"
    )


def release(model: Any) -> None:
    """Drop Keras' global graph state: a conversion worker converts many models in one
    process."""
    del model
    _, keras = import_tf()
    keras.backend.clear_session()


def write_atomic(data: bytes, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)  # never a half-written artifact under the final name
    finally:
        tmp.unlink(missing_ok=True)
    return out


def artifact_summary(
    library: str,
    graph: ir.Graph,
    data: bytes,
    out: Path,
    meta: dict,
    fb: TFLiteSummary,
    padding: str,
    plans: list[BconvPadding],
) -> dict[str, Any]:
    n_, c, h, w = (int(d) for d in graph.input_shape)
    return {
        "library": library,
        "output": str(out),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "n_binary_convs": len(graph.binary_convs()),
        "n_lce_bconv2d": fb.count(LCE_BCONV2D),
        # what padded taps of binary convs contribute: 0 as in PyTorch ("zero"), or +1
        "padding_mode": "zero" if padding == "exact" else "one",
        "padding": [asdict(p) for p in plans],
        "op_counts": fb.op_counts,
        "custom_ops": fb.custom_ops,
        "input_shape": [n_, h, w, c],
        "input_layout": "NHWC",
        "output_shape": fb.output_shapes[0] if fb.output_shapes else [],
        "converter": CONVERTER_NAME,
        "converter_versions": versions(),
        "metadata": dict(meta),
    }


def convert_lce(
    graph: ir.Graph,
    out_path: str | Path,
    meta: dict,
    *,
    padding: str = "exact",
    binary_activation: str = "where",
) -> dict[str, Any]:
    """Convert the IR with LCE's converter (target arm) and write the ``.tflite`` atomically.

    FP32 graphs go through the same converter (plain TFLite ops, no LCE ops), so a binary
    model and its FP32 baseline share one toolchain. ``binary_activation`` is "where" (the
    default), "larq_sign" (larq's other recognised form) or "sign" (plain ``tf.sign``, which
    LCE does not recognise: only useful to see the bconv count check refuse it)."""
    plans = plan_graph_padding(graph, padding)
    model = build_keras_model(graph, padding, binary_activation)
    try:
        data = lce_flatbuffer(model)
    except ConversionError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConversionError(f"LCE converter failed: {type(exc).__name__}: {first}") from exc
    finally:
        release(model)
    fb = inspect_tflite(data)
    check_bconv_count(graph, fb)
    out = write_atomic(data, out_path)
    return artifact_summary("lce", graph, data, out, meta, fb, padding, plans)


def convert(graph: ir.Graph, out_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The back-end entry point (converters/backends/__init__.py)."""
    summary = convert_lce(graph, out_path, meta)
    summary.pop("output", None)  # the caller names the final file
    return summary
