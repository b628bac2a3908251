"""ONNX front end: load, validate, infer shapes, fold constant (weight) subgraphs, and match the
result into :mod:`converters.ir`.

The pipeline:

1. ``load_onnx`` parses the file — or a ``.zip``/``.tar[.gz]`` holding one ``.onnx`` and its
   external data, unpacked safely (:func:`extract_model_archive`) — loads external data from
   next to the ``.onnx`` and runs ``onnx.checker``; anything unparsable or invalid is a
   :class:`MalformedModelError`.
2. Model-local functions are inlined; a symbolic batch dimension is fixed to 1 and shapes are
   inferred (strict mode).
3. ``simplify_graph`` removes what training code leaves in an export: Identity nodes,
   straight-through estimators ``(s − y) + y`` (read as ``s``), and nodes no output needs.
4. ``fold_constants`` evaluates, once, every node whose inputs are all initializers or
   constants (``Sign(W)``, ``Mul(ReduceMean(Abs(W)), Sign(W))``, Constant nodes, shape
   arithmetic ...), with numpy for common ops and ``onnx.reference`` for the rest.
5. ``to_ir`` walks the remaining nodes in order and matches them: ``Conv(Sign(x), W)`` and
   ``Conv(Sign(x − t), W)`` with W = ±α[o] become binary convs; BatchNorm and per-channel
   Mul/Add/Sub/Div are folded into the producing conv/Gemm where it has no other consumer;
   everything the native format cannot represent is refused with an
   :class:`UnsupportedModelError` naming the node and op.

:func:`model_file` gives the plain ``.onnx`` path for an upload (archive unpacked, local
functions inlined) for code that reads the model by name, such as onnxruntime in verification.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from converters import ir
from converters.errors import ConversionError, MalformedModelError, UnsupportedModelError

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

# nondeterministic ops must not be folded even with constant inputs
_NO_FOLD = {"RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- archives

#: what one archive may unpack to, all members together (ResNet-34 with its external data is
#: about 90 MB); checked against the bytes really written, not only the declared sizes
MAX_ARCHIVE_BYTES = 4 << 30
MAX_ARCHIVE_MEMBERS = 1000


def archive_kind(path: str | Path) -> str | None:
    """``"zip"`` or ``"tar"`` (plain, gzip, bzip2 or xz) if the file is an archive, else None.

    Decided by content, not by name: the coordinator stores uploads under their hash."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if (head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00"
            or head[257:262] == b"ustar"):
        return "tar"
    return None


def _member_path(name: str, archive: str) -> PurePosixPath:
    """A member name as a relative path that stays inside the extraction directory."""
    p = PurePosixPath(name)
    bad = (
        not name or "\\" in name or "\x00" in name or p.is_absolute()
        or ".." in p.parts or ":" in (p.parts[0] if p.parts else "")
    )
    if bad or not p.parts:
        raise MalformedModelError(f"{archive}: unsafe member path {name!r} (absolute, '..', "
                                  "drive or backslash): refused")
    return p


def _ignored_member(p: PurePosixPath) -> bool:
    # macOS Finder adds resource-fork copies (__MACOSX/, ._name) to every zip it makes
    return p.parts[0] == "__MACOSX" or p.name.startswith("._")


class _Budget:
    """Bytes an archive may still unpack to."""

    def __init__(self, limit: int, archive: str) -> None:
        self.limit = self.left = limit
        self.archive = archive

    def copy(self, src: IO[bytes], dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "xb") as out:  # "x": two members with one name must not overwrite
            while chunk := src.read(1 << 20):
                self.left -= len(chunk)
                if self.left < 0:
                    raise MalformedModelError(f"{self.archive}: unpacks to more than the limit "
                                              f"of {self.limit} bytes: refused")
                out.write(chunk)


def _extract_zip(path: Path, dest: Path | None, max_bytes: int) -> list[PurePosixPath]:
    import zipfile

    files = []
    budget = _Budget(max_bytes, path.name)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise MalformedModelError(f"{path.name}: {len(infos)} members, more than "
                                      f"{MAX_ARCHIVE_MEMBERS}: refused")
        seen: set[PurePosixPath] = set()
        for info in infos:
            p = _member_path(info.filename, path.name)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise MalformedModelError(f"{path.name}: member {info.filename!r} is a symbolic "
                                          "link: refused")
            if info.is_dir():
                continue
            if p in seen:
                raise MalformedModelError(f"{path.name}: member {info.filename!r} appears twice")
            seen.add(p)
        if sum(i.file_size for i in infos) > max_bytes:
            raise MalformedModelError(f"{path.name}: declares more than the limit of {max_bytes} "
                                      "bytes unpacked: refused")
        for info in infos:
            if info.is_dir():
                continue
            p = _member_path(info.filename, path.name)
            if _ignored_member(p):
                continue
            if dest is not None:
                with zf.open(info) as src:
                    budget.copy(src, dest.joinpath(*p.parts))
            files.append(p)
    return files


