"""Packaging: the sdist carries every file the native build needs, and `pip install SDIST` in a
clean venv (isolated build, as a Raspberry Pi owner installs an agent) compiles the engine
into the wheel, so the installed package runs models without building anything on import."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
from native_helpers import NATIVE, ROOT, small_network

from native import format as F


def _package_data_globs() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-data"]["native"]


def _makefiles() -> list[str]:
    """native/Makefile and the files it includes (relative to native/)."""
    todo, seen = ["Makefile"], []
    while todo:
        name = todo.pop()
        seen.append(name)
        for inc in re.findall(r"^-?include\s+(\S+)\s*$", (NATIVE / name).read_text(), re.M):
            if "$" not in inc and inc not in seen:  # skip `-include $(wildcard ...d)`
                todo.append(inc)
    return seen


def _build_inputs(tmp_path: Path) -> set[str]:
    """The files (relative to native/) that `make all` reads: makefiles, every C file it
    compiles here, and every C file (the NEON kernels are compiled on ARM hosts only) and
    header in src/ and include/."""
    proc = subprocess.run(
        ["make", "-C", str(NATIVE), "-n", "-B", f"BUILD={tmp_path}", "all"],
        capture_output=True,
        text=True,
        check=True,
    )
    c_files = set(re.findall(r"\s((?:src|bench)/[\w./-]+\.c)\b", proc.stdout))
    assert "src/engine.c" in c_files and "bench/clock.c" in c_files, proc.stdout[:2000]
    headers = {
        str(p.relative_to(NATIVE)) for d in ("src", "include") for p in (NATIVE / d).glob("*.[ch]")
    }
    return {*_makefiles(), *c_files, *headers}


def test_package_data_covers_the_native_build(tmp_path):
    """Fast check of the sdist / wheel file list: pyproject's package-data for `native` must
    match every file `make -C native` reads (cross.mk was once left out)."""
    globs = _package_data_globs()
    needed = _build_inputs(tmp_path)
    assert "cross.mk" in needed
    missing = sorted(n for n in needed if not any(fnmatch.fnmatchcase(n, g) for g in globs))
    assert not missing, f"not in [tool.setuptools.package-data] native: {missing}"


# ---------------------------------------------------------------- sdist -> clean venv

_CHECK = textwrap.dedent("""
    import json, os, subprocess, sys
    import numpy as np
    import native.engine as engine
    lib = engine.library_path()
    with engine.NativeEngine(sys.argv[1], threads=2) as eng:
        y = eng.run(np.ones(eng.input_shape, dtype=np.float32))
    cli = engine.cli_path()
    proc = subprocess.run([str(cli), sys.argv[1], "--runs", "2"], capture_output=True,
                          text=True)
    print(json.dumps({"lib": str(lib), "version": engine.version(), "isa": engine.kernel_isa(),
                      "out": y.ravel().tolist(), "cli": str(cli), "cli_rc": proc.returncode,
                      "cli_err": proc.stderr[-500:]}))
""")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def _source_copy(dest: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files, copied to ``dest``: the
    sdist is built from what a commit would hold, not from local build outputs."""
    assert (ROOT / ".git").exists() and shutil.which("git"), "the sdist is built from a checkout"
    names = _run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    ).stdout.split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the work tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.slow
def test_sdist_installs_and_runs_in_a_clean_venv(tmp_path):
    assert importlib.util.find_spec("build"), "needs the `build` package (the dev extra)"
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", str(dist), str(src)])
    (sdist,) = dist.glob("bnnbench-*.tar.gz")

    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {f"native/{n}" for n in _build_inputs(tmp_path / "mk")}
    assert "native/cross.mk" in needed
    assert needed | {"setup.py", "pyproject.toml", "native/build_engine.py"} <= names, sorted(
        needed - names
    )
    assert not [n for n in names if n.startswith("native/build/")]

    # A clean venv (no system site-packages) and its own pip, with an isolated build.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "BNNBENCH_NATIVE_LIB", "CFLAGS")
    }
    _run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", str(sdist)],
        env=env,
        cwd=tmp_path,
    )

    model = tmp_path / "small.bnn"
    model.write_bytes(F.dumps(small_network(np.random.default_rng(0))))
    out = _run([str(py), "-c", _CHECK, str(model)], env=env, cwd=tmp_path).stdout
    got = json.loads(out.strip().splitlines()[-1])
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_path('platlib'))"],
            env=env,
            cwd=tmp_path,
        ).stdout.strip()
    )
    assert Path(got["lib"]) == site / "native" / "build" / "libbnn.so"  # not the checkout's
    assert Path(got["cli"]) == site / "native" / "build" / "bnnbench-native"
    assert got["version"] and got["isa"]
    assert got["out"] and all(np.isfinite(got["out"]))
    assert got["cli_rc"] == 0, got["cli_err"]
    # only the two outputs went into the wheel (no objects), and it is platform-specific
    assert sorted(p.name for p in (site / "native" / "build").iterdir()) == [
        "bnnbench-native",
        "libbnn.so",
    ]
    (wheel_meta,) = site.glob("bnnbench-*.dist-info/WHEEL")
    meta = wheel_meta.read_text()
    assert "Root-Is-Purelib: false" in meta
    assert re.search(r"^Tag: py3-none-(?!any)\S+$", meta, re.M), meta

    # The installed package never builds on import: without its library it says how to.
    (site / "native" / "build" / "libbnn.so").unlink()
    proc = subprocess.run(
        [str(py), "-c", "import native.engine as e; e.version()"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "NativeError" in proc.stderr and "native.build_engine" in proc.stderr, proc.stderr
    assert not (site / "native" / "build" / "libbnn.so").exists()
    # ... and `python -m native.build_engine` rebuilds it in place from the shipped sources.
    _run([str(py), "-m", "native.build_engine"], env=env, cwd=tmp_path)
    out = _run([str(py), "-c", _CHECK, str(model)], env=env, cwd=tmp_path).stdout
    assert json.loads(out.strip().splitlines()[-1])["out"] == got["out"]
