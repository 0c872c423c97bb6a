#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA tests on the hardware, then the sweep of
# launch-setting variants (bench/gpu_sweep.py), then the benchmark against PyTorch
# (bench/gpu.py) with the sweep's fastest valid variants.  Each stage has its own time limit
# (at most 180 + 200 + 200 s; about 7 minutes expected) and writes its results to
# $OUT as it goes, so a time-out keeps what was measured.  Logs and results go to
# $OUT if set, else bench/results/.  Extra arguments (e.g. --smoke, --dry) go to both
# runs.
#
# numba-cuda 0.30.4 calls np.row_stack, which numpy 2.5 lacks: if wheels were carried
# in .whl/ (see DEVELOPERS.md), they are installed first into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
OUT="${OUT:-bench/results}"
export OUT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu_info.txt"
echo "== CUDA tests on the hardware"
FMNUMPY_CUDA_REAL=1 timeout 180 python3 -m pytest -q -p no:cacheprovider --durations=8 \
    tests/euclidean/test_cuda.py 2>&1 | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}
echo "== sweep (gpu_sweep.json / gpu_sweep.md)"
timeout 200 python3 bench/gpu_sweep.py --sweep-budget 150 "$@" 2>&1 | tee "$OUT/sweep.log"
sweep=${PIPESTATUS[0]}
echo "== benchmark with the sweep's winners (gpu.json / gpu.md)"
timeout 200 python3 bench/gpu.py --best-from "$OUT/gpu_sweep.json" "$@" 2>&1 \
    | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, sweep exit $sweep, bench exit $bench"
exit $(( tests != 0 || sweep != 0 || bench != 0 ))
