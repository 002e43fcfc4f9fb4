"""fastdescent.torch as a drop-in for torch.optim: a PyTorch MLP on scikit-learn's digits.

The same torch model (64-256-128-10, ReLU) is trained twice from the same initial weights, on the
same minibatches, with a torch OneCycleLR schedule: once with ``fastdescent.torch.AdamW`` (the
one-word change from ``torch.optim.AdamW``) and once with ``torch.optim.AdamW(fused=True)``. Each
run prints its held-out accuracy and the median time of ``optimizer.step()``; the two runs' final
weights agree to float32 rounding. The target is >= 95% accuracy for both (exit status 1 otherwise).

Run:  python examples/torch_drop_in.py [--epochs 15] [--batch-size 64] [--seed 0] [--device cuda]

``--device cuda`` trains on the GPU (fastdescent.torch runs CUDA tensors on its ``cuda`` backend);
the step times are then host times of asynchronous launches, as torch's are.
"""

import argparse
import copy
import statistics
import time

import torch

import fastdescent.torch as fdt


def load_digits_split(seed=0):
    """(X_train, X_test, y_train, y_test) as torch tensors, standardised with the training set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed,
                                                        stratify=y)
    mu, sd = X_train.mean(axis=0), X_train.std(axis=0)
    sd[sd == 0] = 1.0
    return (torch.tensor((X_train - mu) / sd, dtype=torch.float32),
            torch.tensor((X_test - mu) / sd, dtype=torch.float32),
            torch.tensor(y_train), torch.tensor(y_test))


def make_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                               torch.nn.ReLU(), torch.nn.Linear(128, 10))


def train(model, opt, data, epochs, batch_size, seed):
    """A plain torch training loop; returns (test accuracy, per-step optimizer times)."""
    X_train, X_test, y_train, y_test = data
    device = next(model.parameters()).device
    steps_per_epoch = -(-len(X_train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, epochs=epochs,
                                                steps_per_epoch=steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        order = torch.randperm(len(X_train), generator=gen).to(device)
        for k in range(0, len(X_train), batch_size):
            idx = order[k:k + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X_train[idx]), y_train[idx])
            loss.backward()
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
            sched.step()
    with torch.no_grad():
        acc = (model(X_test).argmax(1) == y_test).float().mean().item()
    return acc, times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch has no CUDA device here")
    data = tuple(t.to(args.device) for t in load_digits_split(args.seed))
    base = make_model(args.seed).to(args.device)
    results = {}
    for name in ("fastdescent.torch.AdamW", "torch.optim.AdamW(fused=True)"):
        model = copy.deepcopy(base)
        if name.startswith("fastdescent"):
            opt = fdt.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
        acc, times = train(model, opt, data, args.epochs, args.batch_size, args.seed)
        step_us = statistics.median(times) * 1e6
        results[name] = {"accuracy": acc, "step_us": step_us, "model": model}
        print(f"{name:32s} test accuracy {acc:.4f}   optimizer.step() median {step_us:7.1f} us "
              f"({len(times)} steps)")
    (a, b) = (r["model"] for r in results.values())
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    print(f"largest weight difference between the two runs: {diff:.2e}")
    ok = all(r["accuracy"] >= 0.95 for r in results.values())
    print("OK" if ok else "FAILED: accuracy below 95%")
    out = {k: {"accuracy": v["accuracy"], "step_us": v["step_us"]} for k, v in results.items()}
    out["max_weight_diff"] = diff
    out["ok"] = ok
    return out


if __name__ == "__main__":
    res = main()
    raise SystemExit(0 if res["ok"] else 1)
