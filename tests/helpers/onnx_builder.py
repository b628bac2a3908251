"""A small builder for hand-made ONNX graphs and an onnxruntime runner, shared by the
converter, zoo, LCE and fidelity tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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

    def batchnorm(
        self,
        x: str,
        rng: np.random.Generator,
        c: int,
        name: str | None = None,
        mean_std: float = 0.2,
        var_range: tuple[float, float] = (0.5, 2.0),
    ) -> str:
        """BatchNormalization over ``c`` channels, gamma, beta, mean and var drawn from ``rng``
        in that order."""
        gamma, beta = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c)
        mean, var = rng.normal(0, mean_std, c), rng.uniform(*var_range, c)
        params = [self.init(v) for v in (gamma, beta, mean, var)]
        return self.node("BatchNormalization", [x, *params], name=name, epsilon=1e-5)

    def node(
        self, op: str, inputs: list[str], name: str | None = None, n_out: int = 1, **attrs: Any
    ) -> str:
        from onnx import helper

        self._n += 1
        name = name or f"/{op}_{self._n}"
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0]

    def model(
        self, output: str, props: dict[str, str] | None = None, out_shape: list[int] | None = None
    ) -> Any:
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes,
            "test",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, self.in_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        m = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=8
        )
        if props:
            helper.set_model_props(m, props)
        # the checker wants a shape on graph outputs: let shape inference fill it in
        return onnx.shape_inference.infer_shapes(m, data_prop=True)

    def save(
        self,
        path: Path,
        output: str,
        props: dict[str, str] | None = None,
        out_shape: list[int] | None = None,
    ) -> Path:
        import onnx

        onnx.save(self.model(output, props, out_shape), str(path))
        return path


def ort_run(model_or_path: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    src = (
        model_or_path
        if isinstance(model_or_path, str | Path)
        else (model_or_path.SerializeToString())
    )
    sess = ort.InferenceSession(
        str(src) if isinstance(src, Path) else src, providers=["CPUExecutionProvider"]
    )
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