def _extract_tar(path: Path, dest: Path | None, max_bytes: int) -> list[PurePosixPath]:
    import tarfile

    files = []
    budget = _Budget(max_bytes, path.name)
    with tarfile.open(path, "r:*") as tf:
        n = 0
        seen: set[PurePosixPath] = set()
        while (m := tf.next()) is not None:  # streaming: one pass, no member list built first
            n += 1
            if n > MAX_ARCHIVE_MEMBERS:
                raise MalformedModelError(f"{path.name}: more than {MAX_ARCHIVE_MEMBERS} "
                                          "members: refused")
            p = _member_path(m.name, path.name)
            if m.isdir():
                continue
            if not m.isfile():
                kind = "a link" if (m.issym() or m.islnk()) else "not a regular file"
                raise MalformedModelError(f"{path.name}: member {m.name!r} is {kind}: refused")
            if p in seen:
                raise MalformedModelError(f"{path.name}: member {m.name!r} appears twice")
            seen.add(p)
            if _ignored_member(p):
                continue
            if dest is None:  # listing only: the sizes the headers declare
                budget.left -= m.size
                if budget.left < 0:
                    raise MalformedModelError(f"{path.name}: declares more than the limit of "
                                              f"{max_bytes} bytes unpacked: refused")
                files.append(p)
                continue
            src = tf.extractfile(m)
            if src is None:
                raise MalformedModelError(f"{path.name}: member {m.name!r} cannot be read")
            with src:
                budget.copy(src, dest.joinpath(*p.parts))
            files.append(p)
    return files


def _scan_archive(p: Path, dest: Path | None, max_bytes: int) -> PurePosixPath:
    import tarfile
    import zipfile

    kind = archive_kind(p)
    try:
        if kind == "zip":
            files = _extract_zip(p, dest, max_bytes)
        elif kind == "tar":
            files = _extract_tar(p, dest, max_bytes)
        else:
            raise MalformedModelError(f"{p.name}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError,
            NotImplementedError, ValueError) as exc:
        # RuntimeError: encrypted zip; NotImplementedError: unknown zip compression
        raise MalformedModelError(f"{p.name}: unreadable {kind} archive "
                                  f"({type(exc).__name__}: {_one_line(exc)})") from exc
    models = [f for f in files if f.suffix.lower() == ".onnx"]
    if len(models) != 1:
        listed = ", ".join(str(f) for f in models[:5])
        raise MalformedModelError(
            f"{p.name}: an archive must hold exactly one .onnx file (and its external data), "
            f"this one holds {len(models)}" + (f": {listed}" if listed else "")
        )
    return models[0]


def extract_model_archive(path: str | Path, dest: str | Path,
                          max_bytes: int = MAX_ARCHIVE_BYTES) -> Path:
    """Unpack a ``.zip``/``.tar[.gz|.bz2|.xz]`` holding exactly one ``.onnx`` (plus its external
    data files) into the directory ``dest``; returns the ``.onnx`` path.

    Refused with :class:`MalformedModelError`: member paths that are absolute or contain
    ``..``, links and special files, duplicate names, more than ``MAX_ARCHIVE_MEMBERS``
    members, more than ``max_bytes`` unpacked (counted while writing, so a lying header does
    not help), no or several ``.onnx`` files, and anything unreadable."""
    dest = Path(dest)
    return dest.joinpath(*_scan_archive(Path(path), dest, max_bytes).parts)


