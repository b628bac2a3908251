"""Build hook: a wheel of bnnbench carries the native engine, compiled when the wheel is built.

Everything else is configured in pyproject.toml. ``build_py`` runs ``make`` on ``native/``
(native/build_engine.py; portable ``-O3``, no ``-march=native``) with its objects in
setuptools' temporary build folder, never in the source tree's ``native/build``, and copies
``libbnn.so`` and ``bnnbench-native`` into the wheel as ``native/build/...``, where
native.engine looks for them. The wheel is therefore platform-specific
(``py3-none-<platform>``: no Python extension, so any CPython 3 of that platform).

An editable install (``pip install -e .``) builds nothing: a checkout builds in place with
``make -C native`` (``make native`` at the top), and native.engine rebuilds a stale library
there. ``BNNBENCH_SKIP_NATIVE=1`` builds a wheel without the engine (a coordinator-only host
without a compiler); native.engine then says how to build it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 ships bdist_wheel; older ones use the `wheel` package's
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent


def _native_builder():
    """native/build_engine.py, loaded by path: the package itself (numpy) is not importable
    in an isolated build environment."""
    spec = importlib.util.spec_from_file_location(
        "_bnnbench_build_engine", HERE / "native" / "build_engine.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _skip_native() -> bool:
    return os.environ.get("BNNBENCH_SKIP_NATIVE", "").lower() in ("1", "true", "yes")


class BuildPyWithNative(build_py):
    """build_py, then the native engine into ``<build_lib>/native/build``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if _skip_native():  # and no engine left over from an earlier build of build_lib
            shutil.rmtree(Path(self.build_lib, "native", "build"), ignore_errors=True)
            return
        eng = _native_builder()
        temp = Path(self.get_finalized_command("build").build_temp, "native").resolve()
        if " " in str(temp):  # make variables cannot hold a path with spaces
            temp = Path(tempfile.mkdtemp(prefix="bnnbench-native-"))
        self.announce(f"building the native engine with make in {temp}", level=2)
        try:
            built = eng.make(
                temp, source_dir=HERE / "native", cflags=eng.RELEASE_CFLAGS, capture=False
            )
        except eng.BuildError as exc:
            raise SystemExit(
                f"error: {exc}\n(set BNNBENCH_SKIP_NATIVE=1 to build bnnbench without its "
                "native engine)"
            ) from exc
        dest = Path(self.build_lib, "native", "build")
        dest.mkdir(parents=True, exist_ok=True)
        for path in built.values():
            shutil.copy2(path, dest / path.name)  # keeps the executable bit

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False) or _skip_native():
            return outputs
        dest = Path(self.build_lib, "native", "build")
        return [*outputs, *(str(dest / n) for n in ("libbnn.so", "bnnbench-native"))]


class BinaryDistribution(Distribution):
    """Platform-specific: the build goes to build_platlib and the wheel's root is platlib
    (Root-Is-Purelib: false). There are no extension modules; build_ext has nothing to do."""

    def has_ext_modules(self) -> bool:
        return not _skip_native()


class PlatformWheel(bdist_wheel):
    """The wheel holds a compiled library and executable but no Python extension: tag it
    ``py3-none-<platform>`` (any CPython 3 on this OS and architecture)."""

    def get_tag(self) -> tuple[str, str, str]:
        python, abi, plat = super().get_tag()
        return (python, abi, plat) if self.root_is_pure else ("py3", "none", plat)


setup(
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithNative, "bdist_wheel": PlatformWheel},
)
