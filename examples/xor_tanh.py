"""XOR with the classic 2-3-1 tanh network.

Two inputs, three tanh hidden units, one linear output trained on the mean squared error towards
the targets 0/1 by full-batch gradient descent with momentum (SGD, momentum 0.9); a prediction
above 0.5 reads as 1.

Run:  python examples/xor_tanh.py [--epochs 400] [--lr 0.1] [--momentum 0.9] [--seed 0] [--backend numpy]
"""

import argparse
import time

import numpy as np

import fastdescent as fd
import fastdescent.nn  # noqa: F401  (fd.nn)

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
Y = np.array([0, 1, 1, 0], dtype=np.float64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=400, help="full-batch steps (default 400)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="weight-initialisation seed (default 0)")
    p.add_argument("--backend", default=None, help="numpy, c, numba (default: fastdescent's default)")
    p.add_argument("--plot", default=None, metavar="PNG", help="save the loss curve to this file")
    args = p.parse_args(argv)

    model = fd.nn.MLP([2, 3, 1], activation="tanh", seed=args.seed, dtype=np.float64,
                      init="xavier_uniform", backend=args.backend)
    opt = fd.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    t0 = time.perf_counter()
    hist = fd.nn.fit(model, X, Y, loss="mse", optimizer=opt, epochs=args.epochs, batch_size=None,
                     progress=False)
    elapsed = time.perf_counter() - t0
    out = model.predict(X)[:, 0]
    pred = (out > 0.5).astype(int)
    acc = float(np.mean(pred == Y))
    print(f"backend {model.backend}; {hist.n_epochs} full-batch momentum-SGD steps in {elapsed * 1e3:.1f} ms; "
          f"final mse {hist.loss[-1]:.5f}")
    for (a, b), o, t in zip(X.astype(int), out, Y.astype(int)):
        print(f"  {a} xor {b} = {t}   network: {o:+.4f} -> {int(o > 0.5)}")
    print(f"accuracy {acc:.2f}")
    if args.plot:
        print("loss curve:", hist.plot(args.plot, logy=True, title="XOR, 2-3-1 tanh"))
    return {"outputs": out, "predictions": pred, "accuracy": acc, "loss": hist.loss[-1], "history": hist}


if __name__ == "__main__":
    res = main()
    raise SystemExit(0 if res["accuracy"] == 1.0 else 1)
