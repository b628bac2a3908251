"""One analysis or conversion, in its own process (started by ``coordinator.conversion``):

    python -m coordinator.worker analyze MODEL.onnx RESULT.json
    python -m coordinator.worker convert MODEL.onnx LIBRARY OUT_PATH RESULT.json

A separate process keeps heavy converter work (onnx, numpy, TensorFlow for LCE) out of the
server, lets the server kill a conversion that hangs, and survives a converter crash. The
outcome is written as JSON to RESULT.json: ``{"ok": true, "result": {...}}`` or
``{"ok": false, "user_error": bool, "error_type": "...", "error": "..."}``; ``user_error`` is
true for :class:`converters.errors.ConversionError` (a problem with the model, shown as is).

A worker never outlives the coordinator that started it (a SIGKILLed coordinator cannot kill
its children): on Linux the kernel sends it SIGKILL when its parent dies (PR_SET_PDEATHSIG);
everywhere, a thread checks once a second that its parent is still the process that started
it (``BNNBENCH_WORKER_PARENT``) and ends the worker if not. ``BNNBENCH_WORKER_MAX_MEMORY_MB``
(the coordinator's ``worker_max_memory_mb``; unset or 0: no limit) caps the worker's address
space, so a model whose analysis or conversion needs more fails with "ran out of memory"
instead of taking the machine.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

PARENT_ENV = "BNNBENCH_WORKER_PARENT"  # pid of the coordinator that started the worker
MEMORY_ENV = "BNNBENCH_WORKER_MAX_MEMORY_MB"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_ORPHANED = 3  # exit code of a worker whose parent is gone


def die_with_parent(poll_s: float = 1.0, *, pdeathsig: bool = True) -> None:
    """End this process when its parent (the coordinator) dies, however it dies; the polling
    thread alone (``pdeathsig=False``) is what other systems get."""
    parent = os.getppid()
    expected = os.environ.get(PARENT_ENV, "")
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the thread below still notices
    if expected.isdigit() and int(expected) != parent:
        os._exit(_ORPHANED)  # the parent died before the line above took effect

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:  # reparented: the coordinator is gone
                os._exit(_ORPHANED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def memory_limit_mb() -> int:
    """The address-space cap set by the coordinator, in MiB (0: none)."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    return int(raw) if raw.isdigit() else 0


def limit_memory(limit_mb: int) -> None:
    if limit_mb <= 0:
        return
    try:
        import resource
    except ImportError:  # not on this platform: no cap
        return
    cap = limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


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
    except MemoryError as exc:
        limit = memory_limit_mb()
        failed(
            exc,
            f"the {action} worker ran out of memory: the model needs more than the "
            f"{limit} MiB a worker may use (worker_max_memory_mb)"
            + (f": {exc}" if str(exc) else ""),
            user_error=True,
        )
        return 1
    except Exception as exc:
        traceback.print_exc()
        failed(exc, f"{type(exc).__name__}: {exc}")
        return 1
    _write(result_path, {"ok": True, "result": result if isinstance(result, dict) else {}})
    return 0


if __name__ == "__main__":
    die_with_parent()
    limit_memory(memory_limit_mb())
    sys.exit(run(sys.argv[1:]))
