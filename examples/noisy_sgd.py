"""Gradient noise lets SGD escape a shallow local minimum: f(x) = (x^2 - 1)^2 + 0.5 x.

f has a shallow local minimum at x ~ 0.930 (f ~ 0.483) and its global minimum at x ~ -1.058
(f ~ -0.515), with a barrier at x ~ 0.127 (f ~ 1.032) between them. 1000 runs start at x = 1.5 --
one float64 array of 1000 elements, updated by one optimizer: every element draws its own
independent noise. Plain SGD slides into the local minimum and stays there. ``fd.SGD(...,
noise_std=0.2, noise_decay=0.1)`` adds ``sigma_t * z`` after each step, ``sigma_t = 0.2 * t**-0.1``,
which is enough for most runs to cross the barrier and settle in the deeper basin; a last stretch
with the noise switched off (``param_groups[0]["noise_std"] = 0``) lets every run settle at a
minimum. The noise is reproducible from ``--seed``.

Run:  python examples/noisy_sgd.py [--runs 1000] [--steps 4000] [--seed 0] [--backend numpy]
"""

import argparse
import time

import numpy as np

import fastdescent as fd

C = 0.5
X_LOCAL, X_GLOBAL = 0.9304, -1.0575  # the two minima of f (to 4 decimals)


def f(x):
    return (x * x - 1.0) ** 2 + C * x


def grad(x, out):
    out[...] = 4.0 * x ** 3 - 4.0 * x + C
    return out


def descend(x, steps, settle, backend, **noise):
    """SGD from x (in place): ``steps`` steps with the noise options, then ``settle`` without."""
    g = np.empty_like(x)
    opt = fd.SGD([x], lr=0.02, backend=backend, **noise)
    for _ in range(steps):
        opt.step([grad(x, g)])
    opt.param_groups[0]["noise_std"] = 0.0
    for _ in range(settle):
        opt.step([grad(x, g)])
    return opt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000, help="independent runs (array elements)")
    p.add_argument("--steps", type=int, default=4000, help="noisy steps (default 4000)")
    p.add_argument("--settle", type=int, default=500, help="noise-free steps after (default 500)")
    p.add_argument("--noise-std", type=float, default=0.2)
    p.add_argument("--noise-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="numpy, c, numba (default: fastdescent's default)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    plain = np.full(args.runs, 1.5)
    descend(plain, args.steps, args.settle, args.backend)
    noisy = np.full(args.runs, 1.5)
    opt = descend(noisy, args.steps, args.settle, args.backend, noise_std=args.noise_std,
                  noise_decay=args.noise_decay, seed=args.seed)
    elapsed = time.perf_counter() - t0

    def report(name, x):
        glob = np.abs(x - X_GLOBAL) < 1e-3
        loc = np.abs(x - X_LOCAL) < 1e-3
        print(f"{name:<10}: {glob.sum():4d} of {x.size} runs in the global minimum, {loc.sum():4d} "
              f"in the local one; run 0 ends at x = {x[0]:+.4f} (f = {f(x[0]):+.4f})")
        return float(glob.mean()), float(loc.mean())

    print(f"f(x) = (x^2 - 1)^2 + {C} x: local minimum x = {X_LOCAL} (f = {f(X_LOCAL):.3f}), "
          f"global minimum x = {X_GLOBAL} (f = {f(X_GLOBAL):.3f}); start x = 1.5")
    print(f"backend {opt.backend}, {args.steps} + {args.settle} steps of lr 0.02, "
          f"{elapsed:.2f} s for both")
    g_plain, l_plain = report("plain SGD", plain)
    g_noisy, l_noisy = report(f"noisy SGD (noise_std={args.noise_std}, "
                              f"noise_decay={args.noise_decay}, seed={args.seed})", noisy)
    ok = g_plain == 0.0 and l_plain == 1.0 and g_noisy > 0.9
    print("OK: plain SGD stays in the local minimum, noisy SGD escapes to the global one" if ok
          else "unexpected outcome")
    return {"plain": plain, "noisy": noisy, "global_plain": g_plain, "global_noisy": g_noisy,
            "local_noisy": l_noisy, "ok": ok}


if __name__ == "__main__":
    main()
