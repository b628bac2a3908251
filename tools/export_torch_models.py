"""Export BiBench-style binarized PyTorch models to ONNX with both of torch's exporters.

Run with the torch venv (``tools/torch_env.sh`` creates it)::

    .venv-torch/bin/python tools/export_torch_models.py OUTDIR [--arch resnet18 ...]
        [--algorithm bnn ...] [--exporter torchscript --exporter dynamo]

Writes ``OUTDIR/<arch>_<algorithm>_<exporter>.onnx`` (the dynamo exports with their weights in
``<name>.onnx.data`` beside them) and ``OUTDIR/manifest.json`` describing each file.

The models are written the way research code writes them, not the way a converter would like
them: binarization is an STE (an ``autograd.Function`` whose forward is ``x.sign()``, or the
``(sign(x) − y).detach() + y`` trick, ReActNet's piecewise-polynomial version included), weights
are binarized in ``forward`` from the real-valued parameter, ReAct thresholds are a learnable
per-channel bias subtracted before the sign. Random init (seeded), BatchNorm statistics set so
activations neither die nor saturate, eval mode.

This script runs in its own venv because the main one pins onnx 1.17 (TensorFlow for LCE), and
the dynamo exporter needs onnxscript, which needs a newer onnx.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ARCHS = ("resnet18", "resnet34", "vggsmall")
ALGORITHMS = ("fp32", "bnn", "react")
EXPORTERS = ("torchscript", "dynamo")
ARCH_NAMES = {"resnet18": "ResNet18", "resnet34": "ResNet34", "vggsmall": "VGG-Small"}
INPUT_SHAPES = {
    "resnet18": (1, 3, 224, 224),
    "resnet34": (1, 3, 224, 224),
    "vggsmall": (1, 3, 32, 32),
}
NUM_CLASSES = {"resnet18": 1000, "resnet34": 1000, "vggsmall": 10}
#: expected binary convolutions per binarized model (FP stem, FP 1×1 downsample, FP classifier)
BINARY_CONVS = {"resnet18": 16, "resnet34": 32, "vggsmall": 5}
TORCHSCRIPT_OPSET = 13
DYNAMO_OPSET = 18


# ----------------------------------------------------------------------------- binarizers


class SignSTE(torch.autograd.Function):
    """BiBench-style straight-through sign: forward ``x.sign()``, backward clipped identity."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        return x.sign()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_detach_ste(x: torch.Tensor) -> torch.Tensor:
    """The inline STE: value sign(x), gradient of x."""
    return (x.sign() - x).detach() + x


def react_sign(x: torch.Tensor) -> torch.Tensor:
    """ReActNet's BinaryActivation: value sign(x), gradient of a piecewise polynomial."""
    out_forward = torch.sign(x)
    mask1 = x < -1
    mask2 = x < 0
    mask3 = x < 1
    out1 = (-1) * mask1.type(torch.float32) + (x * x + 2 * x) * (1 - mask1.type(torch.float32))
    out2 = out1 * mask2.type(torch.float32) + (-x * x + 2 * x) * (1 - mask2.type(torch.float32))
    out3 = out2 * mask3.type(torch.float32) + 1 * (1 - mask3.type(torch.float32))
    return out_forward.detach() - out3.detach() + out3


#: how each (arch, algorithm) binarizes activations: a spread of the forms research code uses
ACT_STE = {
    ("resnet18", "bnn"): "autograd_function",
    ("resnet34", "bnn"): "torch_sign",
    ("vggsmall", "bnn"): "detach_ste",
    ("resnet18", "react"): "detach_ste",
    ("resnet34", "react"): "autograd_function",
    # ReActNet's polynomial STE adds ~15 nodes per binary conv; on ResNet-34 that makes the
    # dynamo exporter's graph optimizer take over a minute, so it is exercised on VGG-Small
    ("vggsmall", "react"): "react_polynomial",
}


