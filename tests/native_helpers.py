"""Test helpers for the native engine: a numpy reference of FORMAT.md and model builders.

The reference runs NCHW in numpy, independent of the C code's layouts and tiling. Float ops
that the engine computes in a fixed float32 order (affine, clip, add, max pool, binary conv
epilogue) are done the same way here, so their results match exactly; convolutions, GEMM
and average pools are summed in float64 and compared with a tolerance.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from native import format as F

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"


def make_native(*targets: str) -> None:
    """Build native targets (incremental), failing the test with make's output if it breaks."""
    proc = subprocess.run(
        ["make", "-C", str(NATIVE), *targets], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"make {' '.join(targets)} failed:\n{proc.stdout}\n{proc.stderr}"


def sign(v: np.ndarray) -> np.ndarray:
    """FORMAT.md sign: +1 for v >= 0 (so sign(0) = +1), -1 otherwise."""
    return np.where(v >= 0, 1.0, -1.0)


def _pad(x: np.ndarray, pads: F.Pads, value: float = 0.0) -> np.ndarray:
    t, left, b, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(N, C, H, W) padded -> (N, C, OH, OW, kh, kw) strided windows."""
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return win[:, :, ::sh, ::sw]


def conv2d(x: np.ndarray, w: np.ndarray, strides: tuple[int, int], pads: F.Pads) -> np.ndarray:
    """Plain float64 cross-correlation with zero padding, NCHW x OIHW."""
    _, _, kh, kw = w.shape
    win = _windows(_pad(x.astype(np.float64), pads), kh, kw, *strides)
    return np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64), optimize=True)


class Reference:
    """Runs a NativeModel in numpy. ``margins`` records, per binary conv, the smallest
    |x - threshold| it saw: a test asserts it is far above float rounding, so a sign can
    never flip between engine and reference because of summation order upstream."""

    def __init__(self, model: F.NativeModel) -> None:
        self.model = model
        self.margins: list[float] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        vals: dict[int, np.ndarray] = {self.model.input_id: x.astype(np.float32)}
        for layer in self.model.layers:
            ins = [vals[i] for i in layer.inputs]
            vals[layer.output] = self.layer(layer, *ins).astype(np.float32)
        return vals[self.model.output_id]

    def layer(self, layer: F.Layer, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        f32 = np.float32
        if isinstance(layer, F.Conv2dF32):
            out = conv2d(x, layer.weight, layer.strides, layer.pads)
            if layer.bias is not None:
                out += layer.bias.astype(np.float64)[None, :, None, None]
            return out
        if isinstance(layer, F.Conv2dBin):
            v = (
                x - layer.threshold.astype(f32)[None, :, None, None]
                if layer.threshold is not None
                else x
            )
            self.margins.append(float(np.abs(v).min()))
            dot = conv2d(sign(v), layer.weight_sign, layer.strides, layer.pads)  # exact ints
            o = layer.weight_sign.shape[0]
            scale = np.ones(o, f32) if layer.scale is None else layer.scale.astype(f32)
            bias = np.zeros(o, f32) if layer.bias is None else layer.bias.astype(f32)
            # float32 multiply then add, as the engine does: bit-identical results
            return scale[None, :, None, None] * dot.astype(f32) + bias[None, :, None, None]
        if isinstance(layer, F.Affine):
            shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
            return x * layer.scale.astype(f32).reshape(shape) + layer.bias.astype(f32).reshape(
                shape
            )
        if isinstance(layer, F.Clip):
            return np.minimum(np.maximum(x, f32(layer.min)), f32(layer.max))
        if isinstance(layer, F.MaxPool):
            win = _windows(_pad(x, layer.pads, -np.inf), *layer.kernel, *layer.strides)
            return win.max(axis=(4, 5))
        if isinstance(layer, F.AvgPool):
            kh, kw = layer.kernel
            total = _windows(_pad(x.astype(np.float64), layer.pads), kh, kw, *layer.strides)
            total = total.sum(axis=(4, 5))
            if layer.count_include_pad:
                return total / (kh * kw)
            ones = np.ones((1, 1) + x.shape[2:])
            count = _windows(_pad(ones, layer.pads), kh, kw, *layer.strides).sum(axis=(4, 5))
            return total / count
        if isinstance(layer, F.GlobalAvgPool):
            return x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
        if isinstance(layer, F.Add):
            assert y is not None
            return x + y
        if isinstance(layer, F.Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(layer, F.Gemm):
            out = x.reshape(x.shape[0], -1).astype(np.float64) @ layer.weight.astype(np.float64).T
            if layer.bias is not None:
                out += layer.bias
            return out
        raise TypeError(type(layer).__name__)


# ---------------------------------------------------------------- model builders


def rand_sign(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)


def rand_f32(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def input_for(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random input without exact zeros (sign(0) differs between ONNX and this format)."""
    x = rand_f32(rng, shape)
    x[x == 0] = 0.5
    return x


def small_network(
    rng: np.random.Generator, c: int = 5, hw: int = 9, batch: int = 1
) -> F.NativeModel:
    """A ReActNet-shaped toy: FP32 stem, BN, binary blocks with thresholds, scale/bias and a
    residual add, pools, flatten and a classifier. Uses every op of the format."""
    c2 = 2 * c + 1
    layers: list[F.Layer] = [
        F.Conv2dF32(
            [0],
            1,
            weight=rand_f32(rng, (c, 3, 3, 3), 0.5),
            bias=rand_f32(rng, (c,)),
            strides=(1, 1),
            pads=(1, 1, 1, 1),
            name="stem",
        ),
        F.Affine([1], 2, scale=rand_f32(rng, (c,)), bias=rand_f32(rng, (c,)), name="bn0"),
        F.Clip([2], 3, min=-1.0, max=1.0, name="hardtanh"),
        F.Conv2dBin(
            [3],
            4,
            weight_sign=rand_sign(rng, (c, c, 3, 3)),
            threshold=rand_f32(rng, (c,), 0.1),
            scale=rand_f32(rng, (c,), 0.1),
            bias=rand_f32(rng, (c,)),
            pads=(1, 1, 1, 1),
            name="block1.conv",
        ),
        F.Add([4, 3], 5, name="block1.add"),
        F.MaxPool([5], 6, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), name="pool"),
        F.Conv2dBin(
            [6],
            7,
            weight_sign=rand_sign(rng, (c2, c, 3, 3)),
            threshold=rand_f32(rng, (c,), 0.1),
            scale=rand_f32(rng, (c2,), 0.1),
            bias=rand_f32(rng, (c2,)),
            strides=(2, 2),
            pads=(1, 1, 1, 1),
            name="block2.conv",
        ),
        F.AvgPool(
            [6],
            8,
            kernel=(2, 2),
            strides=(2, 2),
            pads=(0, 0, 1, 1),
            count_include_pad=False,
            name="block2.down.pool",
        ),
        F.Conv2dF32([8], 9, weight=rand_f32(rng, (c2, c, 1, 1)), name="block2.down.conv"),
        F.Add([7, 9], 10, name="block2.add"),
        F.Clip([10], 11, min=0.0, max=float("inf"), name="relu"),
        F.GlobalAvgPool([11], 12, name="gap"),
        F.Flatten([12], 13, name="flatten"),
        F.Gemm([13], 14, weight=rand_f32(rng, (7, c2)), bias=rand_f32(rng, (7,)), name="fc"),
    ]
    return F.NativeModel(
        (batch, 3, hw, hw),
        layers,
        n_values=15,
        output_id=14,
        metadata={"source": "tests", "padding": "zero"},
    )
