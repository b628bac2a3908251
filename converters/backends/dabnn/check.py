"""Shape inference and the rules daBNN's runtime imposes on a model (from its sources at
commit d93aa95: dabnn/net.cpp, dabnn/mat.h, dabnn/layers/*, dabnn/bconv.h).

The converter runs :func:`check_model` on everything it writes; a violation is a converter
bug or a model daBNN cannot run, never something to ship.
"""

from __future__ import annotations

from converters.backends.dabnn import bits, schema
from converters.backends.dabnn.model import DabFormatError, DabModel, Layer

Shape4 = tuple[int, int, int, int]

# AArch64 "direct" 3×3 binary conv kernels exist for these input channel counts
DIRECT_3X3_CHANNELS = (64, 128, 256, 512, 1024)


def sym_pads(p: list[int], what: str) -> tuple[int, int]:
    """daBNN reads pads[0] (vertical) and pads[1] (horizontal) for both sides."""
    if len(p) == 2:
        return p[0], p[1]
    if len(p) == 4 and p[0] == p[2] and p[1] == p[3]:
        return p[0], p[1]
    raise DabFormatError(f"{what}: pads {p} are not symmetric (daBNN pads both sides equally)")


def pair(p: list[int] | None, what: str, default: int) -> tuple[int, int]:
    if not p:
        return default, default
    if len(p) == 2 or (len(p) == 4 and p[0] == p[2] and p[1] == p[3]):
        return p[0], p[1]
    raise DabFormatError(f"{what}: {p} is not a (h, w) pair")


def binconv_constraints(
    c_in: int,
    c_out: int,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    out_hw: tuple[int, int],
    in_w: int,
    pad_w: int,
) -> list[str]:
    """Why daBNN cannot run this binary conv on every target (empty if it can). The AArch64
    rules were confirmed by running daBNN's runtime under qemu-aarch64 (docs/dabnn.md)."""
    why = []
    if c_in % 64:
        why.append(
            f"{c_in} input channels: daBNN bit-packs activations 64 channels per word "
            "and needs a multiple of 64"
        )
        return why
    words = c_in // 64
    if (in_w * words) % 2 or ((in_w + 2 * pad_w) * words) % 2:
        why.append(
            f"a {in_w}-wide map of {c_in} channels (plus padding {pad_w}) packs to an odd "
            "number of 64-bit words per row; daBNN's bit Mat asserts 16-byte rows"
        )
    if c_in == 64 and (kernel != (3, 3) or strides[0] != strides[1]):
        why.append(
            "64 input channels with a kernel other than 3×3 (or unequal strides): "
            "daBNN's AArch64 binary GEMM aborts (k % 2 == 0) on 64-channel filters, "
            "which are packed without 128-bit alignment"
        )
    if c_in == 64 and kernel == (3, 3) and (out_hw[0] * out_hw[1] % 2 or c_out % 2):
        why.append(
            "64-input-channel 3×3 binary conv with an odd output size or channel count "
            "(daBNN's AArch64 kernel asserts both even)"
        )
    if (
        kernel == (3, 3)
        and strides[0] == strides[1]
        and c_in in DIRECT_3X3_CHANNELS[1:]
        and not (c_in == 128 and c_out == 128)
        and c_out % 128
    ):
        why.append(
            f"{c_out} output channels: daBNN's AArch64 3×3 direct binary conv needs a "
            "multiple of 128 here"
        )
    return why


