"""Benchmark cases of ``fastdescent.torch``: one optimizer step over a real model's parameter shapes,
next to torch.optim's fused and foreach implementations and the raw NumPy-facing ``fastdescent``
class on the same tensors (the adapter's overhead).

Models (their parameter shapes, as data, no torchvision needed):

- ``resnet50``: torchvision's ResNet-50 (161 tensors, 25,557,032 parameters);
- ``gpt2``: GPT-2 small (148 tensors, 124,439,808 parameters; tied output embedding);
- ``linear50``: 50 ``Linear(64, 64)`` layers (100 tensors, 208,000 parameters).

Each timed step is a training loop's: ``zero_grad()`` (set_to_none), then every ``.grad`` set to a
gradient tensor from one of two pre-allocated sets, alternately (so every step sees other gradient
tensors at other addresses, as after a backward, without timing the allocator), then ``step()``. The
gradient assignment is the same for every implementation (``assign`` times it alone). ``fd-raw``
is ``fastdescent.<Opt>`` on NumPy views of the same tensors with one persistent gradient list (its
fast path: gradients validated once) and ``fdt-static`` is ``fastdescent.torch`` with one persistent
set of ``.grad`` tensors: ``fdt-static`` minus ``fd-raw`` is what the torch adapter costs per step.
``fd-raw-fresh`` is ``fd-raw`` with the two gradient sets by turns, as ``fdt`` and torch get them:
the kernels then stream the other set's memory at every step, which a cache as large as the model's
state (this machine reports 480 MiB of L3) makes slower than re-reading one set. It also pays the
NumPy-facing class's own check of a new gradient list at every step (~3 us an array), so ``fdt``
minus ``assign`` minus ``fd-raw-fresh`` understates the adapter's cost, by that much, on small
models; on ResNet-50's shapes the cache effect dominates.

Run: ``python -m fastdescent.bench.torch_dropin [--models resnet50,linear50] [--ops adam,rmsprop]``
(prints a table), or ``pytest benchmarks/bench_torch_dropin.py`` (pytest-benchmark).
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass

import numpy as np

from .cases import OPTIMIZERS, Instance, _compare, torch_unavailable
from .timing import measure_interleaved

__all__ = ["MODELS", "resnet50_shapes", "gpt2_small_shapes", "linear50_shapes", "TorchStepCase",
           "IMPLS", "torch_dropin_cases", "main"]

#: ResNet-50: (bottleneck width, blocks) per stage; every block is conv1x1 (width), conv3x3 (width),
#: conv1x1 (4*width), each followed by a BatchNorm (weight, bias); the first block of a stage has a
#: downsampling conv1x1 + BatchNorm. Stem: conv7x7 (64) + BatchNorm; head: Linear(2048, 1000).
RESNET50_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))
#: GPT-2 small: vocabulary, context, width, layers (every block: ln_1, attn.c_attn, attn.c_proj, ln_2,
#: mlp.c_fc, mlp.c_proj, each with a weight and a bias; the LM head is tied to the token embedding)
GPT2_SMALL = dict(vocab=50257, ctx=1024, width=768, layers=12)


def resnet50_shapes():
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inp = 64
    for width, blocks in RESNET50_STAGES:
        for b in range(blocks):
            shapes += [(width, inp, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if b == 0:
                shapes += [(4 * width, inp, 1, 1), (4 * width,), (4 * width,)]
            inp = 4 * width
    return tuple(shapes + [(1000, 2048), (1000,)])


def gpt2_small_shapes():
    v, c, d, n = (GPT2_SMALL[k] for k in ("vocab", "ctx", "width", "layers"))
    block = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,),
             (4 * d, d), (d,)]
    return tuple([(v, d), (c, d)] + block * n + [(d,), (d,)])


def linear50_shapes():
    return ((64, 64), (64,)) * 50


MODELS = {"resnet50": resnet50_shapes, "gpt2": gpt2_small_shapes, "linear50": linear50_shapes}

#: fdt: fastdescent.torch; fdt-static: the same with one persistent set of .grad tensors (no
#: assignment); fd-raw: the NumPy-facing class on views of the same tensors and one persistent
#: gradient list (fd-raw-fresh: the two gradient sets by turns); assign: the gradient assignment
#: alone (the fresh-gradient steps do it); roofline: the streaming probe
IMPLS = ("fdt", "torch-fused", "torch-foreach", "fdt-static", "fd-raw", "fd-raw-fresh", "assign",
         "roofline")

CHECK_STEPS = 2


def _elements(shapes):
    return sum(math.prod(s) for s in shapes)


@functools.lru_cache(maxsize=1)
def _data(model, seed=0):
    """Initial parameters and two gradient sets (float32 NumPy, read-only), cached."""
    rng = np.random.default_rng(seed)
    shapes = MODELS[model]()
    out = []
    for _ in range(3):
        arrs = []
        for s in shapes:
            a = rng.random(math.prod(s), dtype=np.float32).reshape(s)
            a -= 0.5
            a.flags.writeable = False
            arrs.append(a)
        out.append(arrs)
    p0, g1, g2 = out
    for g in g1 + g2:
        g.flags.writeable = True
        g *= 0.2
        g.flags.writeable = False
    return p0, (g1, g2)


@functools.lru_cache(maxsize=1)
def _reference(op, model, steps):
    """Parameters after ``steps`` steps of torch.optim's for-loop implementation."""
    import torch

    spec = OPTIMIZERS[op]
    p0, gsets = _data(model)
    ps = [torch.nn.Parameter(torch.tensor(a)) for a in p0]
    opt = getattr(torch.optim, spec.torch_cls)(ps, foreach=False, **spec.kwargs)
    for k in range(steps):
        for p, g in zip(ps, gsets[k % 2]):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in ps]


