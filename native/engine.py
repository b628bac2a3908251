"""ctypes binding of the native engine (``native/build/libbnn.so``); needs only numpy.

    from native.engine import NativeEngine
    with NativeEngine("model.bnn", threads=4) as eng:
        y = eng.run(x)                                  # x: float32 array of eng.input_shape
        ms = eng.benchmark(x, warmup=3, runs=20)        # per-run latencies from the C timer

The library is located by :func:`library_path`: ``$BNNBENCH_NATIVE_LIB`` if set, else
``build/libbnn.so`` next to this file. An installed package gets it from its wheel (pip
compiles it when it builds the wheel, see setup.py) and never builds anything on import; a
missing library is a NativeError that says how to build it (:func:`build`, i.e.
``python -m native.build_engine``). Only in a development checkout (a ``.git`` next to
``native/``) is a missing or stale library (re)built with make on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import operator
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import numpy as np

from bnnbench.schemas import MAX_THREADS
from native import build_engine
from native.format import Op

T = TypeVar("T")

NATIVE_DIR = Path(__file__).resolve().parent
#: A development checkout: only there does library_path() run make (see _dev_checkout).
REPO_DIR = NATIVE_DIR.parent
_log = logging.getLogger(__name__)
_ERR_LEN = 256
_NO_FUSION = 1  # BNN_CTX_NO_FUSION
# BNN_FUSED_* (bnn.h), bit 0 first
_FUSED = ("skipped", "bits_in", "bits_out", "residual", "clip", "nchw_input")
_build_lock = threading.Lock()


class NativeError(RuntimeError):
    """The native library is missing, or refused a model or an argument."""


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a loaded model as the engine sees it (shapes are N, C, H, W)."""

    index: int
    op: str  # native.format.Op name in lower case, e.g. "conv2d_bin"
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, ...]  # kh, kw; (1, 1) for layers without a kernel


def library_path() -> Path:
    """Path of libbnn.so: ``$BNNBENCH_NATIVE_LIB`` if set, else ``build/libbnn.so`` next to
    this module. NativeError when it is missing, with how to build it.

    Development checkouts only (:func:`_dev_checkout`): the library is (re)built with make
    when it is missing or older than its sources and a compiler is available, so an edit to
    the C code reaches the next test run. An installed package never builds on import."""
    env = os.environ.get("BNNBENCH_NATIVE_LIB")
    if env:
        path = Path(env)
        if not path.is_file():
            raise NativeError(f"BNNBENCH_NATIVE_LIB points to {path}, which does not exist")
        return path
    path = NATIVE_DIR / "build" / build_engine.LIBRARY
    if _dev_checkout():
        with _build_lock:
            if not path.is_file():
                _dev_build(path, required=True)
            elif _stale(path):
                _dev_build(path, required=False)
    if not path.is_file():
        raise NativeError(f"the native engine library {path} is missing. {_how_to_build()}")
    return path


def cli_path() -> Path:
    """Path of the ``bnnbench-native`` CLI built next to the library (``build/``); NativeError
    when it is missing. Not rebuilt here: :func:`build` or ``make -C native`` builds it."""
    path = NATIVE_DIR / "build" / build_engine.CLI
    if not path.is_file():
        raise NativeError(f"the native engine CLI {path} is missing. {_how_to_build()}")
    return path


def build(force: bool = False, jobs: int | None = None) -> dict[str, Path]:
    """Build libbnn.so and bnnbench-native in place (``build/`` next to this module) with
    make; needs make and a C compiler, and write access to the package folder. Returns
    target name -> path. A library already loaded in this process stays loaded: the new one
    is used by the next process. ``force``: rebuild every object. NativeError on failure."""
    try:
        return build_engine.make(force=force, jobs=jobs)
    except build_engine.BuildError as exc:
        raise NativeError(str(exc)) from exc


def _dev_checkout() -> bool:
    """This module runs from a source checkout (``<repo>/.git`` beside ``native/``; a file in
    a git worktree), not from an installed package, so it may build its own library."""
    return (REPO_DIR / ".git").exists()


def _how_to_build() -> str:
    if _dev_checkout():
        return f"Build it with `make -C {NATIVE_DIR}` (needs a C compiler and make)."
    return (
        "This installation has no compiled engine. Build it in place with "
        "`python -m native.build_engine` (needs a C compiler and make, and write access to "
        f"{NATIVE_DIR}), or reinstall bnnbench with pip from its source distribution so the "
        "wheel build compiles it, or point BNNBENCH_NATIVE_LIB at a built libbnn.so."
    )


