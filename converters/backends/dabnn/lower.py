"""IR → daBNN model.

Mapping (NCHW IR → NHWC daBNN, batch 1):

* FP conv → FpConv2D (weights OIHW → OHWI, BatchNorm already folded into its bias).
* Binary conv → BinConv2D (weights bit-packed, see bits.py) + Affine
  ``a = −2·scale, b = bias + K·scale`` (K = kh·kw·in): BinConv2D outputs the mismatch count
  ``pop`` and ``dot = K − 2·pop``. daBNN binarizes at 0, so a per-channel threshold (ReAct's
  mean shift) is refused; spatial padding of a binary conv is −1 in daBNN (see the summary's
  ``padding`` entry), where the ONNX model pads with 0.
* Clip (Hardtanh, ReLU): dropped where only its sign is used (every reader is a binary conv
  and min < 0 < max: sign(clip(x)) = sign(x) under daBNN's x > 0 rule); otherwise computed
  exactly from daBNN's ops as ``hi − relu((hi − lo) − relu(x − lo))``; the first shift is
  folded into the producer when possible. A Clip followed only by a MaxPool is moved after it
  (max and clip commute), so it runs on the smaller map.
* MaxPool/AvgPool → MaxPool/AvePool; GlobalAveragePool → AvePool with the map's size as kernel.
* Add → Add (in place on an operand nobody reads later); Flatten + Gemm → FpConv2D whose
  kernel covers the whole map (weights reordered from NCHW-flatten order), as daBNN's runtime
  rejects FC layers.

daBNN's Affine, Add and Relu overwrite their input: when a value is still needed later, the
converter copies it first with a 1×1 MaxPool (counted in the summary's ``extra_layers``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters import ir
from converters.backends.dabnn import bits, check, schema
from converters.backends.dabnn.model import DabFormatError, DabModel, Input, Layer, Tensor
from converters.errors import UnsupportedModelError

CONVERTER_NAME = "bnnbench-dabnn"
CONVERTER_VERSION = "0.1.0"

PADDING_NOTE = (
    "daBNN pads binary convolutions with -1 (bit 0): each padded tap adds -w to the dot "
    "product where the ONNX model (zero padding) adds 0, so border outputs of every padded "
    "binary conv differ by -scale[o] * (sum of the weights on padded taps); interior outputs "
    "and FP convs are unchanged. daBNN also binarizes an exact 0 to -1 (ONNX Sign(0) = 0)."
)


@dataclass
class _Pending:
    """An emitted layer whose coefficients may still change (folds) before serialisation."""

    layer: Layer
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ir_index: int = -1  # the IR node it was emitted for


@dataclass
class Lowered:
    model: DabModel
    exact: dict[str, str]  # IR value -> daBNN tensor whose value right after its layer is it
    report: dict[str, Any]


class _Lowering:
    def __init__(self, graph: ir.Graph) -> None:
        self.g = graph
        self.out_canon = ""
        self.pending: list[_Pending] = []
        self.producer: dict[str, _Pending] = {}
        self.buffer_of: dict[str, int] = {}
        self.values_on: dict[int, set[str]] = defaultdict(set)
        self.tensor_of: dict[str, str] = {}
        self.exact: dict[str, str] = {}
        self.reads: Counter[str] = Counter()
        self.names: set[str] = set()
        self.extra: Counter[str] = Counter()
        self.extra_values = 0
        self.clips = Counter[str]()
        self.warnings: list[str] = []
        self.cur = -1  # index of the IR node being lowered
        self.n_buffers = 1  # buffer 0 is the input

    # -- helpers
    def fail(self, n: ir.Node, msg: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"daBNN: {msg}", node=n.name, op=n.kind)

    def canon(self, v: str) -> str:
        while v in self.alias:
            v = self.alias[v]
        return v

    def tensor(self, v: str) -> str:
        return self.tensor_of[self.canon(v)]

    def unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.names:
            k += 1
            name = f"{base}#{k}"
        self.names.add(name)
        return name

    def last_reader(self, v: str) -> float:
        if v == self.out_canon:
            return float("inf")
        return max(self.readers.get(v, [-1]))

    def live_after(self, t: str, i: int) -> bool:
        return any(self.last_reader(v) > i for v in self.values_on[self.buffer_of[t]])

    def emit(
        self,
        ltype: str,
        name: str,
        params: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
    ) -> _Pending:
        layer = Layer(ltype, params, self.unique(name))
        for t in layer.inputs():
            self.reads[t] += 1
        p = _Pending(layer, arrays or {}, self.cur)
        self.pending.append(p)
        out = params["output"]
        self.names.add(out)
        self.producer[out] = p
        if ltype in schema.IN_PLACE_LAYERS:
            b = self.buffer_of[layer.inputs()[0]]
            self.values_on[b].clear()  # overwritten
        else:
            b = self.n_buffers
            self.n_buffers += 1
        self.buffer_of[out] = b
        return p

    def bind(self, v: str, t: str) -> None:
        """IR value ``v`` (canonical) now lives in tensor ``t``, exactly."""
        self.tensor_of[v] = t
        self.exact[v] = t
        self.values_on[self.buffer_of[t]].add(v)

    def inexact(self, t: str) -> None:
        for v in [v for v, tt in self.exact.items() if tt == t]:
            del self.exact[v]

    def copy(self, t: str, i: int, name: str) -> str:
        """A fresh buffer with ``t``'s value (1×1 max pool), for an in-place op."""
        out = self.unique(f"{t}:copy")
        self.emit(
            "MaxPool",
            f"{name}/copy",
            {
                "input": t,
                "kernel_shape": [1, 1],
                "pads": [0, 0, 0, 0],
                "strides": [1, 1],
                "output": out,
            },
        )
        self.tshape[out] = self.tshape[t]
        self.extra["copy (1x1 MaxPool)"] += 1
        self.extra_values += int(np.prod(self.tshape[t]))
        return out

    def writable(self, t: str, i: int, name: str) -> str:
        return self.copy(t, i, name) if self.live_after(t, i) else t

    def sole_use(self, t: str, allowed: set[int]) -> bool:
        """Only IR nodes in ``allowed`` read ``t``'s value, before or after now."""
        if self.reads[t]:
            return False
        return all(
            v != self.out_canon and set(self.readers.get(v, [])) <= allowed
            for v in self.values_on[self.buffer_of[t]]
        )

    # -- affine with folding
    def fold_into(self, t: str, a: np.ndarray, b: np.ndarray, allowed: set[int]) -> bool:
        """Apply ``a·x + b`` to the value in ``t`` by changing its producer; True if done."""
        p = self.producer.get(t)
        if p is None or not self.sole_use(t, allowed):
            return False
        if p.layer.type == "Affine":
            p.arrays["a"], p.arrays["b"] = p.arrays["a"] * a, p.arrays["b"] * a + b
        elif p.layer.type == "FpConv2D":
            p.arrays["weight"] = p.arrays["weight"] * a[:, None, None, None]
            p.arrays["bias"] = p.arrays.get("bias", np.zeros_like(b)) * a + b
        elif (p.layer.type == "Add" and np.all(a == 1)) or (
            p.layer.type == "MaxPool" and np.all(a > 0)
        ):
            # (u + v) + b = (u + b) + v;  max(a·u + b) = a·max(u) + b for a > 0
            u = p.layer.inputs()[0]
            self.reads[u] -= 1  # this layer itself
            ok = self.fold_into(u, a, b, allowed | {p.ir_index})
            self.reads[u] += 1
            if not ok:
                return False
        else:
            return False
        self.inexact(t)
        return True

    def rename_output(self, t: str, new: str) -> str:
        p = self.producer.pop(t)
        p.layer.params["output"] = new
        self.names.add(new)
        self.producer[new] = p
        self.buffer_of[new] = self.buffer_of[t]
        self.tshape[new] = self.tshape[t]
        return new

    def affine(
        self, t: str, a: np.ndarray, b: np.ndarray, out: str, i: int, name: str, extra: bool
    ) -> str:
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        if self.fold_into(t, a, b, {i}):
            return self.rename_output(t, out)
        src = self.writable(t, i, name)
        self.emit("Affine", name, {"input": src, "a": "", "b": "", "output": out}, {"a": a, "b": b})
        self.tshape[out] = self.tshape[src]
        if extra:
            self.extra["Affine (clip)"] += 1
            self.extra_values += int(np.prod(self.tshape[src]))
        return out

    def relu(self, t: str, out: str, i: int, name: str) -> str:
        src = self.writable(t, i, name)
        self.emit("Relu", name, {"input": src, "output": out})
        self.tshape[out] = self.tshape[src]
        self.extra["Relu (clip)"] += 1
        self.extra_values += int(np.prod(self.tshape[src]))
        return out

    # -- preparation
    def prepare(self) -> list[ir.Node]:
        g = self.g
        nodes = list(g.nodes)
        readers: dict[str, list[int]] = defaultdict(list)
        for i, n in enumerate(nodes):
            for v in n.inputs:
                readers[v].append(i)
        # Clip -> MaxPool becomes MaxPool -> Clip (exact: clip is monotone)
        for i, n in enumerate(nodes):
            if (
                isinstance(n, ir.Clip)
                and n.output != g.output
                and len(readers[n.output]) == 1
                and isinstance(nodes[readers[n.output][0]], ir.MaxPool)
            ):
                j = readers[n.output][0]
                mp = nodes[j]
                assert isinstance(mp, ir.MaxPool)
                tmp = f"{mp.output}:before_clip"
                nodes[i] = dataclasses.replace(mp, inputs=[n.inputs[0]], output=tmp, onnx_output="")
                nodes[j] = dataclasses.replace(
                    n, inputs=[tmp], output=mp.output, out_shape=mp.out_shape, onnx_output=""
                )
                self.clips["moved after max pool"] += 1
        readers = defaultdict(list)
        for i, n in enumerate(nodes):
            for v in n.inputs:
                readers[v].append(i)
        self.alias: dict[str, str] = {}
        self.flat_src: dict[str, str] = {}
        for n in nodes:
            if isinstance(n, ir.Flatten):
                self.alias[n.output] = n.inputs[0]
                self.flat_src[n.output] = n.inputs[0]
            elif isinstance(n, ir.Clip) and n.output != g.output:
                if n.min == -np.inf and n.max == np.inf:
                    self.alias[n.output] = n.inputs[0]
                elif (
                    n.min < 0 < n.max
                    and readers[n.output]
                    and all(isinstance(nodes[r], ir.BinConv) for r in readers[n.output])
                ):
                    self.alias[n.output] = n.inputs[0]
                    self.clips["dropped (only its sign is used)"] += 1
        self.readers: dict[str, list[int]] = defaultdict(list)
        for i, n in enumerate(nodes):
            if n.output in self.alias:
                continue
            for v in n.inputs:
                self.readers[self.canon(v)].append(i)
        self.out_canon = self.canon(g.output)
        return nodes

    # -- node lowering
    def run(self) -> DabModel:
        g = self.g
        shp = g.input_shape
        if len(shp) != 4 or shp[0] != 1:
            raise UnsupportedModelError(
                f"daBNN: input shape {list(shp)}; daBNN takes one NCHW image (batch 1)"
            )
        nodes = self.prepare()
        self.tshape: dict[str, tuple[int, ...]] = {}
        in_shape = (1, shp[2], shp[3], shp[1])
        self.names.add(g.input)
        self.buffer_of[g.input] = 0
        self.tshape[g.input] = in_shape
        self.bind(g.input, g.input)
        for i, n in enumerate(nodes):
            if n.output in self.alias:
                continue
            if len(n.out_shape) == 4 and n.out_shape[2] != n.out_shape[3]:
                raise self.fail(
                    n,
                    f"non-square output {n.out_shape[2]}×{n.out_shape[3]}: "
                    "daBNN's Mat lays out only square maps as NHWC",
                )
            handler = getattr(self, f"op_{type(n).__name__}", None)
            if handler is None:
                raise self.fail(n, f"{n.kind} has no daBNN equivalent")
            self.cur = i
            handler(n, i)
        out_t = self.tensor(g.output)
        if not self.pending or self.pending[-1].layer.params["output"] != out_t:
            raise UnsupportedModelError(
                "daBNN: the model's output is not computed by its "
                "last layer (daBNN has no declared outputs)"
            )
        return self.finish(in_shape)

    def _pads(self, n: ir.Node, pads: ir.Pads) -> list[int]:
        t, left, b, r = pads
        if t != b or left != r:
            raise self.fail(
                n,
                f"asymmetric padding {list(pads)} (top, left, bottom, right): "
                "daBNN pads both sides of an axis equally",
            )
        return [t, left, t, left]

    def _square(self, n: ir.Node, kernel: tuple[int, int]) -> None:
        if kernel[0] != kernel[1]:
            raise self.fail(
                n,
                f"non-square kernel {kernel[0]}×{kernel[1]} (daBNN's Mat reads "
                "a 4-D weight's kh as its width)",
            )

    def op_Conv(self, n: ir.Conv, i: int) -> None:
        self._square(n, n.kernel)
        x = self.tensor(n.inputs[0])
        if self.tshape[x][3] != n.in_c:
            raise self.fail(n, "grouped convolution (daBNN has groups = 1)")
        weight_ohwi = np.transpose(n.weight, (0, 2, 3, 1))
        self._fp_conv(n, x, weight_ohwi, self._pads(n, n.pads), list(n.strides))
        self.tshape[n.output] = (1, n.out_shape[2], n.out_shape[3], n.out_c)
        self.bind(n.output, n.output)

    def _fp_conv(
        self, n: ir.Conv | ir.Gemm, x: str, weight_ohwi: np.ndarray, pads: list, strides: list
    ) -> None:
        """An FpConv2D layer (daBNN's float conv; also what a Gemm becomes), its weights and
        bias as float64 arrays."""
        arrays = {"weight": weight_ohwi.astype(np.float64)}
        if n.bias is not None:
            arrays["bias"] = np.asarray(n.bias, np.float64)
        fields = {"input": x, "weight": "", "bias": "", "pads": pads, "strides": strides}
        self.emit("FpConv2D", n.name, {**fields, "dilations": [1, 1], "output": n.output}, arrays)

    def op_BinConv(self, n: ir.BinConv, i: int) -> None:
        if n.threshold is not None:
            raise self.fail(
                n,
                "binary conv with a per-channel threshold (ReAct-style mean "
                "shift sign(x - t)): daBNN binarizes at 0 and has no threshold "
                "(BiBench Table 4: daBNN supports no activation mean shift)",
            )
        self._square(n, n.kernel)
        x = self.tensor(n.inputs[0])
        if self.tshape[x][3] != n.in_c:
            raise self.fail(n, "grouped convolution (daBNN has groups = 1)")
        why = check.binconv_constraints(
            n.in_c,
            n.out_c,
            n.kernel,
            n.strides,
            (n.out_shape[2], n.out_shape[3]),
            self.tshape[x][2],
            n.pads[1],
        )
        if why:
            raise self.fail(n, "; ".join(why))
        src = self.canon(n.inputs[0])
        prod = next((m for m in self.g.nodes if m.output == src), None)
        if isinstance(prod, ir.Clip) and prod.min >= 0:
            self.warnings.append(
                f"{n.name}: input comes from a clip at [{prod.min:g}, "
                f"{prod.max:g}]; its exact zeros binarize to -1 in daBNN "
                "and to +1 in the IR"
            )
        w_ohwi = np.transpose(n.weight_sign, (0, 2, 3, 1))
        words, align = bits.pack_weights(w_ohwi)
        pop = self.unique(f"{n.output}:mismatches")
        self.emit(
            "BinConv2D",
            n.name,
            {
                "input": x,
                "weight": "",
                "pads": self._pads(n, n.pads),
                "strides": list(n.strides),
                "dilations": [1, 1],
                "output": pop,
            },
            {"bits": words, "shape": np.array(w_ohwi.shape), "align": np.array(align)},
        )
        self.tshape[pop] = (1, n.out_shape[2], n.out_shape[3], n.out_c)
        k = float(n.kernel[0] * n.kernel[1] * n.in_c)
        scale = n.scale.astype(np.float64)
        self.emit(
            "Affine",
            f"{n.name}/affine",
            {"input": pop, "a": "", "b": "", "output": n.output},
            {"a": -2.0 * scale, "b": n.bias.astype(np.float64) + k * scale},
        )
        self.tshape[n.output] = self.tshape[pop]
        self.bind(n.output, n.output)

    def op_Affine(self, n: ir.Affine, i: int) -> None:
        out = self.affine(self.tensor(n.inputs[0]), n.scale, n.bias, n.output, i, n.name, False)
        self.bind(n.output, out)

    def op_Clip(self, n: ir.Clip, i: int) -> None:
        x = self.tensor(n.inputs[0])
        c = self.tshape[x][3]
        lo, hi = float(n.min), float(n.max)
        one = np.ones(c)
        self.clips["computed exactly (Relu/Affine)"] += 1
        if lo == 0 and hi == np.inf:
            out = self.relu(x, n.output, i, n.name)
        elif hi == np.inf:  # relu(x - lo) + lo
            t = self.affine(
                x, one, -lo * one, self.unique(f"{n.output}:shift"), i, f"{n.name}/shift", True
            )
            t = self.relu(t, self.unique(f"{n.output}:relu"), i, f"{n.name}/relu")
            out = self.affine(t, one, lo * one, n.output, i, f"{n.name}/unshift", True)
        elif lo == -np.inf:  # hi - relu(hi - x)
            t = self.affine(
                x, -one, hi * one, self.unique(f"{n.output}:flip"), i, f"{n.name}/flip", True
            )
            t = self.relu(t, self.unique(f"{n.output}:relu"), i, f"{n.name}/relu")
            out = self.affine(t, -one, hi * one, n.output, i, f"{n.name}/unflip", True)
        else:  # hi - relu((hi - lo) - relu(x - lo))
            t = self.affine(
                x, one, -lo * one, self.unique(f"{n.output}:shift"), i, f"{n.name}/shift", True
            )
            t = self.relu(t, self.unique(f"{n.output}:relu_lo"), i, f"{n.name}/relu_lo")
            t = self.affine(
                t, -one, (hi - lo) * one, self.unique(f"{n.output}:flip"), i, f"{n.name}/flip", True
            )
            t = self.relu(t, self.unique(f"{n.output}:relu_hi"), i, f"{n.name}/relu_hi")
            out = self.affine(t, -one, hi * one, n.output, i, f"{n.name}/unflip", True)
        self.bind(n.output, out)

    def _pool(self, n: ir.MaxPool | ir.AvgPool, ltype: str, i: int) -> None:
        x = self.tensor(n.inputs[0])
        pads = self._pads(n, n.pads)
        if ltype == "AvePool" and any(pads):
            raise self.fail(
                n,
                "padded average pooling (daBNN's NEON 2×2 kernel counts the "
                "padding, its fallback does not)",
            )
        self.emit(
            ltype,
            n.name,
            {
                "input": x,
                "kernel_shape": list(n.kernel),
                "pads": pads,
                "strides": list(n.strides),
                "output": n.output,
            },
        )
        self.tshape[n.output] = (1, n.out_shape[2], n.out_shape[3], n.out_shape[1])
        self.bind(n.output, n.output)

    def op_MaxPool(self, n: ir.MaxPool, i: int) -> None:
        self._pool(n, "MaxPool", i)

    def op_AvgPool(self, n: ir.AvgPool, i: int) -> None:
        self._pool(n, "AvePool", i)

    def op_GlobalAvgPool(self, n: ir.GlobalAvgPool, i: int) -> None:
        x = self.tensor(n.inputs[0])
        _, h, w, c = self.tshape[x]
        # daBNN's converter writes kernel -1 for global pooling, which its runtime's pooling
        # loops do not handle; the explicit map size is the same computation
        self.emit(
            "AvePool",
            n.name,
            {
                "input": x,
                "kernel_shape": [h, w],
                "pads": [0, 0, 0, 0],
                "strides": [1, 1],
                "output": n.output,
            },
        )
        self.tshape[n.output] = (1, 1, 1, c)
        self.bind(n.output, n.output)

    def op_Add(self, n: ir.Add, i: int) -> None:
        a, b = (self.tensor(v) for v in n.inputs)
        if self.tshape[a] != self.tshape[b]:
            raise self.fail(n, "broadcasting add (daBNN adds equal shapes)")
        if self.live_after(a, i) and not self.live_after(b, i):
            a, b = b, a  # daBNN adds into input1's buffer: pick the operand that is done
        a = self.writable(a, i, n.name)
        self.emit("Add", n.name, {"input1": a, "input2": b, "output": n.output})
        self.tshape[n.output] = self.tshape[a]
        self.bind(n.output, n.output)

    def op_Gemm(self, n: ir.Gemm, i: int) -> None:
        v = self.canon(n.inputs[0])
        x = self.tensor_of[v]
        _, h, w, c = self.tshape[x]
        if h * w * c != n.weight.shape[1]:
            raise self.fail(n, f"Gemm over {n.weight.shape[1]} features of a {h}×{w}×{c} map")
        if h != w:
            raise self.fail(n, f"Gemm after a non-square {h}×{w} map")
        if h * w > 1 and not any(self.canon(f) == v for f in self.flat_src):
            raise self.fail(n, "Gemm on a value that is not a flattened NCHW map")
        # NCHW flatten order is c·H·W + h·W + w: a kernel over the whole map, OHWI
        wk = n.weight.reshape(n.weight.shape[0], c, h, w).transpose(0, 2, 3, 1)
        self._fp_conv(n, x, wk, [0, 0, 0, 0], [1, 1])
        self.tshape[n.output] = (1, 1, 1, int(n.weight.shape[0]))
        self.bind(n.output, n.output)

    # -- serialisable model
    def finish(self, in_shape: tuple[int, ...]) -> DabModel:
        inits: list[Tensor] = []
        layers: list[Layer] = []
        for p in self.pending:
            layer, arr = p.layer, p.arrays
            par = layer.params
            base = layer.name
            if layer.type == "BinConv2D":
                par["weight"] = self.unique(f"{base}/weight")
                inits.append(
                    Tensor(
                        par["weight"],
                        schema.BIT,
                        tuple(int(s) for s in arr["shape"]),
                        bin_data=arr["bits"],
                        align_hwc_to_128=bool(arr["align"]),
                    )
                )
            elif layer.type == "FpConv2D":
                par["weight"] = self.unique(f"{base}/weight")
                w = arr["weight"].astype(np.float32)
                inits.append(Tensor(par["weight"], schema.FLOAT32, w.shape, float32_data=w))
                if "bias" in arr:
                    par["bias"] = self.unique(f"{base}/bias")
                    bias = arr["bias"].astype(np.float32)
                    inits.append(Tensor(par["bias"], schema.FLOAT32, bias.shape, float32_data=bias))
                else:
                    par.pop("bias", None)
            elif layer.type == "Affine":
                for k in ("a", "b"):
                    par[k] = self.unique(f"{base}/{k}")
                    v = arr[k].astype(np.float32)
                    inits.append(Tensor(par[k], schema.FLOAT32, v.shape, float32_data=v))
            layers.append(layer)
        return DabModel(layers, inits, [Input(self.g.input, in_shape)])


