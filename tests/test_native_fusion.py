"""Layer fusion in the native engine (native/src/fuse.c) changes no result.

A context folds clips and residual adds into the layer before them, lets a binary conv
pack its output straight into the next binary conv's bit image and a padded stem conv read
the NCHW model input into its padded copy. Each model here is run
fused and unfused (``NativeEngine(fuse=False)``) with every kernel set this CPU has and 1
and 3 threads: the outputs must be bit-identical (same kernel set on both sides), and the
per-layer profile shows which layers were folded (a folded layer reads exactly 0 ms), so a
pattern that silently stops fusing fails too.
"""

from __future__ import annotations

import numpy as np
import pytest
from native_helpers import input_for, rand_f32, rand_sign

from native import format as F
from native.engine import NativeEngine, available_isas


def _bconv(rng, inputs, out, c, oc, k=3, stride=1, pad=1, thr=None):
    return F.Conv2dBin(
        inputs,
        out,
        weight_sign=rand_sign(rng, (oc, c, k, k)),
        threshold=thr,
        scale=rand_f32(rng, (oc,), 0.2),
        bias=rand_f32(rng, (oc,)),
        strides=(stride, stride),
        pads=(pad, pad, pad, pad),
    )


def _chain(rng) -> tuple[F.NativeModel, set[int]]:
    """bconv -> clip -> bconv -> bconv -> clip (thresholds inside) -> bconv, word-crossing
    channel counts, pads 1 / 0 / 2, a stride 2: three hand-offs, buffers alternating."""
    c0, c1, c2, c3, c4 = 67, 130, 64, 45, 9
    layers = [
        _bconv(rng, [0], 1, c0, c1, thr=rand_f32(rng, (c0,), 0.3)),
        F.Clip([1], 2, min=-1.0, max=1.0),
        _bconv(rng, [2], 3, c1, c2, k=1, pad=0, thr=rand_f32(rng, (c1,), 0.5)),
        _bconv(rng, [3], 4, c2, c3, stride=2, pad=2),
        F.Clip([4], 5, min=-1.5, max=0.5),
        _bconv(rng, [5], 6, c3, c4, thr=np.full(c3, 0.5, np.float32)),  # t == hi: allowed
        F.GlobalAvgPool([6], 7),
    ]
    return F.NativeModel((2, c0, 9, 11), layers, n_values=8, output_id=7), {1, 4}


def _clips_and_residuals(rng) -> tuple[F.NativeModel, set[int]]:
    """FP32 conv -> clip, bconv -> clip read twice (no hand-off, but the clip folds),
    add -> clip, and a clip whose range excludes the next conv's threshold."""
    c = 70
    layers = [
        F.Conv2dF32(
            [0],
            1,
            weight=rand_f32(rng, (c, 3, 3, 3), 0.5),
            bias=rand_f32(rng, (c,)),
            pads=(1, 1, 1, 1),
        ),
        F.Clip([1], 2, min=-1.0, max=1.0),  # folds into the conv
        _bconv(rng, [2], 3, c, c),
        F.Clip([3], 4, min=-1.0, max=1.0),  # folds into the bconv
        F.Add([4, 2], 5),
        F.Clip([5], 6, min=-1.0, max=1.0),  # folds into the add
        _bconv(rng, [6], 7, c, c),
        F.Clip([7], 8, min=0.25, max=1.0),  # t = 0 not inside: no hand-off
        _bconv(rng, [8], 9, c, c),
        F.Add([9, 6], 10),
        F.GlobalAvgPool([10], 11),
    ]
    # the clip at 7 still folds into bconv 6, so all four clips fold; the last add folds
    # into bconv 8 (a residual)
    return F.NativeModel((1, 3, 8, 8), layers, n_values=12, output_id=11), {1, 3, 5, 7, 9}


def _residuals(rng) -> tuple[F.NativeModel, set[int]]:
    """A bconv output read by the next bconv and by an add (so neither a hand-off nor a fold
    for it), then residual adds folded into the conv before them, the conv's output as the
    add's second and as its first input, one with a clip after it."""
    c = 64
    layers = [
        _bconv(rng, [0], 1, c, c),
        _bconv(rng, [1], 2, c, c),
        F.Add([1, 2], 3),  # folds into bconv 1
        F.Clip([3], 4, min=-1.0, max=1.0),  # ... and so does this
        _bconv(rng, [4], 5, c, c, thr=rand_f32(rng, (c,), 0.3)),
        F.Add([5, 4], 6),  # folds into bconv 4
    ]
    return F.NativeModel((1, c, 6, 6), layers, n_values=7, output_id=6), {2, 3, 5}


def _exact_ties(rng) -> tuple[F.NativeModel, set[int]]:
    """Bit hand-offs where the float value meets the next threshold exactly for some counts
    (v - t == 0 must give +1), channels with scale 0 (constant bits), negative and huge
    scales; then a conv with an infinite scale, whose hand-off keeps the float path."""
    c = 67  # 9 * 67 = 603 bit pairs: odd, so 0.5 * (603 - 2p) hits 0.5 exactly
    a = _bconv(rng, [0], 1, c, c)
    a.scale[:] = 0.5
    a.scale[8:16] = -0.5
    a.scale[16:20] = 0.0
    a.scale[20:24] = np.float32(3e38)
    a.bias[:24] = 0.0
    a.bias[16:18] = 1.0  # scale 0: all bits +1 ...
    a.bias[18:20] = -1.0  # ... and all -1
    b = _bconv(rng, [1], 2, c, c, thr=np.full(c, 0.5, np.float32))
    b.scale[5] = np.inf
    layers = [
        a,
        b,
        _bconv(rng, [2], 3, c, c, thr=rand_f32(rng, (c,), 0.3)),
        F.GlobalAvgPool([3], 4),
    ]
    return F.NativeModel((1, c, 7, 6), layers, n_values=5, output_id=4), set()