def _conv_shape(model: DabModel, layer: Layer, x: Shape4, binary: bool) -> Shape4:
    p = layer.params
    w = model.tensor(p["weight"])
    if len(w.shape) != 4:
        raise DabFormatError(f"{layer.name}: weight {w.name!r} is not 4-D")
    o, kh, kw, c = w.shape
    if c != x[3]:
        raise DabFormatError(f"{layer.name}: weight has {c} input channels, input has {x[3]}")
    if kh != kw:
        # dabnn/mat.h stores a 4-D shape's kh in the Mat's width: non-square kernels are
        # read transposed
        raise DabFormatError(f"{layer.name}: non-square kernel {kh}×{kw}")
    ph, pw = sym_pads(p.get("pads") or [0, 0], layer.name)
    sh, sw = pair(p.get("strides"), f"{layer.name} strides", 1)
    if any(d != 1 for d in (p.get("dilations") or [])):
        raise DabFormatError(f"{layer.name}: daBNN runs convs with dilation 1 only")
    oh, ow = (x[1] + 2 * ph - kh) // sh + 1, (x[2] + 2 * pw - kw) // sw + 1
    if binary:
        if not w.is_bit or w.bin_data is None:
            raise DabFormatError(f"{layer.name}: BinConv2D weight {w.name!r} is not a bit tensor")
        if p.get("bias"):
            raise DabFormatError(f"{layer.name}: daBNN's BinConv2D ignores a bias")
        nwords = o * bits.words_per_filter(kh, kw, c)
        if w.bin_data.size != nwords:
            raise DabFormatError(
                f"{layer.name}: {w.bin_data.size} weight words, expected {nwords} for {w.shape}"
            )
        if bool(w.align_hwc_to_128) != bits.aligned_to_128(c):
            raise DabFormatError(
                f"{layer.name}: align_hwc_to_128 should be "
                f"{bits.aligned_to_128(c)} for {c} input channels"
            )
        why = binconv_constraints(c, o, (kh, kw), (sh, sw), (oh, ow), x[2], pw)
        if why:
            raise DabFormatError(f"{layer.name}: " + "; ".join(why))
    else:
        if w.is_bit or w.float32_data is None or w.float32_data.size != o * kh * kw * c:
            raise DabFormatError(
                f"{layer.name}: FpConv2D weight {w.name!r} has no {o}×{kh}×{kw}×{c} float data"
            )
        if p.get("bias"):
            b = model.tensor(p["bias"])
            if b.float32_data is None or b.float32_data.size != o:
                raise DabFormatError(f"{layer.name}: bias {b.name!r} is not {o} floats")
    return (1, oh, ow, o)