def lower(graph: ir.Graph) -> Lowered:
    """Build the daBNN model for ``graph``; raises UnsupportedModelError naming the node."""
    lw = _Lowering(graph)
    model = lw.run()
    try:
        shapes = check.check_model(model)
    except DabFormatError as exc:  # a rule the per-node checks above did not foresee
        raise UnsupportedModelError(f"daBNN: {exc}") from exc
    counts = Counter(layer.type for layer in model.layers)
    out = model.output
    report: dict[str, Any] = {
        "layer_counts": dict(sorted(counts.items())),
        "n_layers": len(model.layers),
        "n_binary_convs": counts["BinConv2D"],
        "input": {"name": model.inputs[0].name, "shape_nhwc": list(model.inputs[0].shape)},
        "output": {"name": out, "shape_nhwc": list(shapes[out])},
        "clips": dict(lw.clips),
        "extra_layers": dict(lw.extra),
        "extra_elementwise_values": lw.extra_values,
        "padding": {
            "mode": "minus_one",
            "padded_binary_convs": sum(
                1 for n in graph.nodes if isinstance(n, ir.BinConv) and any(n.pads)
            ),
            "note": PADDING_NOTE,
        },
    }
    if lw.warnings:
        report["warnings"] = lw.warnings
    return Lowered(
        model, {v: t for v, t in lw.exact.items() if v in graph.shapes or v == graph.input}, report
    )
