"""Lowering: match the folded ONNX graph, node by node in graph order, into :mod:`converters.ir`.

``Conv(Sign(x), W)`` and ``Conv(Sign(x − t), W)`` with W = ±α[o] become binary convs;
BatchNorm and per-channel Mul/Add/Sub/Div are folded into the producing conv/Gemm where it has
no other consumer; everything the IR cannot represent is refused with an
:class:`UnsupportedModelError` naming the node and op."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters import ir
from converters.errors import ConversionError, UnsupportedModelError
from converters.frontend.fold import node_attrs

#: relative tolerance for "every |W[o]| equals α[o]" when recognising binary weights
BINARY_WEIGHT_RTOL = 1e-5
#: exact zeros tolerated among binary weights (mapped to +1): random init gives about one per
#: 2^24 weights (one in a ResNet-34); many zeros mean ternary weights, which are refused
MAX_ZERO_WEIGHT_FRACTION = 1e-3

SUPPORTED_OPS = (
    "Conv", "Sign", "BatchNormalization", "Clip", "Relu", "Max", "Min", "MaxPool",
    "AveragePool", "GlobalAveragePool", "ReduceMean", "Add", "Sub", "Mul", "Div", "Flatten",
    "Reshape", "Squeeze", "Gemm", "MatMul", "Identity", "Dropout",
)  # fmt: skip


@dataclass
class _Threshold:
    """``x − t`` (or ``x + b``, t = −b) whose only consumers are Sign nodes."""

    src: str
    t: np.ndarray
    node: str


@dataclass
class _Sign:
    """``Sign(x)`` or ``Sign(x − t)`` on an activation, waiting for the Conv that reads it."""

    src: str
    t: np.ndarray | None
    nodes: list[str]


def binary_weights(w: np.ndarray, rtol: float = BINARY_WEIGHT_RTOL):
    """If every nonzero ``|w[o]|`` equals one α[o] > 0, return ``(α, sign)``; else ``None``.

    Exact zeros — ``Sign(0) = 0``, e.g. a weight that is exactly 0.0 before ``sign(W)`` — get
    sign +1 (the engine's sign(0) = +1, FORMAT.md) as long as they are at most
    ``MAX_ZERO_WEIGHT_FRACTION`` of the weights; more than that is a ternary network, refused."""
    w = np.asarray(w, dtype=np.float64)
    absw = np.abs(w).reshape(w.shape[0], -1)
    nz = absw > 0
    n_nz = nz.sum(axis=1)
    if np.any(n_nz == 0) or (absw.size - nz.sum()) > MAX_ZERO_WEIGHT_FRACTION * absw.size:
        return None
    alpha = np.where(nz, absw, 0.0).sum(axis=1) / n_nz
    if not np.all(~nz | (np.abs(absw - alpha[:, None]) <= rtol * alpha[:, None])):
        return None
    return alpha.astype(np.float32), np.where(w < 0, -1, 1).astype(np.int8)


class Lowering:
    def __init__(
        self,
        graph: Any,
        nodes: list[Any],
        consts: dict[str, np.ndarray],
        onnx_shapes: dict[str, tuple[int, ...] | None],
        opset: int,
    ) -> None:
        self.graph = graph
        self.onnx_nodes = nodes
        self.consts = consts
        self.onnx_shapes = onnx_shapes
        self.opset = opset
        self.shapes: dict[str, ir.Shape] = {}
        self.alias: dict[str, str] = {}
        self.thresholds: dict[str, _Threshold] = {}
        self.signs: dict[str, _Sign] = {}
        self.producer: dict[str, ir.Node] = {}
        self.nodes: list[ir.Node] = []
        self.graph_outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in nodes:
            for i in dict.fromkeys(n.input):
                if i:
                    self.consumers[i].append(n)

    # -- helpers
    def fail(self, node: Any, msg: str) -> UnsupportedModelError:
        return UnsupportedModelError(msg, node.name, node.op_type)

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def act(self, node: Any, name: str) -> str:
        """An activation input of ``node``: the canonical value name."""
        name = self.resolve(name)
        if name in self.shapes:
            return name
        if name in self.consts:
            raise self.fail(node, f"input {name!r} is a constant where an activation is expected")
        if name in self.signs or name in self.thresholds:
            raise self.fail(
                node, f"input {name!r} is a binarized activation (Sign) that this op cannot consume"
            )
        raise self.fail(node, f"input {name!r} is not produced by any supported node")

    def const(self, node: Any, idx: int, what: str) -> np.ndarray:
        name = node.input[idx] if idx < len(node.input) else ""
        if not name:
            raise self.fail(node, f"missing {what}")
        if name not in self.consts:
            raise self.fail(
                node,
                f"{what} {name!r} is not a constant (non-constant weights are "
                "not supported: the native format stores them at conversion)",
            )
        return self.consts[name]

    def opt_const(self, node: Any, idx: int, what: str) -> np.ndarray | None:
        if idx >= len(node.input) or not node.input[idx]:
            return None
        return self.const(node, idx, what)

    def sole_consumer(self, value: str, node: Any) -> bool:
        cons = self.consumers.get(value, [])
        return len(cons) == 1 and cons[0] is node and value not in self.graph_outputs

    @staticmethod
    def wiring(node: Any, inputs: str | list[str], out_shape: ir.Shape, note: str) -> dict:
        """The ir.Node fields of a node made from the ONNX ``node`` alone: its name, inputs,
        first output, shape, source and note (the op's own fields come on top)."""
        ins = [inputs] if isinstance(inputs, str) else inputs
        return {
            "name": node.name,
            "inputs": ins,
            "output": node.output[0],
            "out_shape": out_shape,
            "sources": [node.name],
            "note": note,
        }

    def emit(self, node: Any, n: ir.Node) -> ir.Node:
        expected = self.onnx_shapes.get(node.output[0])
        if expected is not None and tuple(expected) != tuple(n.out_shape):
            raise ConversionError(
                f"node {node.name!r} ({node.op_type}): internal shape mismatch, converter "
                f"computed {n.out_shape} but ONNX infers {expected}"
            )
        self.nodes.append(n)
        self.shapes[n.output] = tuple(n.out_shape)
        self.producer[n.output] = n
        return n

    def per_channel(self, node: Any, c: np.ndarray, shape: ir.Shape, what: str) -> np.ndarray:
        """A constant broadcast against an activation, reduced to one value per channel (axis 1)."""
        c = np.asarray(c, dtype=np.float32)
        try:
            full = np.broadcast_shapes(c.shape, shape)
        except ValueError:
            full = None
        if full != tuple(shape):
            raise self.fail(
                node,
                f"{what} of shape {list(c.shape)} does not broadcast onto the "
                f"activation {list(shape)} without changing its shape",
            )
        c = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
        for ax in range(c.ndim):
            if ax != 1 and c.shape[ax] > 1:
                first = np.take(c, [0], axis=ax)
                if not np.array_equal(np.broadcast_to(first, c.shape), c):
                    raise self.fail(
                        node,
                        f"{what} varies along axis {ax}; only per-channel "
                        "(axis 1) constants are supported",
                    )
                c = first
        return np.broadcast_to(c.reshape(-1), (shape[1],)).astype(np.float32).copy()

    def pads(
        self,
        node: Any,
        a: dict,
        hw: tuple[int, ...],
        kernel: tuple[int, int],
        strides: tuple[int, int],
    ) -> ir.Pads:
        auto = a.get("auto_pad", "NOTSET")
        if auto == "NOTSET":
            p = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
            if len(p) != 4:
                raise self.fail(node, f"pads {p} are not 2-D")
            return (p[0], p[1], p[2], p[3])  # ONNX order: top, left, bottom, right
        if auto == "VALID":
            return (0, 0, 0, 0)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for size, k, s in zip(hw, kernel, strides, strict=True):
                out = -(-size // s)
                total = max((out - 1) * s + k - size, 0)
                small, large = total // 2, total - total // 2
                b, e = (small, large) if auto == "SAME_UPPER" else (large, small)
                begin.append(b)
                end.append(e)
            return (begin[0], begin[1], end[0], end[1])
        raise self.fail(node, f"auto_pad={auto!r} has no explicit-padding equivalent")

    def spatial(self, node: Any, a: dict, shape: ir.Shape, kernel: tuple[int, int]):
        if len(shape) != 4:
            raise self.fail(node, f"expects an NCHW input, got shape {list(shape)}")
        dil = [int(v) for v in a.get("dilations", [1, 1])]
        if any(d != 1 for d in dil):
            raise self.fail(node, f"dilations={dil}: dilated kernels are not supported")
        st = [int(v) for v in a.get("strides", [1, 1])]
        if len(st) != 2:
            raise self.fail(node, "only 2-D spatial ops are supported")
        strides = (st[0], st[1])
        return strides, self.pads(node, a, shape[2:], kernel, strides)

    # -- affine folding (BatchNorm, per-channel Mul/Add/Sub/Div)
    def affine(self, node: Any, x: str, scale: np.ndarray, bias: np.ndarray, what: str) -> None:
        scale = np.asarray(scale, np.float64)
        bias = np.asarray(bias, np.float64)
        prod = self.producer.get(x)
        if prod is not None and self.sole_consumer(x, node):
            if isinstance(prod, ir.Conv):
                prod.weight = (prod.weight * scale[:, None, None, None]).astype(np.float32)
                b = np.zeros(prod.out_c) if prod.bias is None else prod.bias.astype(np.float64)
                prod.bias = (b * scale + bias).astype(np.float32)
            elif isinstance(prod, ir.BinConv):
                prod.scale = (prod.scale * scale).astype(np.float32)
                prod.bias = (prod.bias * scale + bias).astype(np.float32)
            elif isinstance(prod, ir.Gemm):
                prod.weight = (prod.weight * scale[:, None]).astype(np.float32)
                b = np.zeros(prod.weight.shape[0]) if prod.bias is None else prod.bias
                prod.bias = (np.asarray(b, np.float64) * scale + bias).astype(np.float32)
            elif isinstance(prod, ir.Affine):
                prod.bias = (prod.bias * scale + bias).astype(np.float32)
                prod.scale = (prod.scale * scale).astype(np.float32)
            else:
                prod = None
            if prod is not None:
                self._fold_into(prod, node, x, f"{what} {node.name!r} folded in")
                return
        shape = self.shapes[x]
        if len(shape) != 4:
            raise self.fail(
                node,
                f"a per-channel {what} on a rank-{len(shape)} tensor is only "
                "supported when it can be folded into the preceding Gemm",
            )
        self.emit(
            node,
            ir.Affine(
                **self.wiring(
                    node,
                    x,
                    shape,
                    f"{what} kept as a per-channel affine (not foldable: its input "
                    "is not a conv/Gemm output used only here)",
                ),
                scale=scale.astype(np.float32),
                bias=bias.astype(np.float32),
            ),
        )

    # -- ops
    def op_Conv(self, node: Any, a: dict) -> None:
        w = self.const(node, 1, "weight").astype(np.float32)
        if w.ndim != 4:
            raise self.fail(node, f"only 2-D convolutions are supported (weight rank {w.ndim})")
        group = int(a.get("group", 1))
        if group != 1:
            raise self.fail(
                node,
                f"groups={group}: grouped/depthwise convolution is not "
                "supported (the native format has groups = 1)",
            )
        kernel = (int(w.shape[2]), int(w.shape[3]))
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != kernel:
            raise self.fail(node, f"kernel_shape {a['kernel_shape']} disagrees with the weight")
        xin = self.resolve(node.input[0])
        sign = self.signs.get(xin)
        src = sign.src if sign else self.act(node, xin)
        shape = self.shapes[src]
        strides, pads = self.spatial(node, a, shape, kernel)
        if shape[1] != w.shape[1]:
            raise self.fail(
                node, f"weight expects {w.shape[1]} input channels, input has {shape[1]}"
            )
        b = self.opt_const(node, 2, "bias")
        oh, ow = ir.conv_out_hw(shape[2], shape[3], kernel, strides, pads)
        out_shape = (shape[0], int(w.shape[0]), oh, ow)
        bw = binary_weights(w)
        if sign is not None:
            if bw is None:
                n_zero = int(np.count_nonzero(w == 0))
                why = (
                    f"{n_zero} of {w.size} weights are exactly 0 (ternary, not binary)"
                    if n_zero > MAX_ZERO_WEIGHT_FRACTION * w.size
                    else "weights are not ±α per output channel"
                )
                raise self.fail(
                    node,
                    f"conv {node.name!r} has binarized input but float "
                    f"weights: not representable ({why})",
                )
            alpha, ws = bw
            n_zero = int(np.count_nonzero(w == 0))
            src_desc = "sign(x − t) (per-channel threshold)" if sign.t is not None else "sign(x)"
            scale_desc = (
                "weights ±1"
                if np.all(alpha == 1)
                else "weights ±α per output channel (α folded into scale)"
            )
            bias = np.zeros(w.shape[0], np.float32) if b is None else b.astype(np.float32)
            self.emit(
                node,
                ir.BinConv(
                    node.name,
                    [src],
                    node.output[0],
                    out_shape,
                    sign.nodes + [node.name],
                    f"binarized: input {src_desc}, {scale_desc}"
                    + (
                        f"; {n_zero} weight(s) exactly 0 (ONNX Sign(0) = 0) stored as +α (the "
                        "engine's sign(0) = +1): this layer differs from the ONNX model where they "
                        "are used"
                        if n_zero
                        else ""
                    ),
                    weight_sign=ws,
                    scale=alpha,
                    bias=bias,
                    threshold=sign.t,
                    strides=strides,
                    pads=pads,
                ),
            )
            return
        note = "kept FP32: its input is not binarized (no Sign)"
        if bw is not None:
            note += (
                "; weights are ±α (weight-only binarization) but the native binary conv "
                "needs binary activations too"
            )
        self.emit(
            node,
            ir.Conv(
                **self.wiring(node, src, out_shape, note),
                weight=w,
                bias=None if b is None else b.astype(np.float32),
                strides=strides,
                pads=pads,
            ),
        )

    def op_Sign(self, node: Any, a: dict) -> None:
        xin = self.resolve(node.input[0])
        thr = self.thresholds.get(xin)
        if thr is not None:
            sign = _Sign(thr.src, thr.t, [thr.node, node.name])
        else:
            sign = _Sign(self.act(node, xin), None, [node.name])
        out = node.output[0]
        if out in self.graph_outputs:
            raise self.fail(
                node,
                "Sign on an activation that is a graph output; activations "
                "are binarized only inside binary convolutions",
            )
        for c in self.consumers.get(out, []):
            if c.op_type != "Conv" or list(c.input).index(out) != 0 or list(c.input).count(out) > 1:
                raise self.fail(
                    node,
                    f"Sign on an activation that does not feed a conv (it "
                    f"feeds {c.name!r} ({c.op_type})); activations are "
                    "binarized only inside binary convolutions",
                )
        self.signs[out] = sign

    def _feeds_only_sign(self, value: str) -> bool:
        cons = self.consumers.get(value, [])
        return (
            bool(cons)
            and value not in self.graph_outputs
            and all(c.op_type == "Sign" for c in cons)
        )

    def _elementwise(self, node: Any, a: dict) -> None:
        op = node.op_type
        if len(node.input) != 2:
            raise self.fail(node, "expects two inputs")
        n0, n1 = (self.resolve(i) for i in node.input)
        c0, c1 = n0 in self.consts, n1 in self.consts
        if not c0 and not c1:
            if op != "Add":
                raise self.fail(
                    node,
                    f"{op} of two activations is not supported (only Add, "
                    "for residual connections)",
                )
            x0, x1 = self.act(node, n0), self.act(node, n1)
            if self.shapes[x0] != self.shapes[x1]:
                raise self.fail(
                    node,
                    f"Add of shapes {list(self.shapes[x0])} and "
                    f"{list(self.shapes[x1])}: broadcasting is not supported",
                )
            self.emit(
                node,
                ir.Add(**self.wiring(node, [x0, x1], self.shapes[x0], "residual add")),
            )
            return
        const_first = c0
        x = self.act(node, n1 if const_first else n0)
        c = self.consts[n0 if const_first else n1]
        shape = self.shapes[x]
        if (
            op in ("Add", "Sub")
            and not (op == "Sub" and const_first)
            and self._feeds_only_sign(node.output[0])
        ):
            t = self.per_channel(node, c, shape, "threshold")
            # sign(x + b) = sign(x − (−b)) exactly in IEEE arithmetic
            self.thresholds[node.output[0]] = _Threshold(x, t if op == "Sub" else -t, node.name)
            return
        v = self.per_channel(node, c, shape, f"{op} operand").astype(np.float64)
        one, zero = np.ones_like(v), np.zeros_like(v)
        if op == "Add":
            scale, bias = one, v
        elif op == "Sub":
            scale, bias = (-one, v) if const_first else (one, -v)
        elif op == "Mul":
            scale, bias = v, zero
        else:  # Div
            if const_first:
                raise self.fail(node, "division by an activation is not supported")
            scale, bias = 1.0 / v, zero
        self.affine(node, x, scale, bias, op)

    op_Add = op_Sub = op_Mul = op_Div = _elementwise

    def op_BatchNormalization(self, node: Any, a: dict) -> None:
        if int(a.get("training_mode", 0)):
            raise self.fail(node, "training_mode=1 BatchNorm is not an inference op")
        if any(o for o in node.output[1:]):
            raise self.fail(node, "BatchNorm running-statistics outputs are not supported")
        x = self.act(node, node.input[0])
        gamma, beta, mean, var = (
            self.const(node, i, w).astype(np.float64)
            for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var"))
        )
        k = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        c = self.shapes[x][1]
        if k.shape != (c,):
            raise self.fail(node, f"parameters of shape {list(k.shape)} for {c} channels")
        self.affine(node, x, k, beta - mean * k, "BatchNorm")

    def _fold_into(self, prod: Any, node: Any, x: str, note: str) -> None:
        """`node` (reading x, the output of IR node `prod`) was folded into `prod`: prod's
        output now carries node's value, so node's output aliases x and its consumers (and
        graph-output role) pass to x."""
        prod.sources.append(node.name)
        prod.add_note(note)
        out = node.output[0]
        prod.onnx_output = out
        self.alias[out] = x
        self.consumers[x] = self.consumers.get(out, [])
        if out in self.graph_outputs:
            self.graph_outputs.add(x)

    def _clip(self, node: Any, x: str, lo: float, hi: float, note: str) -> None:
        prod = self.producer.get(x)
        if (
            isinstance(prod, ir.Clip)
            and self.sole_consumer(x, node)
            and max(prod.min, lo) <= min(prod.max, hi)
        ):
            # Min(Max(x, lo), hi), as exporters may write Hardtanh: one clip
            prod.min, prod.max = max(prod.min, lo), min(prod.max, hi)
            self._fold_into(
                prod,
                node,
                x,
                f"{node.op_type} {node.name!r} merged: clip [{prod.min:g}, {prod.max:g}]",
            )
            return
        self.emit(
            node,
            ir.Clip(**self.wiring(node, x, self.shapes[x], note), min=lo, max=hi),
        )

    def op_Clip(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        if self.opset < 11:
            lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
        else:
            cmin = self.opt_const(node, 1, "min")
            cmax = self.opt_const(node, 2, "max")
            lo = -np.inf if cmin is None else float(np.asarray(cmin).reshape(-1)[0])
            hi = np.inf if cmax is None else float(np.asarray(cmax).reshape(-1)[0])
            for v in (cmin, cmax):
                if v is not None and np.asarray(v).size != 1:
                    raise self.fail(node, "min/max must be scalars")
        self._clip(node, x, lo, hi, f"clip [{lo:g}, {hi:g}]")

    def _min_max(self, node: Any, is_max: bool) -> None:
        if len(node.input) != 2:
            raise self.fail(
                node,
                f"{node.op_type} of {len(node.input)} inputs is not supported "
                "(only an activation and a scalar constant, i.e. a clip)",
            )
        n0, n1 = (self.resolve(i) for i in node.input)
        cname = n0 if n0 in self.consts else n1 if n1 in self.consts else None
        if cname is None:
            raise self.fail(
                node,
                f"{node.op_type} of two activations is not supported (only "
                "against a scalar constant, i.e. a clip)",
            )
        c = np.asarray(self.consts[cname])
        if c.size != 1:
            raise self.fail(
                node,
                f"{node.op_type} with a constant of shape {list(c.shape)} is not "
                "supported (only a scalar, i.e. a clip)",
            )
        x = self.act(node, n1 if cname == n0 else n0)
        if self.shapes[x] != self.onnx_shapes.get(node.output[0], self.shapes[x]):
            raise self.fail(node, "the constant broadcasts the activation to another shape")
        v = float(c.reshape(-1)[0])
        lo, hi = (v, np.inf) if is_max else (-np.inf, v)
        self._clip(node, x, lo, hi, f"{node.op_type} with {v:g} as clip [{lo:g}, {hi:g}]")

    def op_Max(self, node: Any, a: dict) -> None:
        self._min_max(node, True)

    def op_Min(self, node: Any, a: dict) -> None:
        self._min_max(node, False)

    def op_Relu(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        self._clip(node, x, 0.0, np.inf, "ReLU as clip [0, inf]")

    def _pool(self, node: Any, a: dict, is_max: bool) -> None:
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise self.fail(node, "MaxPool indices output is not supported")
        x = self.act(node, node.input[0])
        shape = self.shapes[x]
        ks = [int(v) for v in a["kernel_shape"]]
        if len(ks) != 2:
            raise self.fail(node, "only 2-D pooling is supported")
        kernel = (ks[0], ks[1])
        strides, pads = self.spatial(node, a, shape, kernel)
        cip = bool(a.get("count_include_pad", 0))
        oh, ow = ir.conv_out_hw(shape[2], shape[3], kernel, strides, pads)
        if int(a.get("ceil_mode", 0)):
            extra = []
            for size, k, s, b, e in zip(
                shape[2:], kernel, strides, pads[:2], pads[2:], strict=True
            ):
                out = -(-(size + b + e - k) // s) + 1
                if (out - 1) * s >= size + b:  # the last window must start inside the input
                    out -= 1
                extra.append((out - 1) * s + k - (size + b + e))
            if any(v > 0 for v in extra):
                if not is_max and cip:
                    raise self.fail(node, "ceil_mode=1 with count_include_pad=1 is not supported")
                # padded taps are ignored by MAXPOOL and by AVGPOOL without count_include_pad,
                # so ceil mode is extra bottom/right padding
                pads = (pads[0], pads[1], pads[2] + max(extra[0], 0), pads[3] + max(extra[1], 0))
                oh, ow = ir.conv_out_hw(shape[2], shape[3], kernel, strides, pads)
        out_shape = (shape[0], shape[1], oh, ow)
        window = {"kernel": kernel, "strides": strides, "pads": pads}
        if is_max:
            n: ir.Node = ir.MaxPool(**self.wiring(node, x, out_shape, "max pool"), **window)
        else:
            wiring = self.wiring(node, x, out_shape, "average pool")
            n = ir.AvgPool(**wiring, **window, count_include_pad=cip)
        self.emit(node, n)

    def op_MaxPool(self, node: Any, a: dict) -> None:
        self._pool(node, a, True)

    def op_AveragePool(self, node: Any, a: dict) -> None:
        self._pool(node, a, False)

    def op_GlobalAveragePool(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        shape = self.shapes[x]
        if len(shape) != 4:
            raise self.fail(node, f"expects an NCHW input, got {list(shape)}")
        self._global_pool(node, x, "global pool")

    def _global_pool(self, node: Any, x: str, how: str) -> None:
        """N×C×H×W -> N×C×1×1 mean: GlobalAveragePool and ReduceMean over H, W alike."""
        shape = self.shapes[x]
        out = (shape[0], shape[1], 1, 1)
        self.emit(node, ir.GlobalAvgPool(**self.wiring(node, x, out, how)))

    def op_ReduceMean(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        shape = self.shapes[x]
        if "axes" in a:
            axes = [int(v) for v in a["axes"]]
        else:
            c = self.opt_const(node, 1, "axes")
            axes = [] if c is None else [int(v) for v in np.asarray(c).reshape(-1)]
        keep = int(a.get("keepdims", 1))
        if not axes and not int(a.get("noop_with_empty_axes", 0)):
            axes = list(range(len(shape)))
        if len(shape) != 4 or sorted(ax % 4 for ax in axes) != [2, 3]:
            raise self.fail(
                node,
                f"ReduceMean over axes {axes} of {list(shape)} is not "
                "supported (only over H and W of NCHW: a global average pool)",
            )
        if not keep:
            raise self.fail(
                node,
                "ReduceMean over H and W with keepdims=0 is not supported "
                "(the native global pool keeps N×C×1×1: write "
                "mean(dim=(2, 3), keepdim=True) or AdaptiveAvgPool2d(1), then "
                "flatten)",
            )
        self._global_pool(node, x, "global pool (ReduceMean over H, W)")

    def _to_shape(self, node: Any, x: str, target: tuple[int, ...]) -> None:
        shape = self.shapes[x]
        if tuple(target) == tuple(shape):
            self.alias[node.output[0]] = x
            return
        if len(shape) == 4 and tuple(target) == (shape[0], shape[1] * shape[2] * shape[3]):
            self.emit(
                node,
                ir.Flatten(**self.wiring(node, x, tuple(target), "flatten to N×features")),
            )
            return
        raise self.fail(
            node,
            f"reshaping {list(shape)} to {list(target)} is not supported "
            "(only flattening NCHW to N×(C·H·W))",
        )

    def op_Flatten(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        shape = self.shapes[x]
        axis = int(a.get("axis", 1)) % max(len(shape), 1)
        if axis != 1:
            raise self.fail(node, f"Flatten with axis={a.get('axis')} is not supported (only 1)")
        self._to_shape(node, x, (shape[0], int(np.prod(shape[1:]))))

    def _inferred_target(self, node: Any) -> tuple[int, ...]:
        target = self.onnx_shapes.get(node.output[0])
        if target is None:
            raise self.fail(node, "output shape could not be inferred")
        return target

    def op_Reshape(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        self.const(node, 1, "shape")
        self._to_shape(node, x, self._inferred_target(node))

    def op_Squeeze(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        self._to_shape(node, x, self._inferred_target(node))

    def op_Identity(self, node: Any, a: dict) -> None:
        self.alias[node.output[0]] = self.act(node, node.input[0])

    def op_Dropout(self, node: Any, a: dict) -> None:
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise self.fail(node, "Dropout mask output is not supported")
        tm = self.opt_const(node, 2, "training_mode")
        if tm is not None and bool(np.asarray(tm).reshape(-1)[0]):
            raise self.fail(node, "Dropout in training mode is not an inference op")
        self.op_Identity(node, a)

    def _fc(self, node: Any, x: str, w: np.ndarray, b: np.ndarray | None, note: str) -> None:
        shape = self.shapes[x]
        if len(shape) != 2:
            raise self.fail(node, f"expects an N×features input, got {list(shape)}")
        if w.shape[1] != shape[1]:
            raise self.fail(node, f"weight expects {w.shape[1]} features, input has {shape[1]}")
        self.emit(
            node,
            ir.Gemm(
                **self.wiring(node, x, (shape[0], int(w.shape[0])), note),
                weight=w.astype(np.float32),
                bias=None if b is None else b.astype(np.float32),
            ),
        )

    def op_Gemm(self, node: Any, a: dict) -> None:
        if int(a.get("transA", 0)):
            raise self.fail(node, "transA=1 is not supported (the activation must be A)")
        x = self.act(node, node.input[0])
        bmat = self.const(node, 1, "weight B").astype(np.float64)
        if bmat.ndim != 2:
            raise self.fail(node, "weight B must be a matrix")
        w = (bmat if int(a.get("transB", 0)) else bmat.T) * float(a.get("alpha", 1.0))
        c = self.opt_const(node, 2, "bias C")
        b = None
        if c is not None:
            c = np.asarray(c, np.float64) * float(a.get("beta", 1.0))
            out_f = w.shape[0]
            if c.size == 1:
                b = np.full(out_f, float(c.reshape(-1)[0]))
            elif c.shape in ((out_f,), (1, out_f)):
                b = c.reshape(-1)
            else:
                raise self.fail(node, f"bias C of shape {list(c.shape)} is not per output")
        self._fc(node, x, w, b, "kept FP32: fully connected layer")

    def op_MatMul(self, node: Any, a: dict) -> None:
        x = self.act(node, node.input[0])
        bmat = self.const(node, 1, "weight B")
        if bmat.ndim != 2:
            raise self.fail(node, "only MatMul with a constant matrix is supported")
        # a following Add of a constant is folded into this Gemm's bias by affine()
        self._fc(
            node,
            x,
            np.asarray(bmat, np.float64).T,
            None,
            "kept FP32: fully connected layer (MatMul)",
        )

    # -- driver
    def build(self, input_name: str, input_shape: ir.Shape) -> ir.Graph:
        self.shapes[input_name] = input_shape
        for node in self.onnx_nodes:
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(node, f"custom-domain op ({node.domain}) is not supported")
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise self.fail(
                    node,
                    "op not supported by the native converter (supported: "
                    + ", ".join(SUPPORTED_OPS)
                    + ")",
                )
            handler(node, node_attrs(node))
        if len(self.graph.output) != 1:
            raise UnsupportedModelError(
                f"the native engine runs graphs with exactly one output, this one has "
                f"{len(self.graph.output)}"
            )
        out_name = self.graph.output[0].name
        out = self.resolve(out_name)
        if out in self.consts:
            raise UnsupportedModelError(f"graph output {out_name!r} is a constant")
        if out == input_name:
            raise UnsupportedModelError("graph output is the graph input (empty model)")
        if out not in self.shapes:
            raise UnsupportedModelError(
                f"graph output {out_name!r} is not produced by any supported node"
            )
        return ir.Graph(input_name, input_shape, out, self._prune(out), dict(self.shapes))

    def _prune(self, out: str) -> list[ir.Node]:
        """Drop nodes that do not contribute to the output (dead branches)."""
        needed = {out}
        keep = []
        for n in reversed(self.nodes):
            if n.output in needed:
                keep.append(n)
                needed.update(n.inputs)
        return keep[::-1]


def check_supported(nodes: list[Any]) -> None:
    """Refuse the first node whose op the lowering has no rule for (before any other check:
    an op that cannot be converted at all is the most useful thing to report)."""
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(
                f"custom-domain op ({node.domain}) is not supported", node.name, node.op_type
            )
        if node.op_type not in SUPPORTED_OPS:
            raise UnsupportedModelError(
                "op not supported by the native converter (supported: "
                + ", ".join(SUPPORTED_OPS)
                + ")",
                node.name,
                node.op_type,
            )