@dataclass(frozen=True)
class TorchStepCase:
    """One optimizer step over ``model``'s parameter shapes with implementation ``impl``."""

    op: str
    model: str
    impl: str

    @property
    def spec(self):
        return OPTIMIZERS[self.op]

    @property
    def kind(self):
        return {"fdt": "fastdescent", "fdt-static": "fastdescent", "fd-raw": "fastdescent",
                "fd-raw-fresh": "fastdescent", "roofline": "roofline"}.get(
            self.impl, "peer")

    @property
    def group(self):
        return f"torch drop-in {self.op} {self.model}"

    @property
    def id(self):
        return f"torch-{self.op}-{self.model}-{self.impl}"

    def __str__(self):
        return self.id

    @property
    def elements(self):
        return _elements(MODELS[self.model]())

    @property
    def bytes_per_step(self):
        return self.spec.bytes_per_element(np.float32) * self.elements

    def unavailable(self):
        reason = torch_unavailable()
        if reason is not None:
            return reason
        if self.spec.torch_cls is None:
            return f"torch has no {self.spec.cls}"
        if self.impl == "torch-fused" and not self.spec.torch_fused:
            return f"torch.optim.{self.spec.torch_cls} has no fused implementation"
        if self.impl == "roofline":
            from .roofline import probe_provider

            return probe_provider()[1]
        if self.impl not in IMPLS:
            return f"unknown implementation {self.impl!r}"
        return None

    def build(self):
        import torch

        spec, impl = self.spec, self.impl
        if impl == "roofline":
            from .roofline import StreamProbe

            probe = StreamProbe(self.elements, spec.reads, spec.writes, np.float32)
            return Instance(probe.run, None, bytes_per_step=probe.bytes, keep=probe)
        p0, gsets = _data(self.model)
        ps = [torch.nn.Parameter(torch.tensor(a)) for a in p0]
        tg = [[torch.tensor(g) for g in gs] for gs in gsets]
        if impl in ("fd-raw", "fd-raw-fresh"):
            import fastdescent as fd

            views = [p.detach().numpy() for p in ps]
            sets = [[g.numpy() for g in gs] for gs in tg]
            opt = getattr(fd, spec.cls)(views, backend="c", **spec.kwargs)
            turn = [0]

            def step():
                opt.step(sets[turn[0] & 1])
                if impl == "fd-raw-fresh":
                    turn[0] += 1

            def result():
                return views
            return Instance(step, result, bytes_per_step=self.bytes_per_step,
                            keep=(opt, ps, tg))
        if impl in ("fdt", "fdt-static"):
            import fastdescent.torch as fdt

            opt = getattr(fdt, spec.cls)(ps, backend="c", **spec.kwargs)
            if impl == "fdt-static":
                for p, g in zip(ps, tg[0]):
                    p.grad = g
                return Instance(opt.step, lambda: [p.detach().numpy() for p in ps],
                                bytes_per_step=self.bytes_per_step, keep=(opt, ps, tg))
        elif impl == "assign":
            opt = None
        else:
            flag = "fused" if impl == "torch-fused" else "foreach"
            opt = getattr(torch.optim, spec.torch_cls)(ps, **{flag: True}, **spec.kwargs)
        k = [0]

        def step():
            gs = tg[k[0] & 1]
            k[0] += 1
            for p, g in zip(ps, gs):
                p.grad = None  # zero_grad(set_to_none=True), then the backward's new gradient
                p.grad = g
            if opt is not None:
                opt.step()

        def result():
            return [p.detach().numpy() for p in ps]
        return Instance(step, result if opt is not None else None,
                        bytes_per_step=self.bytes_per_step, keep=(opt, ps, tg))

    def check(self, inst):
        """CHECK_STEPS steps, compared with torch.optim's for-loop implementation."""
        for _ in range(CHECK_STEPS):
            inst.step()
        if self.impl in ("roofline", "assign"):
            return None
        if self.impl in ("fd-raw", "fdt-static"):  # (one gradient set: another trajectory)
            return None
        ref = _reference(self.op, self.model, CHECK_STEPS)
        rtol, atol = (1e-5, 1e-6) if self.kind == "fastdescent" else (1e-4, 1e-5)
        err = _compare(self.id, inst.result(), ref, rtol, atol)
        return {"max_abs_err": err, "rtol": rtol, "atol": atol, "steps": CHECK_STEPS}


