"""Helpers shared by the converter, zoo and fidelity tests: the zoo written once per session,
and a small builder for hand-made ONNX graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

_ZOO: dict[str, Path] = {}


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All nine zoo models, written once per session (imported by several test modules)."""
    if "dir" not in _ZOO:
        from converters.zoo import write_zoo

        d = tmp_path_factory.mktemp("zoo")
        write_zoo(d)
        _ZOO["dir"] = d
    return _ZOO["dir"]


class OnnxBuilder:
    """Tiny graph builder: ``b.node(op, inputs, **attrs)`` returns the output name."""

    def __init__(self, in_shape: list[int | str], opset: int = 13) -> None:
        self.in_shape = in_shape
        self.opset = opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def init(self, value: Any, name: str | None = None, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        self._n += 1
        name = name or f"p{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], name: str | None = None, n_out: int = 1,
             **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        name = name or f"/{op}_{self._n}"
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0]

    def model(self, output: str, props: dict[str, str] | None = None,
              out_shape: list[int] | None = None) -> Any:
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, "test",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, self.in_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                              ir_version=8)
        if props:
            helper.set_model_props(m, props)
        # the checker wants a shape on graph outputs: let shape inference fill it in
        return onnx.shape_inference.infer_shapes(m, data_prop=True)

    def save(self, path: Path, output: str, props: dict[str, str] | None = None,
             out_shape: list[int] | None = None) -> Path:
        import onnx

        onnx.save(self.model(output, props, out_shape), str(path))
        return path


def ort_run(model_or_path: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    src = model_or_path if isinstance(model_or_path, str | Path) else (
        model_or_path.SerializeToString()
    )
    sess = ort.InferenceSession(str(src) if isinstance(src, Path) else src,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
