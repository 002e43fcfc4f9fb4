"""Helpers shared by the torch drop-in test files: a fastdescent.torch optimizer and a torch.optim one
(foreach=False) over equal parameters, trajectory comparison, and snapshots of parameters and state
to check that a refused step changed nothing."""

from __future__ import annotations

import torch

import fastdescent.torch as fdt


def pair(cls_name, shape=(4, 5), n=1, seed=0, **hp):
    """``n`` parameters for fastdescent.torch and the same for torch.optim (foreach=False)."""
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(shape, generator=g)) for _ in range(n)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    return ps, qs, getattr(fdt, cls_name)(ps, **hp), getattr(torch.optim, cls_name)(
        qs, foreach=False, **hp)


def close(ps, qs):
    for j, (p, q) in enumerate(zip(ps, qs)):
        torch.testing.assert_close(p, q, msg=lambda m, j=j: f"params[{j}]: {m}")


def snapshot(opt, ps):
    return [(p.detach().clone(), {k: v.clone() for k, v in opt.state.get(p, {}).items()})
            for p in ps]


def unchanged(opt, ps, snap):
    for j, (p, (value, st)) in enumerate(zip(ps, snap)):
        assert torch.equal(p.detach(), value), j
        now = opt.state.get(p, {})
        assert now.keys() == st.keys(), j
        for k, v in st.items():
            assert torch.equal(now[k], v), (j, k)
