"""Loading: parse and check an ONNX file (or an archive of one, see archive.py), read its
external data from next to it, inline model-local functions, fix a symbolic batch dimension
to 1 and infer every shape (strict mode). Anything unparsable or invalid is a
:class:`MalformedModelError`."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from converters.errors import (
    ConversionError,
    MalformedModelError,
    UnsupportedModelError,
    first_line,
)
from converters.frontend.archive import MAX_ARCHIVE_BYTES, archive_kind, extract_model_archive


def inline_functions(model: Any) -> tuple[Any, list[str]]:
    """Inline model-local ONNX functions (``export_modules_as_functions``, onnxscript
    exports) so the matcher sees plain ops."""
    if not len(model.functions):
        return model, []
    import onnx.inliner

    names = sorted({f"{f.domain}.{f.name}" if f.domain else f.name for f in model.functions})
    try:
        inlined = onnx.inliner.inline_local_functions(model)
    except Exception as exc:
        raise MalformedModelError(
            f"cannot inline the model's local functions: {first_line(exc)}"
        ) from exc
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return inlined, [f"{len(names)} local function(s) inlined ({shown})"]


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

            model, _ = inline_functions(load_onnx(p))
            out = tmpdir() / f"{p.stem}.inlined.onnx"
            # external data: an inlined model may pass protobuf's 2 GiB limit
            onnx.save(model, str(out), save_as_external_data=True, location=f"{out.name}.data")
            p = out
        yield p


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
            raise MalformedModelError(
                f"{label}: tensor {t.name!r}: external data location "
                f"{loc!r} is outside the model's directory: refused"
            )
        if not target.is_file():
            raise MalformedModelError(
                f"{label}: tensor {t.name!r}: external data file {loc!r} "
                "not found next to the model (upload the .onnx and its "
                "data file together, e.g. in a .zip)"
            )
    load_external_data_for_model(model, str(root))


def _load_plain(p: Path, label: str) -> Any:
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, ...
        raise MalformedModelError(
            f"{label}: not a parsable ONNX model ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    try:
        _load_external_data(model, p.parent, label)
    except ConversionError:
        raise
    except Exception as exc:  # truncated data file, bad offsets
        raise MalformedModelError(
            f"{label}: cannot read its external data ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, or oversize protos
        raise MalformedModelError(f"{label}: invalid ONNX model: {first_line(exc)}") from exc
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


def opset_of(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise MalformedModelError("model imports no default-domain (ai.onnx) opset")


def graph_input(model: Any) -> Any:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise UnsupportedModelError(
            f"the native engine runs graphs with exactly one input, this one has {names}"
        )
    return inputs[0]


def fix_batch_dim(model: Any) -> list[str]:
    """Give a symbolic batch dimension the value 1 so every shape is static."""
    notes = []
    inp = graph_input(model)
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


def infer_shapes(model: Any) -> tuple[Any, dict[str, tuple[int, ...] | None]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except Exception as exc:
        raise MalformedModelError(f"shape inference failed: {first_line(exc)}") from exc
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
