"""The installed C library, as an embedder uses it: ``make -C csrc install PREFIX=...`` into a
temporary prefix (objects in a temporary build folder: the source tree's build is not touched), then
the documented example ``csrc/examples/train_adam.c`` compiled with the flags of ``fastdescent.pc``
(through ``pkg-config`` when it is installed, else read from the .pc file here), linked against the
shared library (its SONAME, the symlinks) and against the static one, run, and its output compared
with fastdescent.optim.AdamW's trajectory in Python, value for value. Also: DESTDIR staging, the
refusal of a relative PREFIX, uninstall, the version header against fastdescent/_version.py, and
csrc/README.md showing the example program as it is.

Skipped, with the reason, where there is no C compiler or no make (pkg-config is optional).
"""

from __future__ import annotations

import os
import pathlib
import re
import runpy
import shlex
import shutil
import subprocess

import numpy as np
import pytest

import fastdescent as fd

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
EXAMPLE = CSRC / "examples" / "train_adam.c"
CC = shlex.split(os.environ.get("CC", "cc"))

pytestmark = [
    pytest.mark.skipif(not (CSRC / "Makefile").exists(), reason="csrc/ is not in this tree"),
    pytest.mark.skipif(shutil.which(CC[0]) is None, reason=f"no C compiler ({CC[0]!r}) on PATH"),
    pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH"),
]

