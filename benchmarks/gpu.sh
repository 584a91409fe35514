#!/usr/bin/env bash
# The GPU figures (benchmarks/gpu.py) on a machine with one CUDA GPU, within 9 minutes; they are merged into
# BENCHMARKS.json under "GPU". Installs nothing when .venv exists; otherwise makes it (torch from the registry).
# Exits non-zero without CUDA, on a missed goal, or past the time limit. Extra arguments go to benchmarks.gpu
# (for example --parts p6,sweep or --no-write).
#
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q -e .
fi
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 540 .venv/bin/python -m benchmarks.gpu "$@"
