"""The Lasso by full-batch SGD with the proximal L1 option, checked against scikit-learn's ``Lasso``.

A sparse linear model y = X w + b + noise (200 samples, 30 features, 5 of them used) is fitted by
plain full-batch gradient descent on the least-squares loss ``||y - Xw - b||^2 / (2n)`` with
``fd.SGD(..., l1=alpha)`` on the weights (the bias sits in a param group with ``l1=0``). After each
gradient step the optimizer applies the proximal L1 step ``w <- sign(w) * max(|w| - lr*alpha, 0)``:
this is ISTA, which converges to the Lasso solution -- the minimiser of
``||y - Xw - b||^2 / (2n) + alpha * ||w||_1``, exactly scikit-learn's ``Lasso(alpha)`` objective (so
``l1 = alpha``; with a loss ``||y - Xw - b||^2 / n`` it would be ``l1 = 2*alpha``). The weights the
Lasso sets to zero come out as exact zeros.

Run:  python examples/lasso.py [--alpha 0.05] [--steps 3000] [--backend numpy]
"""

import argparse
import time

import numpy as np

import fastdescent as fd


def make_data(n=200, d=30, noise=0.1, seed=0):
    """X (n, d), y (n,), and the true sparse weights (5 non-zeros) and bias."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = np.zeros(d)
    w[rng.choice(d, 5, replace=False)] = rng.choice([-1, 1], 5) * rng.uniform(0.5, 2.0, 5)
    b = 0.7
    y = X @ w + b + noise * rng.standard_normal(n)
    return X, y, w, b


def ista(X, y, alpha, steps, backend=None):
    """Full-batch SGD + l1 (ISTA) with step 1/L, L the Lipschitz constant of the loss's gradient."""
    n, d = X.shape
    A = np.column_stack([X, np.ones(n)])
    lr = 1.0 / np.linalg.eigvalsh(A.T @ A / n).max()
    w, b = np.zeros(d), np.zeros(1)
    gw, gb = np.empty_like(w), np.empty_like(b)
    opt = fd.SGD([{"params": [w], "l1": alpha}, {"params": [b], "l1": 0.0}], lr=lr, backend=backend)
    for _ in range(steps):
        r = X @ w + b[0] - y
        gw[...] = X.T @ r / n
        gb[0] = r.mean()
        opt.step([gw, gb])
    return w, float(b[0]), opt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=0.05, help="L1 strength (sklearn's alpha)")
    p.add_argument("--steps", type=int, default=3000, help="full-batch steps (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="numpy, c, numba (default: fastdescent's default)")
    args = p.parse_args(argv)

    X, y, w_true, b_true = make_data(seed=args.seed)
    t0 = time.perf_counter()
    w, b, opt = ista(X, y, args.alpha, args.steps, args.backend)
    elapsed = time.perf_counter() - t0
    print(f"backend {opt.backend}: {args.steps} full-batch SGD + l1 steps in {elapsed:.2f} s")
    print(f"fastdescent : {np.count_nonzero(w)} non-zero weights of {w.size}, intercept {b:.6f}")
    print(f"true model  : {np.count_nonzero(w_true)} non-zero weights, intercept {b_true}")
    out = {"w": w, "b": b, "w_true": w_true, "zeros": int((w == 0).sum())}
    try:
        from sklearn.linear_model import Lasso
    except ImportError:
        print("scikit-learn is not installed: no comparison with sklearn.linear_model.Lasso")
        return out
    lasso = Lasso(alpha=args.alpha, tol=1e-14, max_iter=100_000).fit(X, y)
    err = float(np.max(np.abs(w - lasso.coef_)))
    same_zeros = bool(np.array_equal(w == 0, lasso.coef_ == 0))
    print(f"sklearn     : {np.count_nonzero(lasso.coef_)} non-zero weights, intercept "
          f"{lasso.intercept_:.6f}")
    print(f"max |w - sklearn coef_| = {err:.2e}; the same exact zeros: {same_zeros}")
    print("weights (fastdescent, sklearn) where either is non-zero:")
    for j in np.flatnonzero((w != 0) | (lasso.coef_ != 0)):
        print(f"  w[{j:2d}] = {w[j]: .6f}  {lasso.coef_[j]: .6f}   (true {w_true[j]: .3f})")
    ok = err < 1e-6 and same_zeros and abs(b - lasso.intercept_) < 1e-6
    print("OK: full-batch SGD + l1 recovers scikit-learn's Lasso, exact zeros included" if ok else
          "MISMATCH with scikit-learn's Lasso")
    out.update(sklearn_coef=lasso.coef_, sklearn_intercept=float(lasso.intercept_), max_err=err,
               same_zeros=same_zeros, ok=ok)
    return out


if __name__ == "__main__":
    main()
