#!/usr/bin/env bash
# Issue 11's GPU measurements in one device run (about 6-8 minutes on an H100/H200).
#
# Here, first (the GPU machine has no network):
#   EXTRA="vesin pytest pluggy iniconfig" bash ../shared/reference/device/fetch_wheels.sh
#   mkdir -p .device && cp ../shared/reference/device/on_device.sh .device/ \
#     && grep -qx '/.device/' .git/info/exclude || echo '/.device/' >> .git/info/exclude
# Then, with carry [".whl", ".device"]:
#   bash benchmarks/device_check.sh
# It writes into $OUT: the GPU tests' output, filter_throughput.json, training.json.
# cuEquivariance (--cueq) is left out: its CUDA ops wheels (cuequivariance-ops-cu13 and
# -ops-torch-cu13, 73 MB) exceed what a device call can carry (64 MiB), and without them
# it measures the slow torch fallback. Where the GPU image has them:
#   python3 benchmarks/filter_throughput.py --device cuda --cueq
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
source .device/on_device.sh
export OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -5 | tee "$OUT/tests_gpu.txt"
timeout 300 python3 benchmarks/filter_throughput.py --device cuda --repeats 3 \
  --out "$OUT/filter_throughput.json" 2>&1 | tail -8
timeout 150 python3 benchmarks/training.py --device cuda --members 4 --epochs 5 \
  --out "$OUT/training.json" 2>&1 | tail -6
