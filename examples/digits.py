"""Handwritten digits (scikit-learn's bundled 8x8 set): a 64-256-10 ReLU MLP, three optimizers.

The 1797 images are split 75% / 25% (stratified, seeded); pixels are standardised with the training
set's statistics. The same network is trained from the same initial weights with Adam, SGD with
Nesterov momentum and RMSprop (minibatches of 64, cosine-annealed learning rate), and each one's
accuracy on the held-out 25% and its median epoch time are printed. The target is >= 96% for every
optimizer (the exit status is 1 otherwise).

Run:  python examples/digits.py [--epochs 30] [--batch-size 64] [--backend c] [--threads 1] [--plot DIR]
"""

import argparse
import contextlib
import os
import time

import numpy as np

import fastdescent as fd
import fastdescent.nn  # noqa: F401  (fd.nn)

#: optimizer name -> (constructor, default learning rate)
OPTIMIZERS = {
    "adam": (lambda params, lr: fd.Adam(params, lr=lr), 2e-3),
    "sgd": (lambda params, lr: fd.SGD(params, lr=lr, momentum=0.9, nesterov=True), 2e-2),
    "rmsprop": (lambda params, lr: fd.RMSprop(params, lr=lr), 1e-3),
}


@contextlib.contextmanager
def limit_threads(n):
    """Run the block with at most ``n`` threads in the c and numba kernels and in BLAS (numpy backend,
    scikit-learn), restoring the previous settings afterwards; ``n`` None or 0 changes nothing.

    A 64-256-10 MLP on batches of 64 is too small to gain from threads, and on a busy machine
    multi-threaded kernels can lose a lot of time waiting for each other.
    """
    if not n:
        yield
        return
    restore = []
    if "c" in fd.available_backends():
        c = fd.get_backend("c")
        old = c.get_num_threads()
        c.set_num_threads(n)
        restore.append(lambda: c.set_num_threads(old))
    if "numba" in fd.available_backends():
        import numba
        old_nb = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        restore.append(lambda: numba.set_num_threads(old_nb))
    limiter = None
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=n)
    except ImportError:
        pass
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        for undo in restore:
            undo()


def load_digits_split(test_size=0.25, seed=0, dtype=np.float32):
    """(X_train, X_test, y_train, y_test), standardised with the training statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed,
                                                        stratify=y)
    mu, sd = X_train.mean(axis=0), X_train.std(axis=0)
    sd[sd == 0] = 1.0
    X_train = ((X_train - mu) / sd).astype(dtype)
    X_test = ((X_test - mu) / sd).astype(dtype)
    return X_train, X_test, y_train.astype(np.int64), y_test.astype(np.int64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizers", default="adam,sgd,rmsprop",
                   help="comma-separated subset of adam,sgd,rmsprop (default: all three)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per optimizer (default 30)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64)")
    p.add_argument("--hidden", type=int, default=256, help="hidden units (default 256)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: per optimizer)")
    p.add_argument("--no-schedule", action="store_true", help="constant learning rate (no cosine)")
    p.add_argument("--seed", type=int, default=0, help="split, initialisation and shuffling seed")
    p.add_argument("--backend", default=None, help="numpy, c, numba (default: fastdescent's default)")
    p.add_argument("--threads", type=int, default=1,
                   help="kernel/BLAS threads (default 1: the model is small); "
                        "0 keeps the libraries' defaults")
    p.add_argument("--target", type=float, default=0.96, help="required test accuracy (default 0.96)")
    p.add_argument("--progress", action="store_true", help="show a progress bar per optimizer")
    p.add_argument("--plot", default=None, metavar="DIR", help="save each loss curve as DIR/digits_<opt>.png")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    unknown = [s for s in names if s not in OPTIMIZERS]
    if unknown or not names:
        p.error(f"--optimizers: unknown {unknown}; choose from {sorted(OPTIMIZERS)}")

    with limit_threads(args.threads):
        results = _run(args, names)
    ok = all(r["accuracy"] >= args.target for r in results.values())
    print(("OK: every optimizer reached" if ok else "FAILED: not every optimizer reached")
          + f" {args.target * 100:.0f}% test accuracy")
    results["ok"] = ok
    return results


def _run(args, names):
    X_train, X_test, y_train, y_test = load_digits_split(seed=args.seed)
    print(f"digits: {len(X_train)} training / {len(X_test)} test images, MLP 64-{args.hidden}-10, "
          f"batch {args.batch_size}, {args.epochs} epochs, threads: {args.threads or 'library defaults'}")
    results = {}
    for name in names:
        make, default_lr = OPTIMIZERS[name]
        lr = default_lr if args.lr is None else args.lr
        model = fd.nn.MLP([64, args.hidden, 10], activation="relu", seed=args.seed, backend=args.backend)
        opt = make(model.parameters(), lr)
        sched = None if args.no_schedule else fd.nn.CosineAnnealingLR(opt, T_max=args.epochs)
        t0 = time.perf_counter()
        hist = fd.nn.fit(model, X_train, y_train, loss="cross_entropy", optimizer=opt,
                         epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                         validation_data=(X_test, y_test), scheduler=sched, progress=args.progress)
        total = time.perf_counter() - t0
        acc = model.score(X_test, y_test)
        results[name] = {"accuracy": acc, "epoch_time": hist.epoch_time, "total_time": total,
                         "backend": model.backend, "history": hist}
        print(f"  {name:8s} lr {lr:<6g} test accuracy {acc * 100:6.2f}%   "
              f"epoch {hist.epoch_time * 1e3:6.2f} ms "
              f"(median, backend {model.backend})   total {total:5.2f} s")
        if args.plot:
            os.makedirs(args.plot, exist_ok=True)
            hist.plot(os.path.join(args.plot, f"digits_{name}.png"), title=f"digits, {name}")
    return results


if __name__ == "__main__":
    raise SystemExit(0 if main()["ok"] else 1)
