"""cffi build script of the ``c`` backend: the extension module ``fastdescent._fastdescent_c``.

It lives in ``csrc/`` (next to the sources it compiles), outside the ``fastdescent`` package, so it
is neither shipped in the wheel nor importable from an installed fastdescent. It never imports the
fastdescent package.

- Run by setuptools through ``setup.py`` (``cffi_modules=["csrc/cffi_build.py:ffibuilder"]``; the
  ``build_ext`` there keeps the compiler's output of a failed build in
  ``fastdescent/_c_build_error.txt``, which the c backend shows as the reason it is unavailable).
- Or by hand: ``python csrc/cffi_build.py`` builds the module in place (in ``fastdescent/``);
  ``python csrc/cffi_build.py --outdir DIR`` builds it into DIR instead (the sanitizer stage does this
  with ``FASTDESCENT_EXTRA_CFLAGS="-fsanitize=address,undefined ..."``, then points
  ``FASTDESCENT_C_EXTENSION`` at the result).
- The version: ``fastdescent/_version.py`` is the one place it is written; ``make_ffibuilder`` writes
  ``csrc/fastdescent_version.h`` from it (the ``FASTDESCENT_VERSION_*`` macros, included by the
  header; ``csrc/Makefile`` generates the same bytes), which ``fd_version()`` returns.
- The cdef is ``csrc/fastdescent.h`` itself (one source of truth), minus its preprocessor lines and
  the lines inside ``#ifdef __cplusplus`` blocks.
- API mode: the extension compiles every ``csrc/fd_*.c`` (the dense-layer files included) with -O3,
  -fno-math-errno and OpenMP, or without OpenMP if the compiler cannot build an OpenMP program (or
  ``FASTDESCENT_NO_OPENMP=1`` is set). No ``-march``: the library picks its AVX2+FMA path at run time.
  ``FASTDESCENT_EXTRA_CFLAGS`` / ``FASTDESCENT_EXTRA_LDFLAGS`` (shell words) are appended to the
  compile / link flags.
- The extension is ``optional``: if it cannot be compiled, ``pip install`` still succeeds and the
  ``c`` backend reports itself unavailable with the cause.
"""

import glob
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile

from cffi import FFI

MODULE = "fastdescent._fastdescent_c"
CSRC = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(CSRC)
HEADER = os.path.join(CSRC, "fastdescent.h")


def read_cdef(path=HEADER):
    """The header as a cffi cdef: without preprocessor lines and ``#ifdef __cplusplus`` blocks."""
    out, skip_depth, depth = [], None, 0
    with open(path) as f:
        for line in f:
            s = line.strip()
            if s.startswith("#"):
                directive = s[1:].strip()
                if directive.startswith(("if", "ifdef", "ifndef")):
                    depth += 1
                    if skip_depth is None and directive.split()[:2] == ["ifdef", "__cplusplus"]:
                        skip_depth = depth
                elif directive.startswith("endif"):
                    if skip_depth == depth:
                        skip_depth = None
                    depth -= 1
                continue
            if skip_depth is None:
                out.append(line)
    return "".join(out)


