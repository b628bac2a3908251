"""How a binary conv's zero padding (PyTorch semantics) is expressed for LCE.

``padding="exact"`` (default):

* pads equal to TF "SAME" → ``padding="same"``; LCE's SAME-zero path (arm target) adds its
  own exact correction for the padded taps;
* pads that are TF SAME mirrored (PyTorch stride 2, pad 1 on an even size: PyTorch reads one
  padded row on top, TF SAME one at the bottom) → the conv runs on the spatially reversed
  input with a reversed kernel, SAME-zero, and its output is reversed back: exactly PyTorch's
  result, for the cost of two ``REVERSE_V2`` ops;
* anything else is refused (:class:`UnsupportedModelError`) rather than silently changed.

``padding="one"`` pads binary convs with +1 instead (LCE's fast path, what Larq models use):
SAME-aligned pads become ``PadV2(value 1)`` → ``LceBconv2d`` SAME with ``pad_values=1``; other
pads an explicit pad of the float input (with a value that binarizes to +1) and VALID. Not an
exact conversion; docs/lce.md gives its measured effect. Explicit pads are always trimmed to
the rows/cols the conv actually reads: LCE fuses a Pad into a SAME conv whenever its before/
after split looks like SAME, without checking the total (so an untrimmed (1, 1) pad on a
stride-2 conv would silently become TF's (0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass

from converters import ir
from converters.errors import UnsupportedModelError

PADDING_MODES = ("exact", "one")


@dataclass(frozen=True)
class AxisPads:
    before: int
    after: int  # trimmed: only what the op reads (can be less than the ONNX pad)
    same: tuple[int, int]  # TF "SAME" pads for this axis, or (-1, -1) if TF SAME's size differs


def axis_pads(size: int, kernel: int, stride: int, before: int, out: int) -> AxisPads:
    """Pads of one spatial axis: ``before`` as given, ``after`` reduced to the rows the
    op's last window reads, and what TF "SAME" would pad."""
    used = (out - 1) * stride + kernel  # rows spanned by the windows, padding included
    after = max(used - size - before, 0)
    if out == -(-size // stride):  # TF SAME output size is ceil(size / stride)
        total = max(used - size, 0)
        same = (total // 2, total - total // 2)
    else:
        same = (-1, -1)
    return AxisPads(before, after, same)


def spatial_pads(
    n: ir.Node, in_shape: ir.Shape, kernel: tuple[int, int], strides: tuple[int, int], pads: ir.Pads
) -> tuple[AxisPads, AxisPads]:
    t, left, _b, _r = pads
    oh, ow = int(n.out_shape[2]), int(n.out_shape[3])
    return (
        axis_pads(int(in_shape[2]), kernel[0], strides[0], t, oh),
        axis_pads(int(in_shape[3]), kernel[1], strides[1], left, ow),
    )


@dataclass(frozen=True)
class BconvPadding:
    """How one binary conv's padding is expressed for LCE (recorded in the summary)."""

    node: str
    onnx_pads: tuple[int, int, int, int]  # top, left, bottom, right as in the model
    read_pads: tuple[int, int, int, int]  # what the conv actually reads
    mapping: str  # valid | same-zero | same-zero-mirrored | same-one | explicit-one
    flip: tuple[bool, bool]  # (H, W) reversed around the conv
    exact: bool  # padded taps contribute 0, as in PyTorch


def plan_bconv_padding(node: ir.BinConv, in_shape: ir.Shape, mode: str = "exact") -> BconvPadding:
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode {mode!r}; choose from {', '.join(PADDING_MODES)}")
    ah, aw = spatial_pads(node, in_shape, node.kernel, node.strides, node.pads)
    read = (ah.before, aw.before, ah.after, aw.after)
    base = {"node": node.name, "onnx_pads": tuple(node.pads), "read_pads": read}
    if not any(read):
        return BconvPadding(**base, mapping="valid", flip=(False, False), exact=True)
    same_ok = [(a.before, a.after) == a.same for a in (ah, aw)]
    mirror_ok = [(a.after, a.before) == a.same for a in (ah, aw)]
    if mode == "exact":
        if all(s or m for s, m in zip(same_ok, mirror_ok, strict=True)):
            flip = (not same_ok[0], not same_ok[1])
            mapping = "same-zero-mirrored" if any(flip) else "same-zero"
            return BconvPadding(**base, mapping=mapping, flip=flip, exact=True)
        raise UnsupportedModelError(
            f"binary conv padding {list(node.pads)} (stride {list(node.strides)}, input "
            f"{list(in_shape[2:])}) is neither TF SAME nor mirrored SAME: LCE cannot express "
            "its zero padding exactly (convert with padding='one' to pad with +1 instead)",
            node.name,
            "Conv",
        )
    if all(same_ok):
        return BconvPadding(**base, mapping="same-one", flip=(False, False), exact=False)
    return BconvPadding(**base, mapping="explicit-one", flip=(False, False), exact=False)


def plan_graph_padding(graph: ir.Graph, mode: str = "exact") -> list[BconvPadding]:
    return [plan_bconv_padding(n, graph.shapes[n.inputs[0]], mode) for n in graph.binary_convs()]
