"""The scripts in examples/ run and reach their targets (imported, called with small settings)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from fastdescent.nn._backend import DENSE_KERNELS

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _dense_available():
    try:
        from fastdescent.nn._backend import resolve_dense
        resolve_dense(None, DENSE_KERNELS + ("mse_fwd_bwd", "xent_fwd_bwd"))
        return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _dense_available(),
                                reason="no backend implements the dense-layer kernels here")


def _load(name):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fd_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["linear_regression", "xor_tanh", "digits", "benchmark_digits",
                                  "lasso", "noisy_sgd"])
def test_every_example_is_a_script(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    assert 'if __name__ == "__main__":' in text and "argparse" in text
    assert callable(_load(name).main)


def test_linear_regression_matches_least_squares(capsys, tmp_path):
    mod = _load("linear_regression")
    res = mod.main(["--n", "100", "--seed", "3"])
    x, y = mod.make_data(100, 0.5, 3)
    w_ls, b_ls = np.linalg.lstsq(np.column_stack([x, np.ones_like(x)]), y, rcond=None)[0]
    assert res["w"] == pytest.approx(w_ls, abs=1e-5) and res["b"] == pytest.approx(b_ls, abs=1e-5)
    assert abs(res["w"] - 2) < 0.3 and abs(res["b"] - 3) < 0.2
    out = capsys.readouterr().out
    assert "least squares" in out and "OK" in out


def test_xor_tanh_learns_xor(capsys):
    mod = _load("xor_tanh")
    for seed in (0, 1):
        res = mod.main(["--seed", str(seed)])
        assert res["accuracy"] == 1.0 and res["loss"] < 1e-3
        np.testing.assert_array_equal(res["predictions"], [0, 1, 1, 0])
    assert "accuracy 1.00" in capsys.readouterr().out


def test_digits_every_optimizer_reaches_96_percent(capsys):
    pytest.importorskip("sklearn")
    mod = _load("digits")
    res = mod.main([])
    for name in ("adam", "sgd", "rmsprop"):
        assert res[name]["accuracy"] >= 0.96, (name, res[name]["accuracy"])
        assert res[name]["epoch_time"] > 0
    assert res["ok"]
    out = capsys.readouterr().out
    assert "adam" in out and "rmsprop" in out and "OK" in out


def test_benchmark_runs_quickly(capsys):
    pytest.importorskip("sklearn")
    mod = _load("benchmark_digits")
    res = mod.main(["--epochs", "2", "--rounds", "1", "--no-torch"])
    assert res["sklearn_s"] > 0 and any(k.startswith("fastdescent[") for k in res["epoch_time_s"])
    assert "vs sklearn" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["numpy", None])
def test_lasso_recovers_sklearn_with_exact_zeros(capsys, backend):
    pytest.importorskip("sklearn")
    mod = _load("lasso")
    res = mod.main([] if backend is None else ["--backend", backend])
    assert res["ok"] and res["same_zeros"] and res["max_err"] < 1e-6
    assert res["zeros"] >= 20 and (res["w"][res["w_true"] == 0] == 0).all()
    assert "OK" in capsys.readouterr().out


def test_noisy_sgd_escapes_the_local_minimum(capsys):
    mod = _load("noisy_sgd")
    res = mod.main([])
    assert res["ok"] and res["global_plain"] == 0.0 and res["global_noisy"] > 0.9
    again = mod.main([])  # reproducible from the seed
    np.testing.assert_array_equal(res["noisy"], again["noisy"])
    assert "OK" in capsys.readouterr().out
