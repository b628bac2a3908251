"""The model zoo: ResNet-18/34 (224×224, 1000 classes) and VGG-Small (32×32, 10 classes) in
FP32, BNN and ReActNet variants, written as ONNX the way ``torch.onnx.export`` (opset 13) would
write BiBench's models: module-path node names, initializers named after parameters, and the
binarization left as graph ops (``Sign`` on activations and on weights) rather than pre-folded,
so the converter's constant folding and pattern matching are exercised on realistic input.

Weights are random (fixed seed), Kaiming-scaled, with BatchNorm statistics chosen to match the
expected conv output scale so activations neither die nor all saturate. They are for timing and
conversion fidelity, not accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARCHS = ("resnet18", "resnet34", "vggsmall")
ALGORITHMS = ("fp32", "bnn", "react")
ARCH_NAMES = {"resnet18": "ResNet18", "resnet34": "ResNet34", "vggsmall": "VGG-Small"}
OPSET = 13
IR_VERSION = 8  # what torch emits for opset 13; keeps the files readable by older runtimes

_RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


@dataclass
class ZooEntry:
    arch: str
    algorithm: str
    path: Path
    size: int


class _GraphBuilder:
    """Accumulates nodes and initializers with torch-export-like names."""

    def __init__(
        self, algorithm: str, rng: np.random.Generator, binarize_downsample: bool = False
    ) -> None:
        from onnx import helper

        self.helper = helper
        self.algorithm = algorithm
        self.binarize_downsample = binarize_downsample
        self.rng = rng
        self.nodes: list = []
        self.inits: list = []
        self._counts: dict[str, int] = defaultdict(int)

    # -- naming / primitives
    def param(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], scope: str, **attrs) -> str:
        # torch names the k-th op of a type inside one module Op, Op_1, Op_2, ...
        key = f"{scope}/{op_type}"
        k = self._counts[key]
        self._counts[key] += 1
        name = key if k == 0 else f"{key}_{k}"
        out = f"{name}_output_0"
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, value: float, scope: str) -> str:
        from onnx import numpy_helper

        key = f"{scope}/Constant"
        k = self._counts[key]
        self._counts[key] += 1
        name = key if k == 0 else f"{key}_{k}"
        out = f"{name}_output_0"
        tensor = numpy_helper.from_array(np.array(value, np.float32))
        self.nodes.append(self.helper.make_node("Constant", [], [out], name=name, value=tensor))
        return out

    # -- layers
    @staticmethod
    def _scope(module: str) -> str:
        # torch names a Sequential child after its parent: layer1.0.downsample.0 ->
        # /layer1/layer1.0/downsample/downsample.0
        parts = module.split(".")
        segs = [f"{parts[i - 1]}.{p}" if p.isdigit() and i else p for i, p in enumerate(parts)]
        return "/" + "/".join(segs)

    def conv_fp(
        self, x: str, module: str, cin: int, cout: int, k: int, stride: int, pad: int, in_sq: float
    ) -> tuple[str, float]:
        fan_in = cin * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin, k, k))
        wname = self.param(f"{module}.weight", w)
        y = self.op(
            "Conv",
            [x, wname],
            self._scope(module),
            dilations=[1, 1],
            group=1,
            kernel_shape=[k, k],
            pads=[pad] * 4,
            strides=[stride, stride],
        )
        return y, fan_in * (2.0 / fan_in) * in_sq  # expected E[y²]

    def conv_bin(
        self, x: str, module: str, cin: int, cout: int, k: int, stride: int, pad: int
    ) -> tuple[str, float]:
        scope = self._scope(module)
        fan_in = cin * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin, k, k))
        wname = self.param(f"{module}.weight", w)
        if self.algorithm == "react":
            t = self.rng.normal(0.0, 0.2, (1, cin, 1, 1))
            tname = self.param(f"{module}.threshold", t)
            xa = self.op("Sign", [self.op("Sub", [x, tname], scope)], scope)
            alpha = self.op(
                "ReduceMean", [self.op("Abs", [wname], scope)], scope, axes=[1, 2, 3], keepdims=1
            )
            wb = self.op("Mul", [alpha, self.op("Sign", [wname], scope)], scope)
            scale_sq = float(np.mean(np.abs(w).mean(axis=(1, 2, 3)) ** 2))
        else:
            xa = self.op("Sign", [x], scope)
            wb = self.op("Sign", [wname], scope)
            scale_sq = 1.0
        y = self.op(
            "Conv",
            [xa, wb],
            scope,
            dilations=[1, 1],
            group=1,
            kernel_shape=[k, k],
            pads=[pad] * 4,
            strides=[stride, stride],
        )
        return y, fan_in * scale_sq  # ±1 inputs: E[y²] = fan_in·alpha²

    def bn(self, x: str, module: str, c: int, expected_sq: float) -> str:
        rng = self.rng
        std = float(np.sqrt(max(expected_sq, 1e-6)))
        gamma = self.param(f"{module}.weight", rng.uniform(0.5, 1.5, c))
        beta = self.param(f"{module}.bias", rng.normal(0.0, 0.2, c))
        mean = self.param(f"{module}.running_mean", rng.normal(0.0, 0.2 * std, c))
        var = self.param(f"{module}.running_var", (std**2) * rng.uniform(0.5, 2.0, c))
        return self.op(
            "BatchNormalization",
            [x, gamma, beta, mean, var],
            self._scope(module),
            epsilon=1e-5,
            momentum=0.9,
        )

    def hardtanh(self, x: str, module: str) -> str:
        scope = self._scope(module)
        # torch exports Hardtanh as Clip with its bounds as Constant inputs (opset ≥ 11)
        return self.op("Clip", [x, self.const(-1.0, scope), self.const(1.0, scope)], scope)

    def fc(self, x: str, module: str, fin: int, fout: int) -> str:
        w = self.param(f"{module}.weight", self.rng.normal(0.0, np.sqrt(1.0 / fin), (fout, fin)))
        b = self.param(f"{module}.bias", self.rng.normal(0.0, 0.01, fout))
        return self.op("Gemm", [x, w, b], self._scope(module), alpha=1.0, beta=1.0, transB=1)

    def conv(
        self,
        x: str,
        module: str,
        cin: int,
        cout: int,
        k: int,
        stride: int,
        pad: int,
        binary: bool,
        in_sq: float,
    ) -> tuple[str, float]:
        if binary and self.algorithm != "fp32":
            return self.conv_bin(x, module, cin, cout, k, stride, pad)
        return self.conv_fp(x, module, cin, cout, k, stride, pad, in_sq)


_ACT_SQ = 0.4  # rough E[x²] after a hardtanh fed by a unit-variance BN output


def _resnet(g: _GraphBuilder, x: str, arch: str) -> str:
    y, sq = g.conv(x, "conv1", 3, 64, 7, 2, 3, binary=False, in_sq=1.0)
    y = g.hardtanh(g.bn(y, "bn1", 64, sq), "act")
    y = g.op(
        "MaxPool",
        [y],
        "/maxpool",
        ceil_mode=0,
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        strides=[2, 2],
    )
    cin = 64
    for stage, (n_blocks, cout) in enumerate(
        zip(_RESNET_BLOCKS[arch], (64, 128, 256, 512), strict=True)
    ):
        for b in range(n_blocks):
            m = f"layer{stage + 1}.{b}"
            stride = 2 if (b == 0 and stage > 0) else 1
            h, sq = g.conv(y, f"{m}.conv1", cin, cout, 3, stride, 1, True, _ACT_SQ)
            h = g.hardtanh(g.bn(h, f"{m}.bn1", cout, sq), f"{m}.act")
            h, sq = g.conv(h, f"{m}.conv2", cout, cout, 3, 1, 1, True, _ACT_SQ)
            h = g.bn(h, f"{m}.bn2", cout, sq)
            shortcut = y
            if stride != 1 or cin != cout:
                # 1×1 downsample stays FP32 in BiBench's models (and most BNN recipes); the
                # paper's complexity count binarizes it, hence the option
                s, ssq = g.conv(
                    y, f"{m}.downsample.0", cin, cout, 1, stride, 0, g.binarize_downsample, _ACT_SQ
                )
                shortcut = g.bn(s, f"{m}.downsample.1", cout, ssq)
            h = g.op("Add", [h, shortcut], g._scope(m))
            y = g.hardtanh(h, f"{m}.act")
            cin = cout
    y = g.op("GlobalAveragePool", [y], "/avgpool")
    y = g.op("Flatten", [y], "", axis=1)
    return g.fc(y, "fc", 512, 1000)


def _vgg_small(g: _GraphBuilder, x: str) -> str:
    cfg: list[int | str] = [128, 128, "M", 256, 256, "M", 512, 512, "M"]
    cin, i, first = 3, 0, True
    y, sq_in = x, 1.0
    for v in cfg:
        if v == "M":
            y = g.op(
                "MaxPool",
                [y],
                f"/features/features.{i}",
                ceil_mode=0,
                kernel_shape=[2, 2],
                pads=[0, 0, 0, 0],
                strides=[2, 2],
            )
            i += 1
            continue
        assert isinstance(v, int)
        y, sq = g.conv(y, f"features.{i}", cin, v, 3, 1, 1, binary=not first, in_sq=sq_in)
        y = g.bn(y, f"features.{i + 1}", v, sq)
        y = g.hardtanh(y, f"features.{i + 2}")
        i += 3
        cin, first, sq_in = v, False, _ACT_SQ
    y = g.op("Flatten", [y], "", axis=1)
    return g.fc(y, "classifier", 512 * 4 * 4, 10)


def input_shape(arch: str) -> tuple[int, int, int, int]:
    return (1, 3, 32, 32) if arch == "vggsmall" else (1, 3, 224, 224)


def build_model(arch: str, algorithm: str, seed: int = 0, binarize_downsample: bool = False):
    """Return the ``onnx.ModelProto`` for one zoo entry.

    ``binarize_downsample`` also binarizes ResNet's 1×1 shortcut convs (not in the standard
    zoo; it reproduces the layer set behind the paper's theoretical numbers)."""
    from onnx import TensorProto, helper

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    # one seed per (arch) so the three variants share latent weights where shapes agree
    g = _GraphBuilder(
        algorithm, np.random.default_rng([seed, ARCHS.index(arch)]), binarize_downsample
    )
    out = _vgg_small(g, "input") if arch == "vggsmall" else _resnet(g, "input", arch)
    n_classes = 10 if arch == "vggsmall" else 1000
    # torch.onnx.export(output_names=["output"]) renames the last node's output
    assert g.nodes[-1].output[0] == out
    g.nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        g.nodes,
        f"{arch}_{algorithm}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape(arch)))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n_classes])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="bnnbench-zoo",
        producer_version=_version(),
        ir_version=IR_VERSION,
    )
    helper.set_model_props(
        model, {"bnnbench.arch": ARCH_NAMES[arch], "bnnbench.algorithm": algorithm}
    )
    return model


def _version() -> str:
    from bnnbench import __version__

    return __version__


def write_zoo(
    outdir: str | Path,
    archs: tuple[str, ...] = ARCHS,
    algorithms: tuple[str, ...] = ALGORITHMS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    binarize_downsample: bool = False,
) -> list[ZooEntry]:
    """Write every (arch, algorithm) model as ``{arch}_{algorithm}.onnx`` into ``outdir``.

    ``progress`` is called with each file name before it is built (the CLI drives a progress
    bar with it)."""
    import onnx

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    entries = []
    for arch in archs:
        for algorithm in algorithms:
            path = outdir / f"{arch}_{algorithm}.onnx"
            if progress is not None:
                progress(path.name)
            model = build_model(arch, algorithm, seed, binarize_downsample)
            onnx.checker.check_model(model)
            onnx.save(model, str(path))
            entries.append(ZooEntry(arch, algorithm, path, path.stat().st_size))
    return entries
