"""Epoch time of a digits MLP: fastdescent (per backend) vs torch vs scikit-learn, side by side.

The same task for everyone: scikit-learn's digits (75% / 25% stratified split, standardised pixels),
a 64-256-10 ReLU MLP, minibatches of 64 reshuffled every epoch, Adam with lr 1e-3 (no weight
decay), softmax cross-entropy, ``--epochs`` epochs from a fresh initialisation.

* fastdescent: ``fd.fit`` on ``fd.nn.MLP`` for each backend with the dense-layer kernels; the epoch
  time is History's ``train_time`` (the minibatch loop, including the per-epoch shuffle).
* torch: ``nn.Sequential(Linear, ReLU, Linear)`` with ``torch.optim.Adam(fused=True)`` and the usual
  loop (``zero_grad(set_to_none=True)``, forward, ``cross_entropy``, ``backward``, ``step``) over
  index-tensor minibatches; timed at torch's default thread count and with 1 thread.
* scikit-learn: ``MLPClassifier(hidden_layer_sizes=(256,), solver="adam", batch_size=64, alpha=0)``;
  the epoch time is ``fit`` time / ``n_iter_``.

Every contender is warmed up first (JIT compilation, first-call costs), then trained ``--rounds``
times in rotating order; the reported epoch time is the median over all epochs of all rounds (the
machine may be shared and noisy: only ratios from one run are meaningful). Test accuracy is that of
the last round.

Run:  python examples/benchmark_digits.py [--epochs 20] [--rounds 3] [--backends c,numba,numpy] [--threads 1]
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

import fastdescent as fd
import fastdescent.nn  # noqa: F401  (fd.nn)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits import limit_threads, load_digits_split  # noqa: E402

HIDDEN, BATCH, LR = 256, 64, 1e-3


def fd_backends():
    from fastdescent.nn._backend import DENSE_KERNELS
    need = DENSE_KERNELS + ("xent_fwd_bwd",)
    out = []
    for name in fd.available_backends():
        if name == "cuda":
            continue
        if all(k in fd.get_backend(name).KERNELS for k in need):
            out.append(name)
    return out


def run_fastdescent(data, epochs, seed, backend):
    X_train, X_test, y_train, y_test = data
    model = fd.nn.MLP([64, HIDDEN, 10], activation="relu", seed=seed, backend=backend)
    opt = fd.Adam(model.parameters(), lr=LR)
    hist = fd.nn.fit(model, X_train, y_train, loss="cross_entropy", optimizer=opt, epochs=epochs,
                     batch_size=BATCH, seed=seed, progress=False)
    return list(hist.train_time), model.score(X_test, y_test)


def run_torch(data, epochs, seed, threads):
    import torch
    X_train, X_test, y_train, y_test = data
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
        opt = torch.optim.Adam(net.parameters(), lr=LR, fused=True)
        X, y = torch.from_numpy(X_train), torch.from_numpy(y_train)
        n = len(X)
        g = torch.Generator().manual_seed(seed)
        times = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=g)
            for s in range(0, n, BATCH):
                idx = perm[s:s + BATCH]
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
                loss.backward()
                opt.step()
            times.append(time.perf_counter() - t0)
        with torch.no_grad():
            acc = float((net(torch.from_numpy(X_test)).argmax(1).numpy() == y_test).mean())
    finally:
        torch.set_num_threads(old)
    return times, acc


def run_sklearn(data, epochs, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    X_train, X_test, y_train, y_test = data
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam", alpha=0.0,
                        batch_size=BATCH, learning_rate_init=LR, max_iter=epochs, shuffle=True,
                        random_state=seed, tol=0.0, n_iter_no_change=epochs + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(X_train, y_train)
        total = time.perf_counter() - t0
    return [total / clf.n_iter_] * clf.n_iter_, float(clf.score(X_test, y_test))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="epochs per training run (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="timed training runs per contender (default 3)")
    p.add_argument("--backends", default=None,
                   help="comma-separated fastdescent backends (default: every one with the dense kernels)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="thread count for everyone (torch, BLAS via threadpoolctl, the c and numba "
                        "backends); default: each library's own default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    data = load_digits_split(seed=args.seed)
    with limit_threads(args.threads):
        return _bench(args, data)


def _bench(args, data):
    contenders = {}
    names = (fd_backends() if args.backends is None
             else [b.strip() for b in args.backends.split(",") if b.strip()])
    for b in names:
        contenders[f"fastdescent[{b}]"] = lambda e, b=b: run_fastdescent(data, e, args.seed, b)
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: skipped")
        else:
            nthreads = args.threads or torch.get_num_threads()
            contenders[f"torch ({nthreads} thread{'s' if nthreads > 1 else ''})"] = \
                lambda e: run_torch(data, e, args.seed, args.threads)
            if nthreads != 1:
                contenders["torch (1 thread)"] = lambda e: run_torch(data, e, args.seed, 1)
    if not args.no_sklearn:
        contenders["scikit-learn"] = lambda e: run_sklearn(data, e, args.seed)

    for fn in contenders.values():  # warm-up: JIT, allocator, first-call costs
        fn(1)
    times = {k: [] for k in contenders}
    acc = {}
    keys = list(contenders)
    for r in range(args.rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            t, a = contenders[k](args.epochs)
            times[k].extend(t)
            acc[k] = a
    med = {k: float(np.median(v)) for k, v in times.items()}

    torch_keys = [k for k in med if k.startswith("torch")]
    best_torch = min((med[k] for k in torch_keys), default=None)
    sk = med.get("scikit-learn")
    print(f"digits MLP 64-{HIDDEN}-10, batch {BATCH}, Adam lr {LR}, {args.epochs} epochs x "
          f"{args.rounds} rounds (median epoch time; {os.cpu_count()} CPUs, "
          f"threads: {args.threads or 'library defaults'})")
    print(f"{'contender':26s} {'epoch ms':>9s} {'test acc':>9s} {'vs best torch':>14s} {'vs sklearn':>11s}")
    for k in keys:
        rt = f"{med[k] / best_torch:.3f}x" if best_torch else "-"
        rs = f"{med[k] / sk:.3f}x" if sk else "-"
        print(f"{k:26s} {med[k] * 1e3:9.3f} {acc[k] * 100:8.2f}% {rt:>14s} {rs:>11s}")
    result = {"threads": args.threads, "epochs": args.epochs, "rounds": args.rounds, "epoch_time_s": med,
              "accuracy": acc, "best_torch_s": best_torch, "sklearn_s": sk}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
