#!/usr/bin/env bash
# The checks to run where a GPU is at hand (CI has none): the cuda backend's timings next to torch's CUDA
# optimizers and the copy bandwidth (benchmarks/gpu_step.py, benchmarks/bench_cuda.py), then every
# test with a cuda case on the real device instead of Numba's simulator (FASTDESCENT_TEST_GPU=1).
#
# Run from the repository root on the GPU machine: bash benchmarks/gpu_check.sh [OUT_DIR]
# Each part is bounded by `timeout -k 15 -s INT` (pytest still prints its summary); logs and JSON go to
# OUT_DIR (default $OUT, else /tmp/fastdescent-gpu). The package is used from the source tree (no
# install: the C extension must be built already or the c backend is reported unavailable); wheels
# found in .whl/ (e.g. cffi for the machine's Python) are unpacked first into /tmp/site.
set -u
out=${1:-${OUT:-/tmp/fastdescent-gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 FASTDESCENT_TEST_GPU=1
unset NUMBA_ENABLE_CUDASIM
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# numba-cuda 0.2x registers np.row_stack, which numpy 2.5 removed: alias it where it is missing
if ! python3 -c "import numpy; numpy.row_stack" 2>/dev/null; then
    mkdir -p /tmp/fastdescent-shim
    printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' \
        > /tmp/fastdescent-shim/sitecustomize.py
    export PYTHONPATH=/tmp/fastdescent-shim${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
T_STEP=${T_STEP:-200} T_BENCH=${T_BENCH:-90} T_CORE=${T_CORE:-150} T_REST=${T_REST:-200}

nvidia-smi -L
python3 -c "import fastdescent as fd, json; b = fd.info()['backends']; \
print(json.dumps({k: (v.get('available'), v.get('reason')) for k, v in b.items()}))"

# the 8-bit state's first step alone, growing sizes, a stack dump every 25 s (where it stalls, if it does)
timeout -k 5 -s INT 100 python3 benchmarks/gpu_int8_probe.py 2>&1 | tee "$out/int8_probe.log"
# first every row on a tiny layout (seconds): the mixed-precision kernel's first launch at 2^26 with
# 8-bit state never returned on an H200 (2026-12-04); this shows at once whether it runs at all,
# and compute-sanitizer (where the machine has it) checks its memory accesses and barriers
timeout -k 15 -s INT 120 python3 benchmarks/gpu_step.py --layouts tiny --rounds 2 --inner 1 2>&1 \
    | tee "$out/gpu_step_tiny.log"
if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck synccheck racecheck; do
        timeout -k 15 -s INT 120 compute-sanitizer --tool "$tool" python3 benchmarks/gpu_step.py \
            --layouts tiny --rounds 1 --inner 1 --rows adam-int8,adam-bf16-sr 2>&1 \
            | tail -20 | tee "$out/sanitizer_$tool.log"
    done
fi
# then the real sizes: the float32 rows of every layout come before any low-precision row
timeout -k 15 -s INT "$T_STEP" python3 benchmarks/gpu_step.py --json "$out/gpu_step.json" 2>&1 \
    | tee "$out/gpu_step.log"
timeout -k 15 -s INT "$T_BENCH" python3 -m pytest -q -p no:cacheprovider benchmarks/bench_cuda.py \
    --benchmark-only --benchmark-group-by=group --benchmark-columns=min,median,max \
    --benchmark-json="$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.log"
# fastdescent.torch on CUDA tensors end to end (scikit-learn's digits, where scikit-learn is installed)
if python3 -c "import sklearn, torch; assert torch.cuda.is_available()" 2>/dev/null; then
    timeout -k 15 -s INT 120 python3 examples/torch_drop_in.py --device cuda 2>&1 \
        | tee "$out/torch_drop_in_cuda.log"
fi
# the cuda backend's own tests first, then every other test with a cuda case
timeout -k 15 -s INT "$T_CORE" python3 -m pytest -q -p no:cacheprovider -n 12 -rfE \
    tests/test_cuda_backend.py tests/test_cuda_mixed.py tests/test_cuda_ptx.py 2>&1 \
    | tee "$out/tests_core.log"
timeout -k 15 -s INT "$T_REST" python3 -m pytest -q -p no:cacheprovider -n 12 -rfE -k cuda tests \
    --ignore tests/test_cuda_backend.py --ignore tests/test_cuda_mixed.py \
    --ignore tests/test_cuda_ptx.py 2>&1 | tee "$out/tests_rest.log"