def _sources() -> list[Path]:
    return [
        *NATIVE_DIR.glob("src/*.[ch]"),
        *NATIVE_DIR.glob("include/*.h"),
        NATIVE_DIR / "Makefile",
        NATIVE_DIR / "cross.mk",
    ]


def _stale(path: Path) -> bool:
    built = path.stat().st_mtime
    return any(src.stat().st_mtime > built for src in _sources() if src.is_file())


def _dev_build(path: Path, required: bool) -> None:
    """Run make in a checkout. ``required``: there is no library yet, so any failure is an
    error; else a stale library is refreshed when a compiler exists (else kept)."""
    if not build_engine.have_toolchain():
        if required:
            raise NativeError(
                f"the native engine library {path} is missing and no C compiler "
                f"or make is available. {_how_to_build()}"
            )
        return
    _log.info("development checkout: building %s with make", path)
    try:
        build_engine.make(targets=(build_engine.LIBRARY,))
    except build_engine.BuildError as exc:
        raise NativeError(f"building {path} failed: {exc}. {_how_to_build()}") from exc
    # make is satisfied (e.g. only a comment in the Makefile changed and nothing relinked):
    # mark the library current so every process does not rerun make.
    if _stale(path):
        os.utime(path)


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    c_p, c_char_p, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    f_p = ctypes.POINTER(ctypes.c_float)
    sig = {
        "bnn_version": (c_char_p, []),
        "bnn_kernel_isa": (c_char_p, []),
        "bnn_set_isa": (ctypes.c_int, [c_char_p]),
        "bnn_isa_supported": (ctypes.c_int, [c_char_p]),
        "bnn_model_load_file": (ctypes.c_int, [c_char_p, ctypes.POINTER(c_p), c_char_p, sz]),
        "bnn_model_load_buffer": (ctypes.c_int, [c_char_p, sz, ctypes.POINTER(c_p), c_char_p, sz]),
        "bnn_model_free": (None, [c_p]),
        "bnn_model_input_rank": (ctypes.c_int, [c_p]),
        "bnn_model_output_rank": (ctypes.c_int, [c_p]),
        "bnn_model_input_dims": (None, [c_p, ctypes.POINTER(ctypes.c_uint32)]),
        "bnn_model_output_dims": (None, [c_p, ctypes.POINTER(ctypes.c_uint32)]),
        "bnn_model_workspace_bytes": (ctypes.c_uint64, [c_p, ctypes.c_int]),
        "bnn_ctx_create": (c_p, [c_p, ctypes.c_int, c_char_p, sz]),
        "bnn_ctx_create_ex": (c_p, [c_p, ctypes.c_int, ctypes.c_uint, c_char_p, sz]),
        "bnn_ctx_free": (None, [c_p]),
        "bnn_run": (ctypes.c_int, [c_p, f_p, f_p]),
        "bnn_benchmark": (
            ctypes.c_int,
            [c_p, f_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_double)],
        ),
        "bnn_profile": (
            ctypes.c_int,
            [c_p, f_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_double)],
        ),
        "bnn_model_num_layers": (ctypes.c_uint32, [c_p]),
        "bnn_ctx_layer_fusion": (
            ctypes.c_int,
            [c_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint)],
        ),
        "bnn_model_layer_info": (
            ctypes.c_int,
            [
                c_p,
                ctypes.c_uint32,
                ctypes.POINTER(ctypes.c_uint32),
                ctypes.POINTER(ctypes.c_uint32),
                ctypes.POINTER(ctypes.c_uint32),
                ctypes.POINTER(ctypes.c_uint32),
            ],
        ),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def version() -> str:
    """The native library's version string, e.g. ``"0.1.0"``."""
    return _lib().bnn_version().decode()


def kernel_isa() -> str:
    """The kernel set new engines use: the best this CPU supports (x86-64: ``"avx512"``,
    ``"avx2"``, ``"popcnt"``, ``"portable"``), unless ``BNNBENCH_ISA`` or :func:`set_isa`
    chose another."""
    return _lib().bnn_kernel_isa().decode()


