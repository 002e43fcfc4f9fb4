"""How close ``fastdescent.torch`` on bfloat16 parameters comes to torch.optim on the same ones.

Two runs per optimizer configuration, each against torch.optim's fused, foreach and for-loop
implementations (all three on CPU, bfloat16 parameters and state):

- open loop: the same random bfloat16 gradients fed to every optimizer at every step (so the only
  differences are the optimizers' own roundings, accumulated over the steps);
- closed loop: a small MLP in bfloat16 trained on random data (each optimizer's parameters give its
  own gradients: differences feed back).

Per comparison: the fraction of parameter elements whose bits differ, and the largest distance in
bfloat16 ulps (units in the last place: the difference of the bit patterns read as ordered integers),
after step 1 and after every ``--steps``. Usage: ``python benchmarks/torch_bf16_closeness.py
[--steps 1,10,100] [--backend numba] [--n 100000]``.
"""

from __future__ import annotations

import argparse

import torch

import fastdescent.torch as fdt


def ordered(t):
    """bfloat16 bits as integers ordered like the values (sign-magnitude to two's complement)."""
    b = t.detach().view(torch.int16).to(torch.int32)
    return torch.where(b < 0, -(b & 0x7FFF), b)


def compare(ps, qs):
    """(fraction of elements that differ, largest ulp distance, largest absolute difference) over
    the parameter lists (ulps across zero count every bfloat16 value in between)."""
    diff, total, ulps, dmax = 0, 0, 0, 0.0
    for p, q in zip(ps, qs):
        d = (ordered(p) - ordered(q)).abs()
        diff += int((d > 0).sum())
        total += d.numel()
        if d.numel():
            ulps = max(ulps, int(d.max()))
            dmax = max(dmax, float((p.detach().float() - q.detach().float()).abs().max()))
    return diff / total, ulps, dmax


IMPLS = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}


def impls(name):
    """torch.optim's implementations of ``name`` (RMSprop has no fused one)."""
    import inspect

    has = inspect.signature(getattr(torch.optim, name)).parameters
    return {k: kw for k, kw in IMPLS.items() if all(a in has for a in kw)}


def open_loop(name, hp, steps, backend, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(k, generator=g).to(torch.bfloat16) for k in (n, n // 7)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    opt = getattr(fdt, name)(ours, backend=backend, **hp)
    theirs = {}
    for impl, kw in impls(name).items():
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        theirs[impl] = (ps, getattr(torch.optim, name)(ps, **hp, **kw))
    out = {}
    for t in range(1, max(steps) + 1):
        grads = [(0.1 * torch.randn(p.shape, generator=g)).to(torch.bfloat16) for p in ours]
        for p, gr in zip(ours, grads):
            p.grad = gr.clone()
        opt.step()
        for ps, o in theirs.values():
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
            o.step()
        if t in steps:
            out[t] = {impl: compare(ours, ps) for impl, (ps, _) in theirs.items()}
    return out


def closed_loop(name, hp, steps, backend, seed=0):
    def mlp():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.Tanh(),
                                   torch.nn.Linear(256, 10)).to(torch.bfloat16)

    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(512, 32, generator=g).to(torch.bfloat16)
    y = torch.randint(0, 10, (512,), generator=g)
    ours = mlp()
    models = {"ours": (ours, getattr(fdt, name)(ours.parameters(), backend=backend, **hp))}
    for impl, kw in impls(name).items():
        m = mlp()
        models[impl] = (m, getattr(torch.optim, name)(m.parameters(), **hp, **kw))
    out = {}
    for t in range(1, max(steps) + 1):
        idx = torch.arange((t - 1) * 64, t * 64) % 512
        for m, o in models.values():
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(X[idx]).float(), y[idx]).backward()
            o.step()
        if t in steps:
            out[t] = {impl: compare(list(ours.parameters()), list(m.parameters()))
                      for impl, (m, _) in models.items() if impl != "ours"}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="1,10,100")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--n", type=int, default=100_000)
    a = ap.parse_args(argv)
    steps = sorted({int(s) for s in a.steps.split(",")})
    configs = [("Adam", dict(lr=1e-3)), ("AdamW", dict(lr=1e-3, weight_decay=0.01)),
               ("Adam", dict(lr=1e-3, amsgrad=True)), ("SGD", dict(lr=1e-2, momentum=0.9)),
               ("RMSprop", dict(lr=1e-3))]
    print("bfloat16 parameters and state, fastdescent.torch vs torch.optim's fused | foreach | "
          "for-loop: fraction of parameter elements that differ / max ulps / max |difference|")
    for name, hp in configs:
        for what, res in (("open", open_loop(name, hp, steps, a.backend, a.n)),
                          ("closed", closed_loop(name, hp, steps, a.backend))):
            for t, r in res.items():
                cells = " | ".join(f"{r[k][0]:.1e} / {r[k][1]} / {r[k][2]:.1e}" if k in r else "-"
                                   for k in IMPLS)
                print(f"{name:7s} {str(hp):36s} {what:6s} step {t:3d}: {cells}")


if __name__ == "__main__":
    main()