def _nchw_inputs(rng) -> tuple[F.NativeModel, set[int]]:
    """A padded FP32 conv that alone reads the model input transposes it straight into its
    zero-padded copy: batch 2, 5 channels (not the RGB special case), asymmetric pads, a
    stride 2. Then a padded conv reading its input twice (it and an add), which keeps the
    plain path."""
    c = 5
    layers = [
        F.Conv2dF32(
            [0],
            1,
            weight=rand_f32(rng, (c, c, 4, 3), 0.5),
            bias=rand_f32(rng, (c,)),
            strides=(2, 1),
            pads=(2, 1, 1, 0),
        ),
        F.Conv2dF32(
            [1],
            2,
            weight=rand_f32(rng, (c, c, 3, 3), 0.5),
            bias=rand_f32(rng, (c,)),
            pads=(1, 1, 1, 1),
        ),
        F.Add([2, 1], 3),
    ]
    return F.NativeModel((2, c, 13, 10), layers, n_values=4, output_id=3), set()


MODELS = [_chain, _clips_and_residuals, _residuals, _exact_ties, _nchw_inputs]


def test_nchw_input_fusion_only_for_the_input_s_one_reader():
    model, _ = _nchw_inputs(np.random.default_rng(3))
    with NativeEngine(F.dumps(model)) as eng:
        assert eng.fusion() == [{"nchw_input"}, set(), set()]
    with NativeEngine(F.dumps(model), fuse=False) as eng:
        assert eng.fusion() == [set(), set(), set()]


@pytest.mark.parametrize("build", MODELS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("threads", [1, 3])
def test_fused_equals_unfused(build, threads):
    rng = np.random.default_rng(11)
    model, folded = build(rng)
    data = F.dumps(model)
    x = input_for(rng, model.input_shape)
    for isa in available_isas():
        # same ISA on both sides: FP32 layers may round differently across ISAs (FMA)
        with NativeEngine(data, threads=threads, isa=isa, fuse=False) as eng:
            want = eng.run(x)
            assert all(t > 0 for t in eng.profile(x, 0, 1)[:-1])
        with NativeEngine(data, threads=threads, isa=isa) as eng:
            got = eng.run(x)
            prof = eng.profile(x, 0, 1)
        np.testing.assert_array_equal(got, want, err_msg=f"isa={isa}")
        assert {i for i, t in enumerate(prof[:-1]) if t == 0.0} == folded, f"isa={isa}"


@pytest.mark.slow  # the zoo's ResNet-18
def test_fusion_on_the_zoo_resnet(tmp_path, monkeypatch):
    """The zoo's ResNet-18 BNN: in every block the first binary conv hands its bits to the
    second through the clip between them, and the residual add with the clip after it runs
    in the second conv's epilogue, the downsampling blocks' too (the converter runs their
    FP32 1x1 conv before the block: to_native.execution_order); the stem reads the NCHW
    input into its padded copy. Same output as unfused and as the graph's own order, where
    the downsampling blocks keep their adds."""
    from converters import api, zoo
    from converters.backends.native import convert as to_native

    entry = next(e for e in zoo.write_zoo(tmp_path, archs=("resnet18",)) if e.algorithm == "bnn")
    bnn = tmp_path / "r18.bnn"
    api.convert(entry.path, "native", bnn, verify=False)
    x = np.random.default_rng(0).standard_normal(zoo.input_shape("resnet18")).astype(np.float32)
    with NativeEngine(bnn, threads=2, fuse=False) as eng:
        want = eng.run(x)
        assert all(not f for f in eng.fusion())
    with NativeEngine(bnn, threads=2) as eng:
        got = eng.run(x)
        layers, fusion = eng.layers(), eng.fusion()
        prof = eng.profile(x, 0, 1)
    np.testing.assert_array_equal(got, want)
    bconvs = [i.index for i in layers if i.op == "conv2d_bin"]
    assert len(bconvs) == 16
    assert [fusion[i] for i in bconvs] == [{"bits_out"}, {"bits_in", "residual", "clip"}] * 8
    assert fusion[0] == {"nchw_input", "clip"}
    folded = [i.index for i in layers if i.op in ("clip", "add")]
    assert len(folded) == 25 and all(fusion[i] == {"skipped"} and prof[i] == 0.0 for i in folded)

    # the ONNX graph's own order computes the same, with 3 adds left unfused
    monkeypatch.setattr(to_native, "execution_order", lambda graph: list(graph.nodes))
    api.convert(entry.path, "native", tmp_path / "graph_order.bnn", verify=False)
    with NativeEngine(tmp_path / "graph_order.bnn", threads=2) as eng:
        np.testing.assert_array_equal(eng.run(x), got)
        assert (
            sum(
                i.op == "add" and "skipped" not in f
                for i, f in zip(eng.layers(), eng.fusion(), strict=True)
            )
            == 3
        )
