"""CI guard: backends that must be present here are present (a failed build is a failure, not a skip).

Set ``FASTDESCENT_REQUIRE_BACKENDS=numpy,c,numba,cuda`` (``.ci/run`` does); unset, this test skips.
"""

import os

import pytest

import fastdescent as fd
from fastdescent import backends

REQUIRED = [b for b in os.environ.get("FASTDESCENT_REQUIRE_BACKENDS", "").split(",") if b.strip()]


@pytest.mark.skipif(not REQUIRED, reason="FASTDESCENT_REQUIRE_BACKENDS not set")
@pytest.mark.parametrize("name", REQUIRED or ["-"])
def test_required_backend_loads(name):
    status = backends.backend_status()
    assert name in status, f"unknown backend {name!r} in FASTDESCENT_REQUIRE_BACKENDS"
    assert status[name] is None, f"backend {name!r} is required here but unavailable: {status[name]}"
    assert name in fd.available_backends()


def test_c_extension_imports_when_required():
    """Under CI the tests must exercise the installed package (with its compiled extension)."""
    if "c" not in REQUIRED:
        pytest.skip("c backend not required")
    import fastdescent._fastdescent_c  # noqa: F401  (raises if the extension was not built)
