#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA tests on the hardware, then bench/gpu.py.
# Logs and results go to $OUT if set, else bench/results/.  Extra arguments go to gpu.py.
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
FMNUMPY_CUDA_REAL=1 timeout 240 python3 -m pytest -q -x -p no:cacheprovider --durations=8 \
    tests/test_cuda.py 2>&1 | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}
echo "== benchmark"
timeout 300 python3 bench/gpu.py "$@" 2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench"
exit $(( tests != 0 || bench != 0 ))
