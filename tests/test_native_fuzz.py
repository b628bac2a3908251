"""Hostile and corrupted models must be rejected with an error or load fine, never crash.

Everything runs built with AddressSanitizer + UndefinedBehaviorSanitizer (`make -C native
asan`), where any out-of-bounds read, overflow or leak is a failure: the hostile headers
through the CLI, one process each; the thousands of truncations and mutations through the
corpus runner (native/tests/fuzz_load.c: the CLI's load-check-run path, many files per
process, leaks checked at its exit). A subset also goes through ctypes in this process.
Mutations use a fixed seed.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from native_helpers import NATIVE, make_native, small_network

from native import format as F
from native.engine import NativeEngine, NativeError

pytestmark = pytest.mark.slow

ASAN_CLI = NATIVE / "build" / "asan" / "bnnbench-native"
CORPUS_RUNNER = NATIVE / "build" / "asan" / "fuzz_load"
SAN_ENV = {
    **os.environ,
    "ASAN_OPTIONS": "detect_leaks=1:exitcode=99:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:exitcode=99:print_stacktrace=1",
}


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    make_native("asan", "all")


def seed_model() -> bytes:
    """Every op of the format, tiny shapes, no names: small enough to truncate everywhere."""
    model = small_network(np.random.default_rng(0), c=2, hw=5)
    for layer in model.layers:
        layer.name = ""
    model.metadata = {}
    return F.dumps(model)


@dataclass
class Outcome:
    label: str
    returncode: int
    stderr: str


def run_sanitized(cases: list[tuple[str, bytes]], tmp: Path) -> list[Outcome]:
    """Each case through the sanitized CLI, one process each."""

    def one(item: tuple[int, tuple[str, bytes]]) -> Outcome:
        i, (label, data) = item
        path = tmp / f"m{i}.bnn"
        path.write_bytes(data)
        try:
            proc = subprocess.run(
                [
                    str(ASAN_CLI),
                    str(path),
                    "--runs",
                    "1",
                    "--warmup",
                    "0",
                    "--threads",
                    "2",
                    "--max-memory-mb",
                    "16",
                ],
                capture_output=True,
                text=True,
                env=SAN_ENV,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome(label, -999, "timed out (hang?)")
        finally:
            path.unlink()
        return Outcome(label, proc.returncode, proc.stderr)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(one, enumerate(cases)))


def run_corpus(cases: list[tuple[str, bytes]], tmp: Path, processes: int = 2) -> list[Outcome]:
    """Every case through the sanitized corpus runner, ``processes`` runners side by side;
    outcomes in the CLI's terms (0: ran, 1: one "error:" line). A sanitizer abort is charged
    to the input the runner was on (its last, unfinished line); inputs after it in that
    runner are reported as not run."""
    paths = []
    for i, (_, data) in enumerate(cases):
        paths.append(tmp / f"m{i}.bnn")
        paths[-1].write_bytes(data)
    chunks = [list(range(k, len(cases), processes)) for k in range(processes)]

    def run(chunk: list[int]) -> list[Outcome]:
        try:
            proc = subprocess.run(
                [str(CORPUS_RUNNER), *(str(paths[i]) for i in chunk)],
                capture_output=True,
                text=True,
                env=SAN_ENV,
                timeout=600,
                check=False,
            )
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout, stderr, rc = str(exc.stdout or ""), "timed out (hang?)", -999
        lines = stdout.splitlines()
        out = []
        for n, i in enumerate(chunk):
            label = cases[i][0]
            complete = n < len(lines) - 1 or (n == len(lines) - 1 and stdout.endswith("\n"))
            verdict = lines[n].partition("\t")[2] if n < len(lines) else ""
            if complete and verdict == "ok":
                out.append(Outcome(label, 0, ""))
            elif complete and verdict.startswith("error: "):
                out.append(Outcome(label, 1, verdict + "\n"))
            elif n < len(lines):  # its line never finished: this input stopped the runner
                out.append(Outcome(label, rc or -998, stderr or f"runner printed {verdict!r}"))
            else:
                out.append(Outcome(label, -997, "not run: the runner stopped before it"))
        if rc != 0 or stderr:  # e.g. a leak, reported at exit: not charged to one input
            out.append(Outcome(f"runner exit ({len(chunk)} inputs)", rc or -996, stderr))
        return out

    with ThreadPoolExecutor(max_workers=processes) as pool:
        outcomes = [o for part in pool.map(run, chunks) for o in part]
    for path in paths:
        path.unlink()
    return outcomes


def assert_no_crash(outcomes: list[Outcome]) -> tuple[int, int]:
    """Each run either succeeded (0) or failed cleanly (1, one 'error:' line). Returns counts."""
    bad = [
        o
        for o in outcomes
        if o.returncode not in (0, 1)
        or "Sanitizer" in o.stderr
        or "runtime error" in o.stderr
        or (o.returncode == 1 and (o.stderr.count("\n") != 1 or "error:" not in o.stderr))
    ]
    assert not bad, "\n".join(f"{o.label}: rc={o.returncode}\n{o.stderr[-2000:]}" for o in bad[:5])
    ok = sum(o.returncode == 0 for o in outcomes)
    return ok, len(outcomes) - ok


def test_seed_model_is_valid(tmp_path):
    (outcome,) = run_sanitized([("seed", seed_model())], tmp_path)
    assert outcome.returncode == 0, outcome.stderr


def test_every_truncation_is_rejected(tmp_path):
    data = seed_model()
    outcomes = run_corpus([(f"prefix {n}", data[:n]) for n in range(len(data))], tmp_path)
    ok, rejected = assert_no_crash(outcomes)
    assert ok == 0 and rejected == len(data)
    # and in-process through ctypes: every prefix raises NativeError with a message
    for n in range(len(data)):
        with pytest.raises(NativeError, match=r"\w"):
            NativeEngine(data[:n])


def mutations(data: bytes, count: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    interesting = [
        0,
        1,
        2,
        3,
        63,
        64,
        65,
        0x7FFFFFFF,
        0x80000000,
        0xFFFFFFFF,
        65535,
        65536,
        65537,
        1 << 20,
        1 << 30,
    ]
    out = []
    for i in range(count):
        buf = bytearray(data)
        kind = i % 4
        for _ in range(rng.choice((1, 1, 2, 4))):
            pos = rng.randrange(len(buf))
            if kind == 0:
                buf[pos] ^= 1 << rng.randrange(8)
            elif kind == 1:
                buf[pos] = rng.randrange(256)
            else:
                pos = min(pos, len(buf) - 4)
                if kind == 3:
                    pos -= pos % 4  # most fields are u32-aligned in practice
                value = rng.choice(interesting) if rng.random() < 0.7 else rng.getrandbits(32)
                buf[pos : pos + 4] = struct.pack("<I", value)
        out.append((f"mutation {i} (kind {kind})", bytes(buf)))
    return out


def test_random_mutations_never_crash(tmp_path):
    data = seed_model()
    cases = mutations(data, 2000, seed=1234)
    ok, rejected = assert_no_crash(run_corpus(cases, tmp_path))
    # both paths must be exercised: weight/float flips load fine, header flips are rejected
    assert ok > 50 and rejected > 500, (ok, rejected)
    # a subset in-process through ctypes (not sanitized, but a crash would kill pytest)
    for _label, blob in cases[::5]:
        try:
            eng = NativeEngine(blob, threads=2)
        except NativeError as exc:
            assert str(exc)
            continue
        with eng:
            if eng.workspace_bytes < 16 << 20:
                x = np.ones(eng.input_shape, np.float32)
                assert eng.run(x).shape == eng.output_shape


def _header(
    n_values=2,
    n_layers=1,
    input_id=0,
    output_id=1,
    rank=4,
    dims=(1, 3, 8, 8),
    meta=b"{}",
    meta_len=None,
) -> bytes:
    return (
        b"BNNB"
        + struct.pack("<6I", 1, 0, n_values, n_layers, input_id, output_id)
        + struct.pack("<5I", rank, *dims)
        + struct.pack("<I", len(meta) if meta_len is None else meta_len)
        + meta
    )


def _layer(
    op: int,
    inputs: list[int],
    output: int,
    params: bytes,
    name: bytes = b"",
    name_len: int | None = None,
    param_len: int | None = None,
) -> bytes:
    return (
        struct.pack(
            f"<2I{len(inputs)}I2I",
            op,
            len(inputs),
            *inputs,
            output,
            len(name) if name_len is None else name_len,
        )
        + name
        + struct.pack("<I", len(params) if param_len is None else param_len)
        + params
    )


def _conv_bin(in_c, out_c, kh=3, kw=3, sh=1, sw=1, pads=(1, 1, 1, 1), words=None) -> bytes:
    """A CONV2D_BIN parameter block; ``words`` overrides the weight size (for lying headers,
    which then also carry only a token scale/bias)."""
    g = struct.pack("<8I", kh, kw, sh, sw, *pads)
    head = struct.pack("<2I", in_c, out_c) + g + struct.pack("<2I", 0, 0)
    if words is not None:
        return head + b"\0" * (8 * words + 8)
    w = out_c * kh * kw * ((in_c + 63) // 64)
    return head + b"\0" * (8 * w) + b"\0" * (8 * out_c)


U32 = 0xFFFFFFFF
HOSTILE = [
    ("huge dims", _header(dims=(65536, 65536, 65536, 65536))),
    ("dims product overflows u32 and u64", _header(dims=(U32, U32, U32, U32))),
    ("zero dim", _header(dims=(1, 0, 8, 8))),
    ("count just over 2^31", _header(dims=(2, 1024, 1024, 1025))),
    ("rank 3", _header(rank=3)),
    ("rank 2 with trailing dims", _header(rank=2, dims=(1, 3, 8, 8))),
    ("n_values zero", _header(n_values=0)),
    ("n_values huge", _header(n_values=U32)),
    ("n_layers huge, tiny file", _header(n_layers=65536)),
    ("n_layers over limit", _header(n_layers=U32)),
    ("input_id out of range", _header(input_id=7)),
    ("meta_len beyond file", _header(meta_len=1000)),
    ("meta_len over 1 MiB", _header(meta_len=(1 << 20) + 1)),
    ("meta_len u32 max", _header(meta_len=U32)),
    (
        "name_len over limit",
        _header() + _layer(4, [0], 1, struct.pack("<2f", -1, 1), name_len=1025),
    ),
    ("name_len beyond file", _header() + _layer(4, [0], 1, b"", name_len=1000)),
    ("param_len u32 max", _header() + _layer(4, [0], 1, b"", param_len=U32)),
    ("n_inputs u32 max", _header() + struct.pack("<2I", 8, U32)),
    ("out_c huge, weights overflow", _header() + _layer(2, [0], 1, _conv_bin(3, U32, words=1))),
    ("kernel 65536x65536", _header() + _layer(2, [0], 1, _conv_bin(3, 4, 65536, 65536, words=1))),
    ("stride 0", _header() + _layer(2, [0], 1, _conv_bin(3, 4, sh=0))),
    ("pads u32 max", _header() + _layer(2, [0], 1, _conv_bin(3, 4, pads=(U32, 0, 0, 0)))),
    (
        "huge pads, fits limits",
        _header() + _layer(2, [0], 1, _conv_bin(3, 4, pads=(65536, 65536, 65536, 65536))),
    ),
    (
        "fp conv weights overflow u64",
        _header(dims=(1, 65536, 1, 1))
        + _layer(1, [0], 1, struct.pack("<11I", 65536, 65536, 65536, 65536, 1, 1, 0, 0, 0, 0, 0)),
    ),
    (
        "gemm in_f mismatch",
        _header(rank=2, dims=(1, 8, 1, 1))
        + _layer(10, [0], 1, struct.pack("<3I", 9, 4, 0) + b"\0" * 4 * 36),
    ),
    (
        "maxpool pad >= kernel",
        _header() + _layer(5, [0], 1, struct.pack("<8I", 2, 2, 2, 2, 2, 0, 0, 0)),
    ),
    ("clip NaN", _header() + _layer(4, [0], 1, struct.pack("<2I", 0x7FC00000, 0))),
    ("flatten too wide", _header(dims=(1, 64, 64, 64)) + _layer(9, [0], 1, b"")),
    (
        "add shape mismatch",
        _header(n_values=3, output_id=2) + _layer(7, [0], 1, b"") + _layer(8, [0, 1], 2, b""),
    ),
    ("self-referencing layer", _header() + _layer(4, [1], 1, struct.pack("<2f", -1, 1))),
    ("empty file", b""),
    ("magic only", b"BNNB"),
]


@pytest.mark.parametrize(("label", "data"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_header_rejected_cleanly(label, data, tmp_path):
    (outcome,) = run_sanitized([(label, data)], tmp_path)
    assert_no_crash([outcome])
    assert outcome.returncode == 1, f"{label}: accepted?\n{outcome.stderr}"
    with pytest.raises(NativeError, match=r"\w"):
        NativeEngine(data)
