#!/usr/bin/env bash
# The H200 checks and timings of one device session, in one call: the kernels' correctness first
# (linear_check, the GPU tests), then their timings (gemv), then the decoders' conformance on CuPy.
#   bash bench/h200_session.sh [quick|full]      (logs also under $OUT when it is set)
set -uo pipefail
cd "$(dirname "$0")/.."
pip install -q --no-deps --target /tmp/site .whl/crc32c-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
out=${OUT:-/tmp}
mode=${1:-quick}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
step() { echo "== $*"; "$@" 2>&1 | tee -a "$out/session.log" | tail -n 25; }
step python3 bench/linear_check.py --cases 120
step python3 bench/gemv.py --shapes 4096x4096 14336x4096 4096x14336 28672x8192 8192x28672 --bits 2 4 --rows 1
if [ "$mode" = full ]; then
  step python3 -m pytest -q -p no:cacheprovider -x tests/test_torch.py tests/test_column_slices.py tests/test_sub_records.py \
    tests/test_gpu.py tests/test_files.py tests/test_hf.py
  step python3 -m conformance run --backend cupy
fi