#: Every kernel set name the library may know (which ones exist depends on the build).
ISAS = ("portable", "popcnt", "avx2", "avx512", "neon")

# Serializes set_isa with context creation: the C selection is process-wide.
_isa_lock = threading.RLock()


def isa_supported(name: str) -> bool:
    """Whether this build has kernel set ``name`` and this CPU can run it."""
    return bool(_lib().bnn_isa_supported(name.encode()))


def available_isas() -> list[str]:
    """The kernel sets usable here, in :data:`ISAS` order (portable first on x86-64)."""
    return [n for n in ISAS if isa_supported(n)]


def set_isa(name: str | None) -> None:
    """Choose the kernel set for engines created from now on (``None``: the best).

    Raises NativeError for an unknown name or one this CPU lacks. Existing engines keep
    the kernels they were created with."""
    with _isa_lock:
        if _lib().bnn_set_isa(None if name is None else name.encode()) != 0:
            raise NativeError(
                f"ISA {name!r} is unknown or not supported by this CPU "
                f"(available: {', '.join(available_isas())})"
            )


def _f32_ptr(a: np.ndarray) -> ctypes._Pointer:
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


class NativeEngine:
    """One loaded model plus an execution context with ``threads`` worker threads.

    ``run``/``benchmark`` are serialized per engine (one context runs one inference at a
    time); use one engine per concurrent caller. ``isa`` picks the binary-conv kernel set
    for this engine (e.g. ``"avx2"``; NativeError if the CPU lacks it); ``None`` uses
    :func:`kernel_isa`. The set in use is ``self.isa``. ``fuse=False`` runs every layer as
    written (no clip folding, no bit hand-off between binary convs; same results).
    """

    def __init__(
        self, model: str | Path | bytes, threads: int = 1, isa: str | None = None, fuse: bool = True
    ) -> None:
        self._lib = _lib()
        self._model: int | None = None
        self._ctx: int | None = None
        self._lock = threading.Lock()
        if isinstance(threads, bool):
            raise TypeError("threads must be an int, got bool")
        threads = operator.index(threads)  # ints and numpy integers; TypeError otherwise
        if not 1 <= threads <= MAX_THREADS:
            raise NativeError(f"threads must be 1..{MAX_THREADS}, got {threads}")
        err = ctypes.create_string_buffer(_ERR_LEN)
        handle = ctypes.c_void_p()
        if isinstance(model, bytes | bytearray | memoryview):
            data = bytes(model)
            rc = self._lib.bnn_model_load_buffer(
                data, len(data), ctypes.byref(handle), err, _ERR_LEN
            )
        else:
            rc = self._lib.bnn_model_load_file(
                os.fsencode(model), ctypes.byref(handle), err, _ERR_LEN
            )
        if rc != 0:
            raise NativeError(err.value.decode(errors="replace"))
        self._model = handle.value
        self.threads = threads
        self.input_shape = self._dims(
            self._lib.bnn_model_input_rank, self._lib.bnn_model_input_dims
        )
        self.output_shape = self._dims(
            self._lib.bnn_model_output_rank, self._lib.bnn_model_output_dims
        )
        with _isa_lock:
            prev = kernel_isa() if isa is not None else None
            if isa is not None and self._lib.bnn_set_isa(isa.encode()) != 0:
                self.close()
                raise NativeError(
                    f"ISA {isa!r} is unknown or not supported by this CPU "
                    f"(available: {', '.join(available_isas())})"
                )
            ctx = self._lib.bnn_ctx_create_ex(
                self._model, threads, 0 if fuse else _NO_FUSION, err, _ERR_LEN
            )
            self.isa = kernel_isa()
            if prev is not None:
                self._lib.bnn_set_isa(prev.encode())
        if not ctx:
            self.close()
            raise NativeError(err.value.decode(errors="replace"))
        self._ctx = ctx

    def _dims(self, rank_fn, dims_fn) -> tuple[int, ...]:
        dims = (ctypes.c_uint32 * 4)()
        dims_fn(self._model, dims)
        return tuple(int(d) for d in dims[: rank_fn(self._model)])

    @property
    def workspace_bytes(self) -> int:
        """Bytes of activations and scratch this engine's context holds."""
        self._check_open()
        return int(self._lib.bnn_model_workspace_bytes(self._model, self.threads))

    def _check_open(self) -> None:
        if self._ctx is None:
            raise NativeError("engine is closed")

    def _input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"input must be a real numeric array, got dtype {x.dtype}")
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"input shape {tuple(x.shape)} != model input {self.input_shape}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        """One inference; returns a new float32 array of ``output_shape``."""
        self._check_open()
        xin = self._input(x)
        out = np.empty(self.output_shape, dtype=np.float32)
        with self._lock:
            self._check_open()
            rc = self._lib.bnn_run(self._ctx, _f32_ptr(xin), _f32_ptr(out))
        if rc != 0:
            raise NativeError(f"bnn_run failed with code {rc}")
        return out

    def benchmark(self, x: np.ndarray, warmup: int, runs: int) -> list[float]:
        """``warmup`` untimed runs then ``runs`` timed ones; per-run milliseconds."""
        self._check_open()
        if warmup < 0 or runs < 1:
            raise ValueError(f"need warmup >= 0 and runs >= 1, got {warmup}, {runs}")
        xin = self._input(x)
        samples = (ctypes.c_double * runs)()
        with self._lock:
            self._check_open()
            rc = self._lib.bnn_benchmark(self._ctx, _f32_ptr(xin), warmup, runs, samples)
        if rc != 0:
            raise NativeError(f"bnn_benchmark failed with code {rc}")
        return list(samples)

    def _each_layer(self, read: Callable[[int], T]) -> list[T]:
        """``read(i)`` for every layer index in file order, under the context's lock."""
        self._check_open()
        with self._lock:
            self._check_open()
            return [read(i) for i in range(int(self._lib.bnn_model_num_layers(self._model)))]

    def layers(self) -> list[LayerInfo]:
        """Every layer in file order: op name and input / output shapes (N, C, H, W)."""

        def info(i: int) -> LayerInfo:
            op = ctypes.c_uint32()
            din, dout = (ctypes.c_uint32 * 4)(), (ctypes.c_uint32 * 4)()
            kernel = (ctypes.c_uint32 * 2)()
            if self._lib.bnn_model_layer_info(self._model, i, ctypes.byref(op), din, dout, kernel):
                raise NativeError(f"bnn_model_layer_info({i}) failed")
            return LayerInfo(i, Op(op.value).name.lower(), tuple(din), tuple(dout), tuple(kernel))

        return self._each_layer(info)

    def fusion(self) -> list[frozenset[str]]:
        """How this engine runs each layer, in file order: the fusion patterns that apply to
        it (``bnn.h``, ``BNN_FUSED_*``: "skipped", "bits_in", "bits_out", "residual",
        "clip", "nchw_input"); empty for a layer run as written."""

        def patterns(i: int) -> frozenset[str]:
            flags = ctypes.c_uint()
            if self._lib.bnn_ctx_layer_fusion(self._ctx, i, ctypes.byref(flags)):
                raise NativeError(f"bnn_ctx_layer_fusion({i}) failed")
            return frozenset(name for bit, name in enumerate(_FUSED) if flags.value >> bit & 1)

        return self._each_layer(patterns)

    def profile(self, x: np.ndarray, warmup: int, runs: int) -> list[float]:
        """Per-layer median milliseconds over ``runs`` runs (after ``warmup``): one entry per
        layer in file order, then one for the model-boundary NCHW<->NHWC transposes."""
        self._check_open()
        if warmup < 0 or runs < 1:
            raise ValueError(f"need warmup >= 0 and runs >= 1, got {warmup}, {runs}")
        xin = self._input(x)
        with self._lock:
            self._check_open()
            n = int(self._lib.bnn_model_num_layers(self._model)) + 1
            layer_ms = (ctypes.c_double * n)()
            rc = self._lib.bnn_profile(self._ctx, _f32_ptr(xin), warmup, runs, layer_ms)
        if rc != 0:
            raise NativeError(f"bnn_profile failed with code {rc}")
        return list(layer_ms)

    def close(self) -> None:
        """Free the context and model; further calls raise NativeError. Idempotent."""
        with self._lock:
            if self._ctx is not None:
                self._lib.bnn_ctx_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                self._lib.bnn_model_free(self._model)
                self._model = None

    def __enter__(self) -> NativeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Interpreter shutdown may have torn down ctypes already; nothing useful to report.
        with contextlib.suppress(Exception):
            self.close()
