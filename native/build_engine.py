"""Build the native engine (``libbnn.so`` and the static ``bnnbench-native`` CLI) with make.

    python -m native.build_engine              # in place: native/build/ next to this file
    python -m native.build_engine --force      # rebuild every object

Standard library only: ``setup.py`` loads this file by path while building a wheel (into a
temporary build folder, see :func:`make`), before numpy or the package are importable.
``native.engine.build`` calls it in place. Needs ``make`` and a C11 compiler (gcc or clang;
``$CC`` wins).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

NATIVE_DIR = Path(__file__).resolve().parent
LIBRARY = "libbnn.so"
CLI = "bnnbench-native"
TARGETS = (LIBRARY, CLI)
#: The portable release flags a wheel is built with: one binary for every CPU of its
#: architecture (kernels for newer ISAs are picked at run time), no -march=native.
RELEASE_CFLAGS = "-O3"

INSTALL_HINT = (
    "install a C compiler and make (Debian / Raspberry Pi OS: `sudo apt-get install gcc make "
    "libc6-dev`; macOS: `xcode-select --install`)"
)


class BuildError(RuntimeError):
    """make or a compiler is missing, or make failed."""


def find_cc() -> str | None:
    """The compiler make will use: ``$CC`` if set, else gcc, cc or clang (first found)."""
    env = os.environ.get("CC", "")
    if env.split():
        return env if shutil.which(env.split()[0]) else None
    for cc in ("gcc", "cc", "clang"):
        if shutil.which(cc):
            return cc
    return None


def have_toolchain() -> bool:
    return shutil.which("make") is not None and find_cc() is not None


def make(
    build_dir: str | Path | None = None,
    *,
    targets: tuple[str, ...] = TARGETS,
    source_dir: str | Path = NATIVE_DIR,
    cflags: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    capture: bool = True,
) -> dict[str, Path]:
    """Run ``make -C source_dir`` for ``targets`` (names under the build folder).

    ``build_dir``: where objects and outputs go (make's ``BUILD``); ``None`` is the in-place
    ``native/build``. ``cflags``: ``None`` keeps the Makefile's default (``-O3``, or
    ``$CFLAGS`` / ``EXTRA_CFLAGS`` from the environment); a string replaces them all (a wheel
    passes :data:`RELEASE_CFLAGS`). ``capture``: keep make's output for the error message
    instead of passing it through. Returns target name -> built path; raises BuildError."""
    source_dir = Path(source_dir).resolve()
    if shutil.which("make") is None:
        raise BuildError(f"building the native engine needs `make`: {INSTALL_HINT}")
    cc = find_cc()
    if cc is None:
        which = f"$CC ({os.environ['CC']})" if os.environ.get("CC") else "gcc, cc or clang"
        raise BuildError(f"building the native engine needs a C compiler ({which}): {INSTALL_HINT}")
    # In place, make keeps its relative default BUILD=build, so the targets match the names
    # in the dependency files (*.d) that `make -C native` writes.
    rel = build_dir is None
    out = source_dir / "build" if rel else Path(build_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["make", "-C", str(source_dir), f"-j{jobs or _jobs()}"]
    if not rel:
        cmd.append(f"BUILD={out}")
    if not os.environ.get("CC"):
        cmd.append(f"CC={cc}")  # the Makefile's default is gcc, which may be absent
    if cflags is not None:
        cmd += [f"CFLAGS={cflags}", "EXTRA_CFLAGS="]
    if force:
        cmd.append("-B")
    cmd += [f"build/{t}" if rel else str(out / t) for t in targets]
    # Several processes (agent, converter workers, tests) may build the same folder at once.
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(cmd, capture_output=capture, text=True, check=False)
    built = {t: out / t for t in targets}
    if proc.returncode != 0 or not all(p.is_file() for p in built.values()):
        tail = ""
        if capture:
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
            tail = ": " + " | ".join(lines)
        raise BuildError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}){tail}")
    return built


def _jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m native.build_engine",
        description=f"Build {LIBRARY} and {CLI} with make in {NATIVE_DIR / 'build'}.",
    )
    ap.add_argument("--force", action="store_true", help="rebuild every object (make -B)")
    ap.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs")
    ap.add_argument(
        "--release",
        action="store_true",
        help=f"portable release flags ({RELEASE_CFLAGS}), ignoring $CFLAGS",
    )
    args = ap.parse_args(argv)
    try:
        built = make(
            jobs=args.jobs,
            force=args.force,
            capture=False,
            cflags=RELEASE_CFLAGS if args.release else None,
        )
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in built.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
