#!/usr/bin/env bash
# The H200 checks and timings of one device session, in one call:
#   bash bench/h200_session.sh kernels   IcqLinear's correctness (linear_check, test_torch) and timings
#                                        (gemv, all shapes, beside cuBLAS and int4pack, with the kernel's variants)
#   bash bench/h200_session.sh tests     the GPU tests (every backend, cupy included) and the
#                                        conformance vectors on the cupy decoder
#   bash bench/h200_session.sh stages    the tensor-core kernel's stages timed apart and its tunables swept
#                                        (bench/mma_stages.py on the two largest shapes)
#   bash bench/h200_session.sh e2e       the Llama-3-8B-shaped model end to end (bench/llama_e2e.py; its
#                                        results also in $OUT/e2e.json, model by model)
#   bash bench/h200_session.sh full      kernels and tests
# Logs go to $OUT/session.log when $OUT is set. Carry the crc32c wheel for Python 3.12 in .whl/, and
# bitsandbytes' wheel there for its NF4 beside the kernels (about 43 MB: carry the two files alone).
set -uo pipefail
cd "$(dirname "$0")/.."
pip install -q --no-deps --target /tmp/site .whl/crc32c-*.whl 2>/dev/null
nf4=()
if ls .whl/bitsandbytes-*.whl >/dev/null 2>&1; then
  pip install -q --no-deps --target /tmp/site .whl/bitsandbytes-*.whl 2>/dev/null && nf4=(--nf4)
fi
export PYTHONPATH=/tmp/site:$PWD
out=${OUT:-/tmp}
mode=${1:-full}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
step() { echo "== $*"; "$@" 2>&1 | tee -a "$out/session.log" | tail -n 130; }
if [ "$mode" = kernels ] || [ "$mode" = full ]; then
  step python3 bench/linear_check.py --cases ${CHECK_CASES:-50} --max-cols 4096
  step python3 -m pytest -q -p no:cacheprovider tests/test_torch.py tests/test_linear.py tests/test_hf.py
  step python3 bench/gemv.py --bits ${GEMV_BITS:-2 3 4} --rows 1 4 16 --int4pack "${nf4[@]}" --variants
fi
if [ "$mode" = stages ]; then
  variants=(MMA_MIN_BLOCKS=3 MMA_DEPTH=2 MMA_DEPTH=4)
  step python3 bench/mma_stages.py --variant "${variants[@]}" --splits
  step python3 bench/mma_stages.py --shape 8192x28672 --variant "${variants[@]}" --splits
fi
if [ "$mode" = e2e ]; then
  step python3 bench/llama_e2e.py --bits 2 4 --out "$out/e2e.json"
fi
if [ "$mode" = tests ] || [ "$mode" = full ]; then
  step python3 -m pytest -q -p no:cacheprovider tests/test_column_slices.py tests/test_sub_records.py \
    tests/test_gpu.py tests/test_files.py tests/test_decode.py tests/test_torch.py tests/test_hf.py
  step python3 -m conformance run --backend cupy
fi