def check_model_archive(path: str | Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> str:
    """The cheap upload-time check of an archive: the same refusals as
    :func:`extract_model_archive`, from the listing alone (declared sizes; nothing is
    written). Returns the ``.onnx`` member's name."""
    return str(_scan_archive(Path(path), None, max_bytes))


def external_data_locations(path: str | Path) -> list[str]:
    """The external data files a plain ``.onnx`` refers to (without reading them).

    A service storing single uploads side by side should refuse a plain ``.onnx`` for which this
    is non-empty (ask for an archive instead): its locations would be resolved next to other
    stored files."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise MalformedModelError(f"{Path(path).name}: not a parsable ONNX model "
                                  f"({type(exc).__name__}: {_one_line(exc)})") from exc
    return sorted({ExternalDataInfo(t).location for t in _get_all_tensors(model)
                   if uses_external_data(t)})


def _has_local_functions(p: Path) -> bool:
    import onnx

    try:
        return len(onnx.load(str(p), load_external_data=False).functions) > 0
    except Exception:  # unparsable: load_onnx reports it properly
        return False


@contextmanager
def model_file(path: str | Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> Iterator[Path]:
    """A plain ONNX file for ``path``, for everything that reads the model by name (the
    converters, onnxruntime in verification): ``path`` itself; for an archive, its ``.onnx``
    unpacked with its external data; for a model with local functions, a copy with them
    inlined, so every value the converter names exists in the file onnxruntime runs (layer-wise
    verification asks for them). Temporary files are removed on exit."""
    p = Path(path)
    if not p.is_file():
        yield p
        return
    with ExitStack() as stack:
        def tmpdir() -> Path:
            return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bnnbench-model-")))

        if archive_kind(p) is not None:
            p = extract_model_archive(p, tmpdir(), max_bytes)
        if _has_local_functions(p):
            import onnx

            model, _ = _inline_functions(load_onnx(p))
            out = tmpdir() / f"{p.stem}.inlined.onnx"
            # external data: an inlined model may pass protobuf's 2 GiB limit
            onnx.save(model, str(out), save_as_external_data=True, location=f"{out.name}.data")
            p = out
        yield p


# ----------------------------------------------------------------------------- loading


def _load_external_data(model: Any, base: Path, label: str) -> None:
    """Load external tensor data from ``base``, refusing missing files and locations that
    leave the model's directory."""
    from onnx.external_data_helper import (
        ExternalDataInfo,
        _get_all_tensors,
        load_external_data_for_model,
        uses_external_data,
    )

    root = base.resolve()
    for t in _get_all_tensors(model):
        if not uses_external_data(t):
            continue
        loc = ExternalDataInfo(t).location
        target = (root / loc).resolve()
        if not loc or Path(loc).is_absolute() or not target.is_relative_to(root):
            raise MalformedModelError(f"{label}: tensor {t.name!r}: external data location "
                                      f"{loc!r} is outside the model's directory: refused")
        if not target.is_file():
            raise MalformedModelError(f"{label}: tensor {t.name!r}: external data file {loc!r} "
                                      "not found next to the model (upload the .onnx and its "
                                      "data file together, e.g. in a .zip)")
    load_external_data_for_model(model, str(root))


def _load_plain(p: Path, label: str) -> Any:
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, ...
        raise MalformedModelError(
            f"{label}: not a parsable ONNX model ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    try:
        _load_external_data(model, p.parent, label)
    except ConversionError:
        raise
    except Exception as exc:  # truncated data file, bad offsets
        raise MalformedModelError(f"{label}: cannot read its external data "
                                  f"({type(exc).__name__}: {_one_line(exc)})") from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, or oversize protos
        raise MalformedModelError(f"{label}: invalid ONNX model: {_one_line(exc)}") from exc
    return model


def load_onnx(path: str | Path) -> Any:
    """Parse and check an ONNX file, or a ``.zip``/``.tar[.gz]`` holding one ``.onnx`` and its
    external data; returns the ``onnx.ModelProto`` with all tensor data loaded."""
    p = Path(path)
    if not p.is_file():
        raise MalformedModelError(f"{p}: no such file")
    if archive_kind(p) is None:
        return _load_plain(p, p.name)
    with model_file(p) as member:
        return _load_plain(member, f"{p.name}:{member.name}")


def _opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise MalformedModelError("model imports no default-domain (ai.onnx) opset")


def _graph_input(model: Any) -> Any:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise UnsupportedModelError(
            f"the native engine runs graphs with exactly one input, this one has {names}"
        )
    return inputs[0]


def _fix_batch_dim(model: Any) -> list[str]:
    """Give a symbolic batch dimension the value 1 so every shape is static."""
    notes = []
    inp = _graph_input(model)
    tt = inp.type.tensor_type
    if not tt.HasField("shape"):
        raise UnsupportedModelError(f"graph input {inp.name!r} has no shape")
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            continue
        if i == 0:
            notes.append(f"symbolic batch dimension {d.dim_param or '?'!r} fixed to 1")
            d.Clear()
            d.dim_value = 1
        else:
            raise UnsupportedModelError(
                f"graph input {inp.name!r} has a symbolic dimension {i} ({d.dim_param!r}); "
                "only the batch dimension may be symbolic"
            )
    return notes


def _infer_shapes(model: Any) -> tuple[Any, dict[str, tuple[int, ...] | None]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except Exception as exc:
        raise MalformedModelError(f"shape inference failed: {_one_line(exc)}") from exc
    shapes: dict[str, tuple[int, ...] | None] = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            shapes[vi.name] = None
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        shapes[vi.name] = None if any(d is None for d in dims) else tuple(int(d) for d in dims)
    return inferred, shapes


# ----------------------------------------------------------------------------- simplifying


def _inline_functions(model: Any) -> tuple[Any, list[str]]:
    """Inline model-local ONNX functions (``export_modules_as_functions``, onnxscript
    exports) so the matcher sees plain ops."""
    if not len(model.functions):
        return model, []
    import onnx.inliner

    names = sorted({f"{f.domain}.{f.name}" if f.domain else f.name for f in model.functions})
    try:
        inlined = onnx.inliner.inline_local_functions(model)
    except Exception as exc:
        raise MalformedModelError(f"cannot inline the model's local functions: "
                                  f"{_one_line(exc)}") from exc
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return inlined, [f"{len(names)} local function(s) inlined ({shown})"]


def _ste_source(node: Any, producer: dict[str, Any]) -> str | None:
    """For ``Add(Sub(s, y), y)`` (either operand order of the Add): ``s``."""
    p, q = node.input
    for d, y in ((p, q), (q, p)):
        sub = producer.get(d)
        if (sub is not None and sub.op_type == "Sub" and sub.domain in ("", "ai.onnx")
                and len(sub.input) == 2 and sub.input[1] == y and y):
            return sub.input[0]
    return None


def simplify_graph(graph: Any, shapes: dict[str, tuple[int, ...] | None]) -> list[str]:
    """Rewrite, in place, what training code leaves in an inference graph; returns notes.

    * ``Identity`` nodes vanish (their uses read the input), so ``Sign → Identity → Conv``
      still matches as a binary conv.
    * **Straight-through estimators** ``(s − y) + y`` — what ``(x.sign() − x).detach() + x``,
      ReActNet's ``out_forward.detach() − out3.detach() + out3`` and its weight STE
      ``bw.detach() − clip(W).detach() + clip(W)`` export as: the value is ``s`` (up to one
      float rounding of the add; the gradient path is dead at inference), so uses of the Add
      read ``s``. Only where ``s`` already has the Add's shape (no broadcasting is lost).
    * Nodes no graph output depends on are dropped (the STE's gradient-only branch: Less,
      Cast, polynomial, ...).

    Graph outputs are never renamed. Graphs with control flow (If/Loop/Scan subgraphs, which
    may read outer values by name) are left alone: those ops are refused later anyway."""
    from onnx import AttributeProto

    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute):
        return []
    outputs = {o.name for o in graph.output}
    init_shapes = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}

    def shape_of(v: str) -> tuple[int, ...] | None:
        return shapes.get(v) if v in shapes else init_shapes.get(v)

    rename: dict[str, str] = {}
    producer: dict[str, Any] = {}
    kept, ste, identities = [], [], 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        out = node.output[0] if len(node.output) == 1 else ""
        if node.domain in ("", "ai.onnx") and out and out not in outputs:
            if node.op_type == "Identity" and len(node.input) == 1 and node.input[0]:
                rename[out] = node.input[0]
                identities += 1
                continue
            if node.op_type == "Add" and len(node.input) == 2:
                s = _ste_source(node, producer)
                if s is not None and shape_of(s) is not None and shape_of(s) == shape_of(out):
                    rename[out] = s
                    ste.append(node.name)
                    continue
        for o in node.output:
            producer[o] = node
        kept.append(node)
    needed = set(outputs)
    live = []
    for node in reversed(kept):
        if any(o and o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    dead = len(kept) - len(live)
    del graph.node[:]
    graph.node.extend(live)
    notes = []
    if ste:
        notes.append(f"{len(ste)} straight-through estimator(s) (s − y) + y read as s "
                     f"(first: {ste[0]!r})")
    if identities:
        notes.append(f"{identities} Identity node(s) removed")
    if dead:
        notes.append(f"{dead} node(s) that no output depends on dropped")
    return notes


# ----------------------------------------------------------------------------- folding


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class _Fallback(Exception):
    """The numpy evaluator does not handle this case; use onnx.reference."""


def _axes(a: dict, inputs: list, idx: int) -> list[int] | None:
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(inputs) > idx and inputs[idx] is not None:
        return [int(v) for v in np.asarray(inputs[idx]).reshape(-1)]
    return None


def _reduce(fn: Callable) -> Callable:
    def run(a: dict, *inputs: np.ndarray) -> np.ndarray:
        x = inputs[0]
        axes = _axes(a, list(inputs), 1)
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x.copy()
            axes = list(range(x.ndim))
        keep = bool(a.get("keepdims", 1))
        return fn(x, axis=tuple(axes), keepdims=keep, dtype=np.float64).astype(x.dtype)

    return run


def _same_dtype(fn: Callable) -> Callable:
    def run(a: dict, *inputs: np.ndarray) -> np.ndarray:
        return np.asarray(fn(*inputs)).astype(inputs[0].dtype)

    return run


def _div(a: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        raise _Fallback  # integer Div truncates; let the reference implementation decide
    return (x / y).astype(x.dtype)


def _reshape(a: dict, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(s) for s in shape.reshape(-1)]
    if not a.get("allowzero", 0):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def _unsqueeze(a: dict, *inputs: np.ndarray) -> np.ndarray:
    x = inputs[0]
    axes = _axes(a, list(inputs), 1) or []
    rank = x.ndim + len(axes)
    for ax in sorted(v % rank for v in axes):
        x = np.expand_dims(x, ax)
    return x


def _squeeze(a: dict, *inputs: np.ndarray) -> np.ndarray:
    x = inputs[0]
    axes = _axes(a, list(inputs), 1)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(v % x.ndim for v in axes))


def _cast(a: dict, x: np.ndarray) -> np.ndarray:
    from onnx import helper

    return x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))


