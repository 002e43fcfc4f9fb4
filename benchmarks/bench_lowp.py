"""The low-precision Adam step (fastdescent/bench/lowp.py, docs/low-precision.md): float32 Adam, bf16
parameters with stochastic rounding (float32, bf16 or int8 moments), float32 parameters with int8
moments, bf16 with float32 master weights -- on the c and numba backends, next to torch's fused Adam,
torchao's AdamW8bit and bf16-stochastic-rounding AdamW, bitsandbytes' Adam8bit (each skipped when not
installed) and the float32 roofline probe.

Small layouts by default (one 2^20 tensor, 50 Linear(64, 64) layers); FASTDESCENT_BENCH_LOWP_FULL=1
takes the issue's (one 2^25 tensor, ResNet-50's tensors; the torchao/bitsandbytes peers then take
0.5-4 s a step and torchao compiles for ~1 minute first). ``fastdescent bench --ops lowp`` adds the
bytes per parameter, the roofline fraction and the ratio to torch fused to every row."""

import os

import pytest

from fastdescent.bench import lowp as L

LAYOUTS = L.LOWP_LAYOUTS if os.environ.get("FASTDESCENT_BENCH_LOWP_FULL") == "1" else L.BENCH_LOWP_LAYOUTS
CASES = L.lowp_cases(LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=L.LowpCase.__str__)
def test_lowp(run_case, case):
    run_case(case)