def _rel(path):
    """``path`` relative to the current directory when below it (setuptools prefers relative
    source paths), else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _unix_compiler():
    return not sys.platform.startswith("win")


def _openmp_flags():
    """(compile flags, link flags) for OpenMP, or ([], []) if the C compiler cannot use it."""
    if os.environ.get("FASTDESCENT_NO_OPENMP", "") not in ("", "0"):
        return [], []
    if not _unix_compiler():
        return ["/openmp"], []
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_check.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            r = subprocess.run(shlex.split(cc) + ["-fopenmp", src, "-o", os.path.join(tmp, "a.out")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return [], []
    return (["-fopenmp"], ["-fopenmp"]) if r.returncode == 0 else ([], [])


def read_version():
    """``__version__`` from ``fastdescent/_version.py``, the one place the version is written."""
    path = os.path.join(CSRC, os.pardir, "fastdescent", "_version.py")
    with open(path, encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M)
    if m is None:
        raise RuntimeError(f"no __version__ in {path}")
    return m.group(1)


VERSION_HEADER = os.path.join(CSRC, "fastdescent_version.h")


def version_header_text(version=None):
    """The text of ``csrc/fastdescent_version.h`` (the ``FASTDESCENT_VERSION_*`` macros that
    ``fastdescent.h`` includes) for ``version`` (default: :func:`read_version`); byte for byte what
    ``csrc/Makefile`` generates."""
    version = read_version() if version is None else version
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if m is None:
        raise RuntimeError(f"__version__ {version!r} does not start with MAJOR.MINOR.PATCH")
    major, minor, patch = m.groups()
    return (
        "/* fastdescent_version.h -- generated from fastdescent/_version.py by csrc/Makefile or\n"
        " * csrc/cffi_build.py; do not edit. Included by fastdescent.h. */\n"
        "#ifndef FASTDESCENT_VERSION_H\n"
        "#define FASTDESCENT_VERSION_H\n"
        f"#define FASTDESCENT_VERSION_MAJOR {major}\n"
        f"#define FASTDESCENT_VERSION_MINOR {minor}\n"
        f"#define FASTDESCENT_VERSION_PATCH {patch}\n"
        f'#define FASTDESCENT_VERSION_STRING "{version}"\n'
        "#define FASTDESCENT_VERSION_NUMBER \\\n"
        "    (FASTDESCENT_VERSION_MAJOR * 1000000 + FASTDESCENT_VERSION_MINOR * 1000 + "
        "FASTDESCENT_VERSION_PATCH)\n"
        "#endif\n"
    )


def write_version_header(path=VERSION_HEADER):
    """Write ``fastdescent_version.h`` next to ``fastdescent.h`` unless it already has this text
    (then it is left alone, so its timestamp does not trigger rebuilds)."""
    text = version_header_text()
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


#: Python-side helper compiled into the extension only (not part of the C library): the layout
#: fingerprints of many NumPy arrays in one call, read from NumPy's public object layout
#: (PyArrayObject_fields: data, nd, dimensions, strides, base, descr, flags), so that
#: fastdescent.functional can tell in ~20 ns an array that a cached table still describes it
#: (same object, data address, dtype, flags, shape) instead of ~1 us of __array_interface__.
#: fastdescent/functional.py checks the layout against __array_interface__ before using it.
PY_ARRAY_CDEF = """
#define FD_PY_PRINT_SLOTS 12
int fd_py_array_prints(const int64_t *seqs, int64_t nseq, int64_t ndarray_type, int64_t n,
                       int64_t *out, const int64_t *prev);
"""

PY_ARRAY_SOURCE = r"""
#define FD_PY_PRINT_SLOTS 12
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} fd_py_array_head;

/* The arrays of nseq lists or tuples (seqs: their addresses; the caller holds references), end to
 * end: for each array [address, data, descr, flags, nd, dims[0..6], 0] in out[12*i ...] (n arrays in
 * all). Runs under the GIL (cffi released it: no other thread can resize a list or an array while
 * they are read). Returns -1 if a sequence is not a list or tuple, an element is not exactly an
 * ndarray_type or has more than 6 dimensions, or the sequences do not hold n arrays in all; else 0
 * when prev (n rows, may be NULL) equals what was read, 1 when it differs or is NULL. With out NULL
 * (and prev given) nothing is written: the walk stops at the first difference (returning 1). */