def torch_dropin_cases(ops=("adam", "rmsprop"), models=("resnet50", "linear50"), impls=IMPLS):
    return [TorchStepCase(op, m, i) for op in ops for m in models for i in impls]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastdescent.bench.torch_dropin",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,linear50")
    ap.add_argument("--ops", default="adam,rmsprop")
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help="implementations to run side by side (all are built at once: for GPT-2's "
                         "124M parameters, each holds ~2.5 GB)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for torch and the C backend (default: their defaults)")
    args = ap.parse_args(argv)
    import torch

    from ..backends import get_backend

    if args.threads:
        torch.set_num_threads(args.threads)
        get_backend("c").set_num_threads(args.threads)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()}, fastdescent c threads="
          f"{get_backend('c').get_num_threads()}")
    for op in args.ops.split(","):
        for model in args.models.split(","):
            cases = [c for c in torch_dropin_cases((op,), (model,), tuple(args.impls.split(",")))
                     if c.unavailable() is None]
            insts = []
            for c in cases:
                inst = c.build()
                c.check(inst)  # raises CheckError if the step disagrees with torch's for-loop
                insts.append(inst)
            times = measure_interleaved([i.step for i in insts], rounds=args.rounds,
                                        min_time=args.min_time, warmup=2)
            by = {c.impl: t.median for c, t in zip(cases, times)}
            shapes = MODELS[model]()
            print(f"\n{op} on {model} ({len(shapes)} tensors, {_elements(shapes):,} params), "
                  "median per step (each includes the gradient assignment, 'assign'):")
            for c, t in zip(cases, times):
                extra = ""
                if c.impl in ("fdt", "torch-fused", "torch-foreach") and "torch-fused" in by:
                    extra += f"  {t.median / by['torch-fused']:.2f}x torch fused"
                if c.impl in ("fdt", "torch-fused") and "torch-foreach" in by:
                    extra += f"  {t.median / by['torch-foreach']:.2f}x torch foreach"
                if c.impl in ("fdt", "fdt-static", "fd-raw", "fd-raw-fresh",
                              "torch-fused") and "roofline" in by:
                    extra += f"  roofline fraction {by['roofline'] / t.median:.2f}"
                print(f"  {c.impl:14s} {t.median * 1e6:12.1f} us  (spread {t.spread:.2f}){extra}")
            if {"fdt-static", "fd-raw"} <= by.keys():
                over = by["fdt-static"] - by["fd-raw"]
                print(f"  adapter overhead (fdt-static - fd-raw, the same tensors and gradients): "
                      f"{over * 1e6:.1f} us per step")
            if {"fdt", "assign", "fd-raw-fresh"} <= by.keys():
                over = by["fdt"] - by["assign"] - by["fd-raw-fresh"]
                print(f"  fdt - assign - fd-raw-fresh (fresh gradients; fd-raw-fresh checks each new "
                      f"gradient list itself): {over * 1e6:.1f} us per step")
            for i in insts:
                i.close()
            _data.cache_clear()
            _reference.cache_clear()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
