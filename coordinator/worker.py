"""One analysis or conversion, in its own process (started by ``coordinator.conversion``):

    python -m coordinator.worker analyze MODEL.onnx RESULT.json
    python -m coordinator.worker convert MODEL.onnx LIBRARY OUT_PATH RESULT.json

A separate process keeps heavy converter work (onnx, numpy, TensorFlow for LCE) out of the
server, lets the server kill a conversion that hangs, and survives a converter crash. The
outcome is written as JSON to RESULT.json: ``{"ok": true, "result": {...}}`` or
``{"ok": false, "user_error": bool, "error_type": "...", "error": "..."}``; ``user_error`` is
true for :class:`converters.errors.ConversionError` (a problem with the model, shown as is).
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def _finite(obj: Any) -> Any:
    # strict JSON all the way to API responses: NaN/inf become null
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    plain = json.loads(json.dumps(payload, default=_jsonable))
    tmp.write_text(json.dumps(_finite(plain), allow_nan=False))
    os.replace(tmp, path)


def run(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("analyze", "convert"):
        print(__doc__, file=sys.stderr)
        return 2
    action = argv[0]
    if (action == "analyze" and len(argv) != 3) or (action == "convert" and len(argv) != 5):
        print(__doc__, file=sys.stderr)
        return 2
    result_path = Path(argv[-1])

    def failed(exc: Exception, error: str, user_error: bool = False) -> None:
        payload = {"user_error": user_error, "error_type": type(exc).__name__, "error": error}
        _write(result_path, {"ok": False, **payload})

    try:
        from converters import api
        from converters.errors import ConversionError
    except Exception as exc:  # a broken install is the operator's problem, not the model's
        failed(exc, f"converters unavailable: {exc}")
        return 1
    try:
        if action == "analyze":
            result = api.analyze(argv[1])
        else:
            result = api.convert(argv[1], argv[2], argv[3])
    except ConversionError as exc:
        failed(exc, str(exc) or type(exc).__name__, user_error=True)
        return 0
    except Exception as exc:
        traceback.print_exc()
        failed(exc, f"{type(exc).__name__}: {exc}")
        return 1
    _write(result_path, {"ok": True, "result": result if isinstance(result, dict) else {}})
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
