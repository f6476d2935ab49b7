#!/usr/bin/env bash
# The GPU rows of issue 10's benchmarks, about 1-3 minutes on an H200: benchmarks/epoch_speed.py --device cuda (ms per
# step, seconds per epoch, images per second and peak CUDA memory of every objective at 784-400-50 with batches of 128
# and 1024, the digits at 28x28, against the plain hand-written torch loop), then benchmarks/eval_speed.py --device cuda
# (IWAE log p(x) with k = 5000 over 10,000 examples at 784-400-50, against a hand-written vectorized IWAE on the same
# weights).
#
#     OUT=/some/folder bash benchmarks/gpu.sh      # from anywhere; writes gpu_results.json/.md, gpu_eval.json/.md, gpu.txt
#
# pyro-ppl and arviz are taken from PYTHONPATH (e.g. /tmp/site); when pyro is not importable and the repository has
# the wheels in .whl/, they are installed into /tmp/site first. torch with CUDA must be installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
if ! python3 -c "import pyro" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
python3 benchmarks/epoch_speed.py --device cuda --threads "${THREADS:-1}" \
    --configurations mlp-784-400-50-b128,mlp-784-400-50-b1024 \
    --out "$OUT/gpu_results.json" 2>&1 | tee "$OUT/gpu_results.md"
python3 benchmarks/eval_speed.py --device cuda --threads "${THREADS:-1}" \
    --configuration mlp-784-400-50 --k 5000 --examples 10000 \
    --out "$OUT/gpu_eval.json"    # eval_speed writes gpu_eval.md beside it
