"""Subprocesses with hard timeouts, for the fork/spawn tests: a hang fails the test, not the CI job.

* :func:`run_script` (in a test): runs a Python script in a fresh interpreter, with this directory on
  its ``PYTHONPATH`` (so the script can ``from _subproc import run_child``), and returns its output;
* :func:`run_child` (in such a script): runs a function in a child made by ``os.fork`` or by a
  :mod:`multiprocessing` start method (``"fork"``, ``"spawn"``...), and returns the child's exit code.

Nothing here imports pytest or fastdescent at module level: the scripts import this module too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

__all__ = ["TESTS_DIR", "run_script", "run_child"]

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_script(tmp_path, source, *args, env=None, unset=(), timeout=120, name="script.py",
               what="the subprocess"):
    """Write ``source`` (dedented) to ``tmp_path/name`` and run it with ``args``, in ``tmp_path``.

    The environment is this process's, less the variables in ``unset``, updated with ``env``, with
    this directory prepended to ``PYTHONPATH``. A script still running after ``timeout`` seconds is
    killed and the test fails; so does a non-zero exit. Returns its stdout + stderr.
    """
    import pytest

    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS_DIR, full_env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run([sys.executable, str(path), *map(str, args)], env=full_env,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} hung (killed after {timeout} s); output so far:\n"
                    f"{exc.stdout}\n{exc.stderr}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{what} exited with {proc.returncode}:\n{out}"
    return out


def run_child(method, target, args=(), timeout=60):
    """Run ``target(*args)`` in a child process and return its exit code (0: it returned).

    ``method`` is ``"os.fork"`` (a bare fork; the child leaves with ``os._exit``) or a
    multiprocessing start method. Prints ``CHILD EXIT <code>``. A child still running after
    ``timeout`` seconds is killed, ``CHILD HUNG`` printed and the script exits with status 3.
    """
    if method == "os.fork":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                target(*args)
                code = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                import signal
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                print("CHILD HUNG", flush=True)
                sys.exit(3)
            time.sleep(0.05)
        code = os.waitstatus_to_exitcode(status)
    else:
        import multiprocessing as mp

        proc = mp.get_context(method).Process(target=target, args=tuple(args))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            print("CHILD HUNG", flush=True)
            sys.exit(3)
        code = proc.exitcode
    print("CHILD EXIT", code, flush=True)
    return code