def _pool_shape(layer: Layer, x: Shape4) -> Shape4:
    p = layer.params
    k = p.get("kernel_shape") or []
    if len(k) != 2 or min(k) < 1:
        raise DabFormatError(
            f"{layer.name}: kernel_shape {k} (daBNN's runtime has no "
            "global-pool form; give the kernel size)"
        )
    ph, pw = sym_pads(p.get("pads") or [0, 0], layer.name)
    if layer.type == "AvePool" and (ph or pw):
        raise DabFormatError(
            f"{layer.name}: padded average pooling (daBNN's NEON 2×2 path "
            "counts padding, its fallback does not)"
        )
    sh, sw = pair(p.get("strides"), f"{layer.name} strides", 1)
    if sh < 1 or sw < 1:
        raise DabFormatError(f"{layer.name}: strides {sh}, {sw}")
    if layer.type == "MaxPool" and tuple(k) in ((2, 2), (3, 3)) and x[3] % 4:
        # the NEON 2×2/3×3 max pool handles channels four at a time and skips the rest
        raise DabFormatError(
            f"{layer.name}: {k[0]}×{k[1]} max pool over {x[3]} channels "
            "(daBNN's NEON kernel needs a multiple of 4)"
        )
    return (1, (x[1] + 2 * ph - k[0]) // sh + 1, (x[2] + 2 * pw - k[1]) // sw + 1, x[3])


def _vector(model: DabModel, name: str, n: int, what: str) -> None:
    t = model.tensor(name)
    ok = (n, 1) if what == "slope" else (n,)  # PRelu also takes one shared slope
    if t.is_bit or t.float32_data is None or t.float32_data.size not in ok:
        raise DabFormatError(f"{what} {name!r} must hold {n} floats")


def infer_shapes(model: DabModel) -> dict[str, Shape4]:
    """NHWC shape of every activation, following daBNN's Shaper; checks each layer."""
    if not model.inputs:
        raise DabFormatError("model has no input")
    inp = model.inputs[0]
    if len(inp.shape) != 4 or inp.shape[0] != 1:
        raise DabFormatError(f"input shape {inp.shape} is not NHWC with batch 1")
    shapes: dict[str, Shape4] = {inp.name: tuple(inp.shape)}  # type: ignore[dict-item]
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({layer.type}, {layer.name!r})"
        if layer.type not in schema.RUNTIME_LAYERS:
            raise DabFormatError(
                f'{where}: daBNN\'s runtime rejects {layer.type} layers ("Not supported op")'
            )
        try:
            ins = [shapes[n] for n in layer.inputs()]
        except KeyError as exc:
            raise DabFormatError(f"{where}: reads {exc.args[0]!r} before it is computed") from None
        if not layer.output:
            raise DabFormatError(f"{where}: no output name")
        if layer.output in shapes:
            # daBNN would reuse the existing buffer under that name
            raise DabFormatError(f"{where}: output {layer.output!r} is written twice")
        x = ins[0]
        t = layer.type
        if t in ("FpConv2D", "BinConv2D"):
            y = _conv_shape(model, layer, x, t == "BinConv2D")
        elif t in ("MaxPool", "AvePool"):
            y = _pool_shape(layer, x)
        elif t == "Affine":
            _vector(model, layer.params["a"], x[3], "a")
            _vector(model, layer.params["b"], x[3], "b")
            y = x
        elif t == "PRelu":
            _vector(model, layer.params["slope"], x[3], "slope")
            y = x
        elif t == "Add":
            if ins[0] != ins[1]:
                raise DabFormatError(f"{where}: adds {ins[0]} and {ins[1]}")
            y = x
        elif t == "Concat":
            if layer.params.get("axis") != 3 or len(ins) != 2:
                raise DabFormatError(f"{where}: daBNN concatenates two inputs along channels")
            y = (1, x[1], x[2], ins[0][3] + ins[1][3])
        elif t == "Relu":
            y = x
        else:
            raise DabFormatError(f"{where}: {t} is not produced by this converter")
        shapes[layer.output] = y
    return shapes


def check_model(model: DabModel) -> dict[str, Shape4]:
    """Every rule above plus daBNN's memory model; returns the shapes."""
    if model.version != schema.MODEL_VERSION:
        raise DabFormatError(
            f"version {model.version}: daBNN's runtime requires {schema.MODEL_VERSION}"
        )
    names = [t.name for t in model.initializers]
    if len(set(names)) != len(names):
        raise DabFormatError("initializer names are not unique")
    shapes = infer_shapes(model)
    read = {n for layer in model.layers for n in layer.inputs()} | {model.inputs[0].name}
    for name, s in shapes.items():
        if s[1] != s[2]:
            # dabnn/mat.h builds an activation's Mat with H as its width: only square maps
            # are laid out as the NHWC buffer they are
            raise DabFormatError(f"{name!r}: non-square feature map {s[1]}×{s[2]}")
        if name in read and (s[2] * s[3]) % 4:
            raise DabFormatError(
                f"{name!r}: a row of {s[2]}×{s[3]} floats is not 16-byte "
                "aligned, which daBNN's Mat requires"
            )
    _check_in_place(model)
    return shapes


def _check_in_place(model: DabModel) -> None:
    """Affine/Add/Relu/PRelu overwrite their input's buffer: reading any other name of that
    buffer afterwards would see the new values."""
    buf: dict[str, int] = {model.inputs[0].name: 0}
    version: dict[int, int] = {0: 0}
    seen: dict[str, int] = {model.inputs[0].name: 0}
    for layer in model.layers:
        for n in layer.inputs():
            if seen[n] != version[buf[n]]:
                raise DabFormatError(
                    f"layer {layer.name!r} reads {n!r} after an in-place layer overwrote its buffer"
                )
        if layer.type in schema.IN_PLACE_LAYERS:
            b = buf[layer.inputs()[0]]
            version[b] += 1
        else:
            b = len(version)
            version[b] = 0
        buf[layer.output] = b
        seen[layer.output] = version[b]
