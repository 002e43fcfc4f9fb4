"""Linear regression y = 2x + 3 + noise by full-batch gradient descent, checked against least squares.

A one-unit ``Linear(1, 1)`` model (float64) is trained with plain gradient descent on the mean
squared error -- ``fit(..., batch_size=None)`` makes one step per epoch over the whole data set --
until the loss stops changing (``tol``), then compared with the closed-form least-squares solution
``numpy.linalg.lstsq``.

Run:  python examples/linear_regression.py [--n 200] [--noise 0.5] [--lr 0.5] [--backend numpy]
"""

import argparse
import time

import numpy as np

import fastdescent as fd
import fastdescent.nn  # noqa: F401  (fd.nn)


def make_data(n, noise, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=n)
    y = 2.0 * x + 3.0 + noise * rng.normal(size=n)
    return x, y


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="number of samples (default 200)")
    p.add_argument("--noise", type=float, default=0.5, help="std of the Gaussian noise (default 0.5)")
    p.add_argument("--lr", type=float, default=0.5, help="gradient-descent step size (default 0.5)")
    p.add_argument("--epochs", type=int, default=5000, help="maximum number of steps (default 5000)")
    p.add_argument("--tol", type=float, default=1e-15,
                   help="stop when the loss improves by less than this for 5 steps (default 1e-15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="numpy, c, numba (default: fastdescent's default)")
    p.add_argument("--plot", default=None, metavar="PNG", help="save the loss curve to this file")
    args = p.parse_args(argv)

    x, y = make_data(args.n, args.noise, args.seed)
    model = fd.nn.Sequential(fd.nn.Linear(1, 1), seed=args.seed, dtype=np.float64, backend=args.backend)
    opt = fd.SGD(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    hist = fd.nn.fit(model, x, y, loss="mse", optimizer=opt, epochs=args.epochs, batch_size=None,
                     tol=args.tol, n_iter_no_change=5, progress=False)
    elapsed = time.perf_counter() - t0
    w_gd, b_gd = float(model.layers[0].weight[0, 0]), float(model.layers[0].bias[0])

    A = np.column_stack([x, np.ones_like(x)])
    (w_ls, b_ls), *_ = np.linalg.lstsq(A, y, rcond=None)

    print(f"backend {model.backend}; {hist.n_epochs} gradient-descent steps in {elapsed * 1e3:.1f} ms "
          f"(stop: {hist.stop_reason}), final mse {hist.loss[-1]:.6f}")
    print(f"gradient descent : w = {w_gd:.8f}, b = {b_gd:.8f}")
    print(f"least squares    : w = {w_ls:.8f}, b = {b_ls:.8f}")
    print("true             : w = 2, b = 3")
    assert np.allclose([w_gd, b_gd], [w_ls, b_ls], rtol=0, atol=1e-5), \
        "gradient descent did not reach the least-squares solution"
    print("OK: gradient descent matches the closed-form least-squares solution (atol 1e-5)")
    if args.plot:
        print("loss curve:", hist.plot(args.plot, logy=True, title="linear regression (full-batch GD)"))
    return {"w": w_gd, "b": b_gd, "w_ls": float(w_ls), "b_ls": float(b_ls), "epochs": hist.n_epochs,
            "history": hist}


if __name__ == "__main__":
    main()