static int fd_py_array_prints(const int64_t *seqs, int64_t nseq, int64_t ndarray_type, int64_t n,
                              int64_t *out, const int64_t *prev)
{
    const PyTypeObject *nd_type = (const PyTypeObject *)(uintptr_t)ndarray_type;
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = prev ? 0 : 1;
    int64_t k = 0;
    for (int64_t s = 0; s < nseq && rc >= 0 && !(rc == 1 && !out); s++) {
        PyObject *seq = (PyObject *)(uintptr_t)seqs[s];
        int is_list = PyList_Check(seq);
        if (!is_list && !PyTuple_Check(seq)) {
            rc = -1;
            break;
        }
        Py_ssize_t len = is_list ? PyList_Size(seq) : PyTuple_Size(seq);
        for (Py_ssize_t j = 0; j < len; j++) {
            /* borrowed references: nothing here runs Python code that could drop them */
            PyObject *obj = is_list ? PyList_GetItem(seq, j) : PyTuple_GetItem(seq, j);
            const fd_py_array_head *a = (const fd_py_array_head *)obj;
            /* exact ndarrays only (the limited API hides a type's base; subclasses take the slow
             * path) */
            if (k >= n || obj == NULL || Py_TYPE(obj) != nd_type || a->nd < 0 || a->nd > 6) {
                rc = -1;
                break;
            }
            int64_t row[FD_PY_PRINT_SLOTS];
            int64_t *o = out ? out + FD_PY_PRINT_SLOTS * k : row;
            o[0] = (int64_t)(uintptr_t)obj;
            o[1] = (int64_t)(uintptr_t)a->data;
            o[2] = (int64_t)(uintptr_t)a->descr;
            o[3] = a->flags;
            o[4] = a->nd;
            for (int d = 0; d < 6; d++) o[5 + d] = d < a->nd ? (int64_t)a->dimensions[d] : -1;
            o[11] = 0;
            if (rc == 0 && memcmp(o, prev + FD_PY_PRINT_SLOTS * k, FD_PY_PRINT_SLOTS * sizeof *o))
                rc = 1;
            k++;
            if (rc == 1 && !out) break;
        }
    }
    if (rc >= 0 && k != n && !(rc == 1 && !out)) rc = -1;
    PyGILState_Release(gil);
    return rc;
}
"""


def make_ffibuilder(relative=True):
    """The FFI builder; ``relative``: source paths relative to the current directory when below it
    (setuptools prefers them), else absolute (``compile(tmpdir=...)`` runs in tmpdir)."""
    rel = _rel if relative else os.path.abspath
    write_version_header()
    ffi = FFI()
    ffi.cdef(read_cdef())
    ffi.cdef(PY_ARRAY_CDEF)
    sources = sorted(glob.glob(os.path.join(CSRC, "fd_*.c")))
    depends = sorted(glob.glob(os.path.join(CSRC, "*.h")))
    omp_compile, omp_link = _openmp_flags()
    if _unix_compiler():
        extra_compile = ["-O3", "-std=gnu11", "-fno-math-errno"] + omp_compile
        libraries = ["m"]
    else:
        extra_compile = ["/O2"] + omp_compile
        libraries = []
    extra_compile += shlex.split(os.environ.get("FASTDESCENT_EXTRA_CFLAGS", ""))
    omp_link = omp_link + shlex.split(os.environ.get("FASTDESCENT_EXTRA_LDFLAGS", ""))
    ffi.set_source(
        MODULE,
        '#include "fastdescent.h"\n' + PY_ARRAY_SOURCE,
        sources=[rel(s) for s in sources],
        depends=[rel(d) for d in depends],
        include_dirs=[rel(CSRC)],
        extra_compile_args=extra_compile,
        extra_link_args=omp_link,
        libraries=libraries,
        optional=True,  # a failed compile leaves the c backend unavailable, not the install broken
    )
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="build the cffi extension fastdescent._fastdescent_c")
    ap.add_argument("--outdir", help="build into this directory (default: in place, in fastdescent/)")
    args = ap.parse_args()
    out = os.path.abspath(args.outdir) if args.outdir else None
    os.chdir(ROOT)
    ffibuilder = make_ffibuilder(relative=out is None)
    if out:
        os.makedirs(out, exist_ok=True)
        print(ffibuilder.compile(tmpdir=out, verbose=True))
    else:
        # in place: tmpdir=ROOT puts the module at fastdescent/_fastdescent_c.<suffix>
        print(ffibuilder.compile(tmpdir=ROOT, verbose=True))
