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


def make_slow_onnx(path: Path) -> Path:
    """FP32 conv net 1×64×56×56 → 2× (Conv 3×3 + Relu) → GAP → Gemm, as a torch export: tens
    of ms per inference, so a run of a few seconds has a sane number of samples."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    c = 64
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.05, (c, c, 3, 3)).astype("f4"), "conv1.weight"),
        numpy_helper.from_array(rng.normal(0, 0.05, (c, c, 3, 3)).astype("f4"), "conv2.weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10, c)).astype("f4"), "fc.weight"),
        numpy_helper.from_array(np.zeros(10, "f4"), "fc.bias"),
    ]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight"], ["c1"], name="/conv1/Conv", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "conv2.weight"], ["c2"], name="/conv2/Conv", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="/Flatten", axis=1),
        helper.make_node(
            "Gemm", ["flat", "fc.weight", "fc.bias"], ["output"], name="/fc/Gemm", transB=1
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "slow_fp32",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, 56, 56])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))
    return path