def _transpose(a: dict, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, a.get("perm"))


_NUMPY_OPS: dict[str, Callable] = {
    "Sign": _same_dtype(np.sign),
    "Abs": _same_dtype(np.abs),
    "Neg": _same_dtype(np.negative),
    "Sqrt": _same_dtype(np.sqrt),
    "Reciprocal": _same_dtype(np.reciprocal),
    "Add": _same_dtype(np.add),
    "Sub": _same_dtype(np.subtract),
    "Mul": _same_dtype(np.multiply),
    "Div": _div,
    "Identity": lambda a, x: x.copy(),
    "ReduceMean": _reduce(np.mean),
    "ReduceSum": _reduce(np.sum),
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Cast": _cast,
}


def _eval_reference(node: Any, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    from onnx import TypeProto, helper
    from onnx.reference import ReferenceEvaluator

    vis, feeds = [], {}
    for name, arr in zip(node.input, inputs, strict=True):
        if arr is None or not name or name in feeds:
            continue
        dtype = helper.np_dtype_to_tensor_dtype(arr.dtype)
        vis.append(helper.make_tensor_value_info(name, dtype, arr.shape))
        feeds[name] = arr
    outs = [helper.make_value_info(o, TypeProto()) for o in node.output if o]
    model = helper.make_model(
        helper.make_graph([node], "fold", vis, outs),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    results = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(r) for r in results]


def _eval_node(node: Any, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    fn = _NUMPY_OPS.get(node.op_type)
    if fn is not None and len(node.output) == 1:
        try:
            return [fn(_attrs(node), *[i for i in inputs if i is not None])]
        except _Fallback:
            pass
    return _eval_reference(node, inputs, opset)


def _constant_value(node: Any) -> np.ndarray:
    from onnx import numpy_helper

    a = _attrs(node)
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.array(a[key], dtype=dtype)
    raise _Fallback


def fold_constants(
    graph: Any, shapes: dict[str, tuple[int, ...] | None], opset: int
) -> tuple[list[Any], dict[str, np.ndarray], list[str]]:
    """Evaluate every node whose inputs are all constant.

    Returns the nodes left to convert, the constant values by name (initializers included) and
    the names of the folded nodes."""
    from onnx import numpy_helper

    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    remaining, folded = [], []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            remaining.append(node)  # refused later with the node's name
            continue
        ins = [i for i in node.input if i]
        try:
            if node.op_type == "Constant":
                try:
                    values = [_constant_value(node)]
                except _Fallback:
                    values = _eval_reference(node, [], opset)
            elif node.op_type == "Shape" and shapes.get(node.input[0]) is not None:
                # activation shapes are static once the batch is fixed; torch's flatten
                # idiom (Shape→Gather→Concat→Reshape) folds away through this
                shp = np.array(shapes[node.input[0]], dtype=np.int64)
                a = _attrs(node)
                values = [shp[a.get("start", 0) : a.get("end", len(shp))]]
            elif ins and all(i in consts for i in ins) and node.op_type not in _NO_FOLD:
                values = _eval_node(node, [consts[i] if i else None for i in node.input], opset)
            else:
                remaining.append(node)
                continue
        except ConversionError:
            raise
        except Exception as exc:
            raise UnsupportedModelError(
                f"could not evaluate this constant subgraph: {_one_line(exc)}",
                node.name,
                node.op_type,
            ) from exc
        for name, value in zip(node.output, values, strict=False):
            if name:
                consts[name] = np.asarray(value)
        folded.append(node.name)
    return remaining, consts, folded


# ----------------------------------------------------------------------------- matching


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


class _Builder:
    def __init__(self, graph: Any, nodes: list[Any], consts: dict[str, np.ndarray],
                 onnx_shapes: dict[str, tuple[int, ...] | None], opset: int) -> None:
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
            raise self.fail(node, f"input {name!r} is a binarized activation (Sign) that this "
                                  "op cannot consume")
        raise self.fail(node, f"input {name!r} is not produced by any supported node")

    def const(self, node: Any, idx: int, what: str) -> np.ndarray:
        name = node.input[idx] if idx < len(node.input) else ""
        if not name:
            raise self.fail(node, f"missing {what}")
        if name not in self.consts:
            raise self.fail(node, f"{what} {name!r} is not a constant (non-constant weights are "
                                  "not supported: the native format stores them at conversion)")
        return self.consts[name]

    def opt_const(self, node: Any, idx: int, what: str) -> np.ndarray | None:
        if idx >= len(node.input) or not node.input[idx]:
            return None
        return self.const(node, idx, what)

    def sole_consumer(self, value: str, node: Any) -> bool:
        cons = self.consumers.get(value, [])
        return len(cons) == 1 and cons[0] is node and value not in self.graph_outputs

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
            raise self.fail(node, f"{what} of shape {list(c.shape)} does not broadcast onto the "
                                  f"activation {list(shape)} without changing its shape")
        c = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
        for ax in range(c.ndim):
            if ax != 1 and c.shape[ax] > 1:
                first = np.take(c, [0], axis=ax)
                if not np.array_equal(np.broadcast_to(first, c.shape), c):
                    raise self.fail(node, f"{what} varies along axis {ax}; only per-channel "
                                          "(axis 1) constants are supported")
                c = first
        return np.broadcast_to(c.reshape(-1), (shape[1],)).astype(np.float32).copy()

    def pads(self, node: Any, a: dict, hw: tuple[int, ...], kernel: tuple[int, int],
             strides: tuple[int, int]) -> ir.Pads:
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
            raise self.fail(node, f"a per-channel {what} on a rank-{len(shape)} tensor is only "
                                  "supported when it can be folded into the preceding Gemm")
        self.emit(node, ir.Affine(node.name, [x], node.output[0], shape, [node.name],
                                  f"{what} kept as a per-channel affine (not foldable: its input "
                                  "is not a conv/Gemm output used only here)",
                                  scale=scale.astype(np.float32), bias=bias.astype(np.float32)))

    # -- ops
    def op_Conv(self, node: Any, a: dict) -> None:
        w = self.const(node, 1, "weight").astype(np.float32)
        if w.ndim != 4:
            raise self.fail(node, f"only 2-D convolutions are supported (weight rank {w.ndim})")
        group = int(a.get("group", 1))
        if group != 1:
            raise self.fail(node, f"groups={group}: grouped/depthwise convolution is not "
                                  "supported (the native format has groups = 1)")
        kernel = (int(w.shape[2]), int(w.shape[3]))
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != kernel:
            raise self.fail(node, f"kernel_shape {a['kernel_shape']} disagrees with the weight")
        xin = self.resolve(node.input[0])
        sign = self.signs.get(xin)
        src = sign.src if sign else self.act(node, xin)
        shape = self.shapes[src]
        strides, pads = self.spatial(node, a, shape, kernel)
        if shape[1] != w.shape[1]:
            raise self.fail(node, f"weight expects {w.shape[1]} input channels, input has "
                                  f"{shape[1]}")
        b = self.opt_const(node, 2, "bias")
        oh, ow = ir.conv_out_hw(shape[2], shape[3], kernel, strides, pads)
        out_shape = (shape[0], int(w.shape[0]), oh, ow)
        bw = binary_weights(w)
        if sign is not None:
            if bw is None:
                n_zero = int(np.count_nonzero(w == 0))
                why = (f"{n_zero} of {w.size} weights are exactly 0 (ternary, not binary)"
                       if n_zero > MAX_ZERO_WEIGHT_FRACTION * w.size else
                       "weights are not ±α per output channel")
                raise self.fail(node, f"conv {node.name!r} has binarized input but float "
                                      f"weights: not representable ({why})")
            alpha, ws = bw
            n_zero = int(np.count_nonzero(w == 0))
            src_desc = "sign(x − t) (per-channel threshold)" if sign.t is not None else "sign(x)"
            scale_desc = ("weights ±1" if np.all(alpha == 1) else
                          "weights ±α per output channel (α folded into scale)")
            bias = np.zeros(w.shape[0], np.float32) if b is None else b.astype(np.float32)
            self.emit(node, ir.BinConv(
                node.name, [src], node.output[0], out_shape, sign.nodes + [node.name],
                f"binarized: input {src_desc}, {scale_desc}" + (
                    f"; {n_zero} weight(s) exactly 0 (ONNX Sign(0) = 0) stored as +α (the "
                    "engine's sign(0) = +1): this layer differs from the ONNX model where they "
                    "are used" if n_zero else ""),
                weight_sign=ws, scale=alpha, bias=bias, threshold=sign.t,
                strides=strides, pads=pads,
            ))
            return
        note = "kept FP32: its input is not binarized (no Sign)"
        if bw is not None:
            note += ("; weights are ±α (weight-only binarization) but the native binary conv "
                     "needs binary activations too")
        self.emit(node, ir.Conv(
            node.name, [src], node.output[0], out_shape, [node.name], note,
            weight=w, bias=None if b is None else b.astype(np.float32),
            strides=strides, pads=pads,
        ))

    def op_Sign(self, node: Any, a: dict) -> None:
        xin = self.resolve(node.input[0])
        thr = self.thresholds.get(xin)
        if thr is not None:
            sign = _Sign(thr.src, thr.t, [thr.node, node.name])
        else:
            sign = _Sign(self.act(node, xin), None, [node.name])
        out = node.output[0]
        if out in self.graph_outputs:
            raise self.fail(node, "Sign on an activation that is a graph output; activations "
                                  "are binarized only inside binary convolutions")
        for c in self.consumers.get(out, []):
            if c.op_type != "Conv" or list(c.input).index(out) != 0 or list(c.input).count(out) > 1:
                raise self.fail(node, f"Sign on an activation that does not feed a conv (it "
                                      f"feeds {c.name!r} ({c.op_type})); activations are "
                                      "binarized only inside binary convolutions")
        self.signs[out] = sign

    def _feeds_only_sign(self, value: str) -> bool:
        cons = self.consumers.get(value, [])
        return bool(cons) and value not in self.graph_outputs and all(
            c.op_type == "Sign" for c in cons
        )

    def _elementwise(self, node: Any, a: dict) -> None:
        op = node.op_type
        if len(node.input) != 2:
            raise self.fail(node, "expects two inputs")
        n0, n1 = (self.resolve(i) for i in node.input)
        c0, c1 = n0 in self.consts, n1 in self.consts
        if not c0 and not c1:
            if op != "Add":
                raise self.fail(node, f"{op} of two activations is not supported (only Add, "
                                      "for residual connections)")
            x0, x1 = self.act(node, n0), self.act(node, n1)
            if self.shapes[x0] != self.shapes[x1]:
                raise self.fail(node, f"Add of shapes {list(self.shapes[x0])} and "
                                      f"{list(self.shapes[x1])}: broadcasting is not supported")
            self.emit(node, ir.Add(node.name, [x0, x1], node.output[0], self.shapes[x0],
                                   [node.name], "residual add"))
            return
        const_first = c0
        x = self.act(node, n1 if const_first else n0)
        c = self.consts[n0 if const_first else n1]
        shape = self.shapes[x]
        if op in ("Add", "Sub") and not (op == "Sub" and const_first) and self._feeds_only_sign(
            node.output[0]
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
        if (isinstance(prod, ir.Clip) and self.sole_consumer(x, node)
                and max(prod.min, lo) <= min(prod.max, hi)):
            # Min(Max(x, lo), hi), as exporters may write Hardtanh: one clip
            prod.min, prod.max = max(prod.min, lo), min(prod.max, hi)
            self._fold_into(prod, node, x, f"{node.op_type} {node.name!r} merged: clip "
                                           f"[{prod.min:g}, {prod.max:g}]")
            return
        self.emit(node, ir.Clip(node.name, [x], node.output[0], self.shapes[x], [node.name],
                                note, min=lo, max=hi))

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
            raise self.fail(node, f"{node.op_type} of {len(node.input)} inputs is not supported "
                                  "(only an activation and a scalar constant, i.e. a clip)")
        n0, n1 = (self.resolve(i) for i in node.input)
        cname = n0 if n0 in self.consts else n1 if n1 in self.consts else None
        if cname is None:
            raise self.fail(node, f"{node.op_type} of two activations is not supported (only "
                                  "against a scalar constant, i.e. a clip)")
        c = np.asarray(self.consts[cname])
        if c.size != 1:
            raise self.fail(node, f"{node.op_type} with a constant of shape {list(c.shape)} is not "
                                  "supported (only a scalar, i.e. a clip)")
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
            for size, k, s, b, e in zip(shape[2:], kernel, strides, pads[:2], pads[2:],
                                        strict=True):
                out = -(-(size + b + e - k) // s) + 1
                if (out - 1) * s >= size + b:  # the last window must start inside the input
                    out -= 1
                extra.append((out - 1) * s + k - (size + b + e))
            if any(v > 0 for v in extra):
                if not is_max and cip:
                    raise self.fail(node, "ceil_mode=1 with count_include_pad=1 is not "
                                          "supported")
                # padded taps are ignored by MAXPOOL and by AVGPOOL without count_include_pad,
                # so ceil mode is extra bottom/right padding
                pads = (pads[0], pads[1], pads[2] + max(extra[0], 0), pads[3] + max(extra[1], 0))
                oh, ow = ir.conv_out_hw(shape[2], shape[3], kernel, strides, pads)
        out_shape = (shape[0], shape[1], oh, ow)
        if is_max:
            n: ir.Node = ir.MaxPool(node.name, [x], node.output[0], out_shape, [node.name],
                                    "max pool", kernel=kernel, strides=strides, pads=pads)
        else:
            n = ir.AvgPool(node.name, [x], node.output[0], out_shape, [node.name], "average pool",
                           kernel=kernel, strides=strides, pads=pads, count_include_pad=cip)
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
        self.emit(node, ir.GlobalAvgPool(node.name, [x], node.output[0],
                                         (shape[0], shape[1], 1, 1), [node.name], "global pool"))

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
            raise self.fail(node, f"ReduceMean over axes {axes} of {list(shape)} is not "
                                  "supported (only over H and W of NCHW: a global average pool)")
        if not keep:
            raise self.fail(node, "ReduceMean over H and W with keepdims=0 is not supported "
                                  "(the native global pool keeps N×C×1×1: write "
                                  "mean(dim=(2, 3), keepdim=True) or AdaptiveAvgPool2d(1), then "
                                  "flatten)")
        self.emit(node, ir.GlobalAvgPool(node.name, [x], node.output[0],
                                         (shape[0], shape[1], 1, 1), [node.name],
                                         "global pool (ReduceMean over H, W)"))

    def _to_shape(self, node: Any, x: str, target: tuple[int, ...]) -> None:
        shape = self.shapes[x]
        if tuple(target) == tuple(shape):
            self.alias[node.output[0]] = x
            return
        if len(shape) == 4 and tuple(target) == (shape[0], shape[1] * shape[2] * shape[3]):
            self.emit(node, ir.Flatten(node.name, [x], node.output[0], tuple(target),
                                       [node.name], "flatten to N×features"))
            return
        raise self.fail(node, f"reshaping {list(shape)} to {list(target)} is not supported "
                              "(only flattening NCHW to N×(C·H·W))")

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
        self.emit(node, ir.Gemm(node.name, [x], node.output[0], (shape[0], int(w.shape[0])),
                                [node.name], note, weight=w.astype(np.float32),
                                bias=None if b is None else b.astype(np.float32)))

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
        self._fc(node, x, np.asarray(bmat, np.float64).T, None,
                 "kept FP32: fully connected layer (MatMul)")

    # -- driver
    def build(self, input_name: str, input_shape: ir.Shape) -> ir.Graph:
        self.shapes[input_name] = input_shape
        for node in self.onnx_nodes:
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(node, f"custom-domain op ({node.domain}) is not supported")
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise self.fail(node, "op not supported by the native converter (supported: "
                                      + ", ".join(SUPPORTED_OPS) + ")")
            handler(node, _attrs(node))
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
            raise UnsupportedModelError(f"graph output {out_name!r} is not produced by any "
                                        "supported node")
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


def to_ir(model: Any) -> ir.Graph:
    """Match a checked ``onnx.ModelProto`` into the IR (the model's batch dim may be edited)."""
    from onnx import TensorProto

    opset = _opset(model)
    model, notes = _inline_functions(model)
    notes += _fix_batch_dim(model)
    inferred, shapes = _infer_shapes(model)
    notes += simplify_graph(inferred.graph, shapes)
    nodes, consts, folded = fold_constants(inferred.graph, shapes, opset)
    # an op we cannot convert at all is the most useful thing to report, so look first
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(f"custom-domain op ({node.domain}) is not supported",
                                        node.name, node.op_type)
        if node.op_type not in SUPPORTED_OPS:
            raise UnsupportedModelError("op not supported by the native converter (supported: "
                                        + ", ".join(SUPPORTED_OPS) + ")", node.name, node.op_type)
    inp = _graph_input(inferred)
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise UnsupportedModelError(f"graph input {inp.name!r} must be float32")
    in_shape = shapes.get(inp.name)
    if in_shape is None or len(in_shape) not in (2, 4):
        raise UnsupportedModelError(f"graph input {inp.name!r} must be NCHW or N×F with static "
                                    f"dims, got {in_shape}")
    builder = _Builder(inferred.graph, nodes, consts, shapes, opset)
    graph = builder.build(inp.name, tuple(in_shape))
    graph.metadata = {p.key: p.value for p in model.metadata_props}
    graph.notes = notes + [f"{len(folded)} constant node(s) folded"]
    return graph


def load_ir(path: str | Path) -> ir.Graph:
    """Load, check and match an ONNX file into the IR."""
    return to_ir(load_onnx(path))
