"""Test helpers for the native engine: the numpy reference of FORMAT.md and model builders.

The reference (converters/reference.py, on the operators of converters/numpy_ops.py) runs NCHW
in numpy, independent of the C code's layouts and tiling. Float ops that the engine computes
in a fixed float32 order (affine, clip, add, max pool, binary conv epilogue) are done the same
way there, so their results match exactly; convolutions, GEMM and average pools are summed in
float64 and compared with a tolerance.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from converters import reference
from native import format as F

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"


def make_native(*targets: str) -> None:
    """Build native targets (incremental), failing the test with make's output if it breaks."""
    proc = subprocess.run(
        ["make", "-C", str(NATIVE), *targets], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"make {' '.join(targets)} failed:\n{proc.stdout}\n{proc.stderr}"


class Reference:
    """Runs a NativeModel with converters.reference. ``margins`` records, per binary conv, the
    smallest |x - threshold| it saw: a test asserts it is far above float rounding, so a sign
    can never flip between engine and reference because of summation order upstream."""

    def __init__(self, model: F.NativeModel) -> None:
        self.model = model
        self.margins: list[float] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        values = reference.run_values(self.model, x)
        for layer in self.model.layers:
            if isinstance(layer, F.Conv2dBin):
                v = values[layer.inputs[0]]
                if layer.threshold is not None:
                    v = v - layer.threshold.astype(np.float32)[None, :, None, None]
                self.margins.append(float(np.abs(v).min()))
        return values[self.model.output_id]


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
