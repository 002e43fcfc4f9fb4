"""Only the cffi extension lives here; all metadata is in pyproject.toml.

The extension ``fastdescent._fastdescent_c`` is built by ``csrc/cffi_build.py`` (outside the package,
so it is not shipped). It is optional: when it fails to compile, the install still succeeds (the
numpy and numba backends work) and this ``build_ext``

- prints a warning with the compiler's output (pip shows it with ``pip install -v``), and
- writes that output to ``fastdescent/_c_build_error.txt`` in the built package, which the c backend
  reads so that ``fastdescent.info()["backends"]["c"]["reason"]`` shows the compiler's error.

A successful build removes a stale ``_c_build_error.txt``.
"""

import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.errors import ExecError
except ImportError:  # pragma: no cover - old setuptools
    from distutils.errors import DistutilsExecError as ExecError

ERROR_FILE = "_c_build_error.txt"
EXT_NAME = "fastdescent._fastdescent_c"


class BuildExt(build_ext):
    """build_ext that keeps the compiler's output of a failed build of the optional C extension."""

    def _error_paths(self, ext):
        # next to the extension module, in build_lib (what the wheel holds) or in place (editable)
        return [os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), ERROR_FILE)]

    def build_extension(self, ext):
        if ext.name != EXT_NAME:
            return super().build_extension(ext)
        log = []
        orig = {k: self.compiler.__dict__.get(k) for k in ("spawn", "call")}
        if not sys.platform.startswith("win"):

            def run(cmd, env=None):
                # as distutils runs the compiler, but the output is kept (and still echoed)
                self.announce(" ".join(map(str, cmd)), level=2)
                try:
                    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                except OSError as exc:
                    log.append(f"$ {' '.join(map(str, cmd))}\n{exc}\n")
                    raise
                out = r.stdout.decode("utf-8", "replace")
                if out:
                    sys.stderr.write(out)
                if r.returncode != 0:
                    log.append(f"$ {' '.join(map(str, cmd))}\n{out}(exit status {r.returncode})\n")
                return r.returncode

            def spawn(cmd, **kwargs):  # older distutils: CCompiler.spawn
                try:
                    rc = run(cmd, kwargs.get("env"))
                except OSError as exc:
                    raise ExecError(f"command {cmd[0]!r} failed: {exc}") from exc
                if rc:
                    raise ExecError(f"command {cmd[0]!r} failed with exit code {rc}")

            def call(cmd, *, env=None, **kwargs):  # newer distutils: CCompiler.call
                rc = run(cmd, env)
                if rc:
                    raise subprocess.CalledProcessError(rc, cmd)

            self.compiler.spawn = spawn
            if hasattr(self.compiler, "call"):
                self.compiler.call = call
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any failure of the optional extension
            text = "".join(log) or f"{type(exc).__name__}: {exc}\n"
            text = f"building {EXT_NAME} failed: {type(exc).__name__}: {exc}\n\n{text}"
            for path in self._error_paths(ext):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
            bar = "=" * 78
            sys.stderr.write(
                f"\n{bar}\nWARNING: the fastdescent C extension ({EXT_NAME}) failed to build; the "
                "'c' backend will be unavailable (numpy and numba still work).\n"
                f"Compiler output (also saved in fastdescent/{ERROR_FILE}):\n{text}{bar}\n\n")
            raise  # build_ext reports it, and goes on since the extension is optional
        else:
            for path in self._error_paths(ext):
                if os.path.exists(path):
                    os.remove(path)
        finally:
            for k, v in orig.items():  # back to the class's methods
                if v is None:
                    self.compiler.__dict__.pop(k, None)
                else:
                    setattr(self.compiler, k, v)


setup(cffi_modules=["csrc/cffi_build.py:ffibuilder"], cmdclass={"build_ext": BuildExt})