def binarize_activation(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "autograd_function":
        return SignSTE.apply(x)
    if how == "torch_sign":
        return torch.sign(x)
    if how == "detach_ste":
        return sign_detach_ste(x)
    if how == "react_polynomial":
        return react_sign(x)
    raise ValueError(how)


class BinaryConv2d(nn.Conv2d):
    """Conv whose input and weights are binarized in ``forward``.

    bnn: sign(x) ⊛ sign(W). react: sign(x − t) ⊛ (mean|W|·sign(W)), t a learnable per-channel
    threshold (ReActNet's LearnableBias, written as a subtraction)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        padding: int,
        algorithm: str,
        act_ste: str,
    ) -> None:
        super().__init__(cin, cout, kernel, stride, padding, bias=False)
        self.algorithm = algorithm
        self.act_ste = act_ste
        if algorithm == "react":
            self.threshold = nn.Parameter(torch.randn(1, cin, 1, 1) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.algorithm == "react":
            x = x - self.threshold.expand_as(x)
            scale = w.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
            bw = scale * w.sign()
            clipped = torch.clamp(w, -1.0, 1.0)
            # ReActNet's weight STE: value bw, gradient of the clipped weights
            w = bw.detach() - clipped.detach() + clipped
        else:
            w = w.sign()
        x = binarize_activation(x, self.act_ste)
        return nn.functional.conv2d(x, w, None, self.stride, self.padding)


def make_conv(cin: int, cout: int, stride: int, algorithm: str, act_ste: str) -> nn.Conv2d:
    """A block's 3×3 conv: binarized for bnn/react, FP for the fp32 baseline."""
    if algorithm == "fp32":
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    return BinaryConv2d(cin, cout, 3, stride, 1, algorithm, act_ste)


# ----------------------------------------------------------------------------- networks


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int, algorithm: str, act_ste: str) -> None:
        super().__init__()
        self.conv1 = make_conv(cin, cout, stride, algorithm, act_ste)
        self.bn1 = nn.BatchNorm2d(cout)
        self.nonlinear1 = nn.Hardtanh(inplace=True)
        self.conv2 = make_conv(cout, cout, 1, algorithm, act_ste)
        self.bn2 = nn.BatchNorm2d(cout)
        self.nonlinear2 = nn.Hardtanh(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            # FP 1×1 downsample, as BiBench deploys it
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.nonlinear1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.nonlinear2(out + identity)


class ResNet(nn.Module):
    def __init__(
        self, layers: list[int], algorithm: str, act_ste: str, num_classes: int = 1000
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.nonlinear = nn.Hardtanh(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, cout) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride, algorithm, act_ste))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.nonlinear(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class VGGSmall(nn.Module):
    """BiBench's VGG-Small: 128-128-M-256-256-M-512-512-M-FC, FP first conv and classifier."""

    def __init__(self, algorithm: str, act_ste: str, num_classes: int = 10) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 128, 3, 1, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(128)
        self.nonlinear0 = nn.Hardtanh(inplace=True)
        chans = [(128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
        for i, (cin, cout) in enumerate(chans, start=1):
            setattr(self, f"conv{i}", make_conv(cin, cout, 1, algorithm, act_ste))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
            setattr(self, f"nonlinear{i}", nn.Hardtanh(inplace=True))
        self.pooling = nn.MaxPool2d(2, 2)
        self.fc = nn.Linear(512 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.nonlinear0(self.bn0(self.conv0(x)))
        for i in range(1, 6):
            x = getattr(self, f"conv{i}")(x)
            if i in (1, 3, 5):
                # BiBench pools between the conv and its BatchNorm in these blocks
                x = self.pooling(x)
            x = getattr(self, f"nonlinear{i}")(getattr(self, f"bn{i}")(x))
        return self.fc(torch.flatten(x, 1))


def build(arch: str, algorithm: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    ste = ACT_STE.get((arch, algorithm), "none")
    if arch == "vggsmall":
        model: nn.Module = VGGSmall(algorithm, ste)
    else:
        model = ResNet([2, 2, 2, 2] if arch == "resnet18" else [3, 4, 6, 3], algorithm, ste)
    _no_exact_zero_weights(model)
    _calibrate_bn(model, INPUT_SHAPES[arch], seed)
    return model.eval()


@torch.no_grad()
def _no_exact_zero_weights(model: nn.Module) -> None:
    """Random init draws an exact 0.0 about once per 2^24 weights (once in ResNet-34), and
    sign(0) = 0 makes that binary weight ternary; trained weights practically never are exactly
    0, so such draws are nudged off zero. (How the converter treats an exact zero is exported
    separately: ``extra_zero_weight``.)"""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight[m.weight == 0] = 1e-8


@torch.no_grad()
def _calibrate_bn(model: nn.Module, input_shape: tuple[int, ...], seed: int) -> None:
    """Set BatchNorm statistics from a few random inputs (train-mode forward passes), then give
    gamma/beta random values, so hidden activations are spread over Hardtanh's range instead
    of dying or all saturating — a random network still makes every sign decision count."""
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
            m.reset_running_stats()
    model.train()
    x = torch.randn((4, *input_shape[1:]), generator=g)
    model(x)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.momentum = 0.1


# ----------------------------------------------------------------------------- special cases


class TinyBlock(nn.Module):
    """bconv → BN → Hardtanh, the unit the special cases are made of."""

    def __init__(self, c: int, act_ste: str = "torch_sign") -> None:
        super().__init__()
        self.conv = BinaryConv2d(c, c, 3, 1, 1, "bnn", act_ste)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.Hardtanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Tiny(nn.Module):
    """FP stem, two binary blocks, a head; ``variant`` picks how the rest is written."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.bn = nn.BatchNorm2d(16)
        self.block1 = TinyBlock(16)
        self.block2 = TinyBlock(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.hardtanh(self.bn(self.stem(x)))
        if self.variant == "sign_pool":
            # sign, then pool, then the conv: the engine binarizes only inside a binary conv
            x = nn.functional.max_pool2d(torch.sign(x), 2)
            x = nn.functional.conv2d(x, self.block1.conv.weight.sign(), None, 1, 1)
        else:
            x = self.block1(x)
        x = self.block2(x)
        if self.variant == "minmax":
            # Hardtanh as research code sometimes writes it: Min/Max against scalars
            x = torch.maximum(torch.minimum(x * 2.0, torch.tensor(1.0)), torch.tensor(-1.0))
        if self.variant == "mean_nokeep":
            x = x.mean((2, 3))
        else:
            x = x.mean((2, 3), keepdim=True).flatten(1)
        if self.variant == "minmax":
            return x @ self.fc.weight.t() + self.fc.bias  # MatMul + Add instead of Gemm
        return self.fc(x)


#: name → (variant, exporters with opsets, expectation, what the expectation checks)
EXTRAS = {
    # the TorchScript exporter writes each TinyBlock as a model-local ONNX function
    "extra_functions": ("functions", [("torchscript", 17)], "convert", ""),
    "extra_minmax": ("minmax", [("torchscript", 17), ("dynamo", 18)], "convert", ""),
    # one binary weight exactly 0.0: Sign(0) = 0 makes it ternary
    "extra_zero_weight": (
        "zero_weight",
        [("torchscript", 13), ("dynamo", 18)],
        "zero_weight",
        "exactly 0",
    ),
    "extra_mean_nokeep": (
        "mean_nokeep",
        [("torchscript", 13), ("dynamo", 18)],
        "refuse",
        "keepdims=0",
    ),
    "extra_sign_pool": (
        "sign_pool",
        [("torchscript", 13), ("dynamo", 18)],
        "refuse",
        "Sign on an activation that does not feed a conv",
    ),
}
EXTRA_INPUT = (1, 3, 16, 16)
EXTRA_BINARY_CONVS = {"functions": 2, "minmax": 2, "zero_weight": 2}


def build_extra(variant: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Tiny(variant)
    _no_exact_zero_weights(model)
    if variant == "zero_weight":
        with torch.no_grad():
            model.block2.conv.weight[3, 5, 1, 1] = 0.0
    _calibrate_bn(model, EXTRA_INPUT, seed)
    return model.eval()


# ----------------------------------------------------------------------------- export


def export_one(
    model: nn.Module,
    input_shape: tuple[int, ...],
    exporter: str,
    opset: int,
    path: Path,
    functions: tuple[type, ...] = (),
) -> dict:
    for old in path.parent.glob(path.name + "*"):
        old.unlink()
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(7))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation chatter about the exporters
        if exporter == "torchscript":
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                export_modules_as_functions=set(functions) or False,
            )
        else:
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=True,
                opset_version=opset,
                external_data=True,
                input_names=["input"],
                output_names=["output"],
            )
    files = sorted(p.name for p in path.parent.glob(path.name + "*"))
    return {
        "exporter": exporter,
        "opset": opset,
        "file": path.name,
        "files": files,
        "export_s": round(time.perf_counter() - t0, 2),
    }


def _export_task(task: tuple, outdir: str, seed: int) -> list[dict]:
    """One model built once, exported with each exporter (run in a worker process)."""
    torch.set_num_threads(1)  # the workers share the cores
    out = Path(outdir)
    entries = []
    if task[0] == "main":
        _, arch, algo, exporters = task
        model = build(arch, algo, seed)
        for exporter in exporters:
            opset = TORCHSCRIPT_OPSET if exporter == "torchscript" else DYNAMO_OPSET
            name = f"{arch}_{algo}_{exporter}"
            info = export_one(model, INPUT_SHAPES[arch], exporter, opset, out / f"{name}.onnx")
            entries.append(
                {
                    "name": name,
                    "kind": "main",
                    "arch": arch,
                    "arch_name": ARCH_NAMES[arch],
                    "algorithm": algo,
                    "activation_ste": ACT_STE.get((arch, algo)),
                    "input_shape": list(INPUT_SHAPES[arch]),
                    "num_classes": NUM_CLASSES[arch],
                    "expect": "convert",
                    "expected_binary_convs": 0 if algo == "fp32" else BINARY_CONVS[arch],
                    **info,
                }
            )
    else:
        _, name = task
        variant, exports, expect, detail = EXTRAS[name]
        model = build_extra(variant, seed)
        functions = (TinyBlock,) if variant == "functions" else ()
        for exporter, opset in exports:
            full = f"{name}_{exporter}"
            info = export_one(model, EXTRA_INPUT, exporter, opset, out / f"{full}.onnx", functions)
            entries.append(
                {
                    "name": full,
                    "kind": "extra",
                    "variant": variant,
                    "input_shape": list(EXTRA_INPUT),
                    "num_classes": 10,
                    "expect": expect,
                    "expect_detail": detail,
                    "expected_binary_convs": EXTRA_BINARY_CONVS.get(variant),
                    **info,
                }
            )
    for e in entries:
        print(f"{e['name']}: {e['files']} ({e['export_s']} s)", flush=True)
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--arch", action="append", choices=ARCHS)
    p.add_argument("--algorithm", action="append", choices=ALGORITHMS)
    p.add_argument("--exporter", action="append", choices=EXPORTERS)
    p.add_argument(
        "--no-extras", action="store_true", help="skip the small special-case models (extra_*)"
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    exporters = tuple(args.exporter or EXPORTERS)
    tasks: list[tuple] = [
        ("main", arch, algo, exporters)
        for arch in args.arch or ARCHS
        for algo in args.algorithm or ALGORITHMS
    ]
    # biggest first, so the pool's tail is short
    tasks.sort(key=lambda t: {"resnet34": 0, "resnet18": 1, "vggsmall": 2}[t[1]])
    if not args.no_extras:
        tasks += [("extra", name) for name in EXTRAS]
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: torch's thread pools do not survive fork
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(
                pool.map(
                    _export_task, tasks, [str(args.outdir)] * len(tasks), [args.seed] * len(tasks)
                )
            )
    else:
        results = [_export_task(t, str(args.outdir), args.seed) for t in tasks]
    manifest = {
        "torch": torch.__version__,
        "onnx": __import__("onnx").__version__,
        "onnxscript": __import__("onnxscript").__version__,
        "seed": args.seed,
        "models": [e for r in results for e in r],
    }
    (args.outdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