MAJOR, MINOR, PATCH = (int(x) for x in re.match(r"(\d+)\.(\d+)\.(\d+)", fd.__version__).groups())
SOVERSION = f"{MAJOR}.{MINOR}" if MAJOR == 0 else f"{MAJOR}"
REALNAME = f"libfastdescent.so.{MAJOR}.{MINOR}.{PATCH}"
SONAME = f"libfastdescent.so.{SOVERSION}"


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _make(*args):
    return subprocess.run(["make", "-s", "-C", str(CSRC), "-j2", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(prefix, build folder) of a fresh ``make install``."""
    tmp = tmp_path_factory.mktemp("fdinstall")
    prefix, build = tmp / "prefix", tmp / "build"
    r = _make("install", f"PREFIX={prefix}", f"BUILD={build}")
    assert r.returncode == 0, r.stdout + r.stderr
    return prefix, build


# ---------------------------------------------------------------------------- the .pc file
def _parse_pc(path):
    """(variables, fields) of a pkg-config file, ${var} references expanded."""
    variables, fields = {}, {}

    def expand(v):
        return re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], v)

    for line in pathlib.Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.match(r"^([\w.]+)\s*=\s*(.*)$", line):
            variables[m.group(1)] = expand(m.group(2))
        elif m := re.match(r"^([\w.]+)\s*:\s*(.*)$", line):
            fields[m.group(1)] = expand(m.group(2))
    return variables, fields


def _pc_flags(pcdir, static=False):
    """The compile and link flags of fastdescent.pc: ``pkg-config --cflags --libs [--static]`` if
    pkg-config is installed, else the same fields read here."""
    fields = _parse_pc(pcdir / "fastdescent.pc")[1]
    ours = (shlex.split(fields["Cflags"]) + shlex.split(fields["Libs"])
            + (shlex.split(fields.get("Libs.private", "")) if static else []))
    if shutil.which("pkg-config") is None:
        return ours
    env = {**os.environ, "PKG_CONFIG_PATH": str(pcdir)}
    out = _run(["pkg-config", "--cflags", "--libs", *(["--static"] if static else []),
                "fastdescent"], env=env)
    flags = out.split()
    assert sorted(flags) == sorted(ours), (flags, ours)
    return flags


def test_installed_files(installed):
    prefix, _ = installed
    inc, lib = prefix / "include", prefix / "lib"
    assert (inc / "fastdescent.h").read_text() == (CSRC / "fastdescent.h").read_text()
    assert (inc / "fastdescent_version.h").is_file()
    assert (lib / REALNAME).is_file() and not (lib / REALNAME).is_symlink()
    assert os.readlink(lib / SONAME) == REALNAME
    assert os.readlink(lib / "libfastdescent.so") == SONAME
    assert (lib / "libfastdescent.a").is_file()
    variables, fields = _parse_pc(lib / "pkgconfig" / "fastdescent.pc")
    assert variables["prefix"] == str(prefix)
    assert fields["Version"] == fd.__version__
    assert fields["Libs"] == f"-L{lib} -lfastdescent"


def test_version_header_is_generated_from_version_py(installed):
    """Installed fastdescent_version.h: FASTDESCENT_VERSION_* of fastdescent/_version.py, byte for
    byte what cffi_build.py generates for the Python extension."""
    prefix, _ = installed
    text = (prefix / "include" / "fastdescent_version.h").read_text()
    assert text == runpy.run_path(str(CSRC / "cffi_build.py"), run_name="x")["version_header_text"]()
    macros = dict(re.findall(r"#define (FASTDESCENT_VERSION_\w+) (.+)", text))
    assert (int(macros["FASTDESCENT_VERSION_MAJOR"]), int(macros["FASTDESCENT_VERSION_MINOR"]),
            int(macros["FASTDESCENT_VERSION_PATCH"])) == (MAJOR, MINOR, PATCH)
    assert macros["FASTDESCENT_VERSION_STRING"] == f'"{fd.__version__}"'


def _dynamic_section(path):
    for tool in (["readelf", "-d"], ["objdump", "-p"]):
        if shutil.which(tool[0]):
            return _run([*tool, str(path)])
    pytest.skip("neither readelf nor objdump is installed")


def _entry(dyn, tag):
    """The values of a dynamic-section tag in readelf -d output (``0x.. (SONAME) Library soname:
    [x]``) or objdump -p output (``  SONAME   x``)."""
    pat = rf"^\s*(?:0x[0-9a-f]+\s+\({tag}\).*\[([^\]]+)\]|{tag}\s+(\S+))\s*$"
    return [a or b for a, b in re.findall(pat, dyn, re.M)]


def test_shared_library_has_its_soname(installed):
    prefix, _ = installed
    dyn = _dynamic_section(prefix / "lib" / REALNAME)
    assert _entry(dyn, "SONAME") == [SONAME], dyn


def _python_adamw():
    """The example's training, with fastdescent.optim.AdamW: its expected output lines."""
    w = np.array([0.5, -1.0, 2.0], np.float32)
    b = np.array([0.0, 0.25, -0.75, 1.5, 3.0], np.float32)
    wt = np.array([1.0, 2.0, -3.0], np.float32)
    bt = np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32)
    opt = fd.AdamW([w, b], lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                   backend="numpy")
    for _ in range(200):
        opt.step([np.float32(2) * (w - wt), np.float32(2) * (b - bt)])
    return [f"w[{i}] = {float(v):.9g}" for i, v in enumerate(w)] + \
           [f"b[{i}] = {float(v):.9g}" for i, v in enumerate(b)]


def _check_example_output(out):
    lines = out.splitlines()
    assert lines[0] == f"fastdescent {fd.__version__} (header {MAJOR}.{MINOR}.{PATCH})"
    assert lines[1].startswith("loss before step 200: ") and float(lines[1].split(": ")[1]) < 0.05
    # two calls per step (fd_adam_scalars, fd_adam_f32) give AdamW's trajectory exactly
    assert lines[2:10] == _python_adamw()
    assert lines[10] == "beta1 = 1: an argument is outside its domain"


def test_example_against_the_shared_library_through_pkg_config(installed, tmp_path):
    prefix, _ = installed
    lib = prefix / "lib"
    exe = tmp_path / "train_adam"
    _run([*CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", str(EXAMPLE), "-o", str(exe),
          *_pc_flags(lib / "pkgconfig"), f"-Wl,-rpath,{lib}"])
    dyn = _dynamic_section(exe)
    assert SONAME in _entry(dyn, "NEEDED"), dyn  # bound to the SONAME, not to the file name
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    _check_example_output(_run([str(exe)], env=env))


def test_example_against_the_static_library(installed, tmp_path):
    prefix, _ = installed
    lib = prefix / "lib"
    flags = _pc_flags(lib / "pkgconfig", static=True)
    # the archive itself in place of -lfastdescent (which prefers the .so)
    flags = [str(lib / "libfastdescent.a") if f == "-lfastdescent" else f for f in flags]
    exe = tmp_path / "train_adam_static"
    _run([*CC, "-std=c99", str(EXAMPLE), "-o", str(exe), *flags])
    needed = _entry(_dynamic_section(exe), "NEEDED")
    assert needed and not [n for n in needed if "fastdescent" in n], needed
    _check_example_output(_run([str(exe)]))


def test_destdir_staging_relative_prefix_and_uninstall(installed, tmp_path):
    _, build = installed  # the same objects: nothing is recompiled
    stage = tmp_path / "stage"
    r = _make("install", "PREFIX=/opt/fastdescent-test", f"DESTDIR={stage}", f"BUILD={build}")
    assert r.returncode == 0, r.stdout + r.stderr
    root = stage / "opt" / "fastdescent-test"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    assert files == sorted(["include/fastdescent.h", "include/fastdescent_version.h",
                            f"lib/{REALNAME}", f"lib/{SONAME}", "lib/libfastdescent.so",
                            "lib/libfastdescent.a", "lib/pkgconfig/fastdescent.pc"])
    # the .pc file names the final prefix, not the staging folder
    assert _parse_pc(root / "lib" / "pkgconfig" / "fastdescent.pc")[0]["prefix"] == \
        "/opt/fastdescent-test"
    r = _make("uninstall", "PREFIX=/opt/fastdescent-test", f"DESTDIR={stage}", f"BUILD={build}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [p for p in root.rglob("*") if not p.is_dir()]
    r = _make("install", "PREFIX=relative/dir", f"DESTDIR={stage}", f"BUILD={build}")
    assert r.returncode != 0 and "PREFIX must be an absolute path" in r.stderr


def test_readme_shows_the_example_as_it_is():
    """csrc/README.md's embedding example is csrc/examples/train_adam.c, verbatim (which `make
    test` and this file compile and run)."""
    readme = (CSRC / "README.md").read_text()
    blocks = re.findall(r"```c\n(.*?)```", readme, flags=re.S)
    assert EXAMPLE.read_text() in blocks
