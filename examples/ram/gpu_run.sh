#!/usr/bin/env bash
# The `small` preset on one GPU: `all`, then `ablate` with 3 seeds (about 8 minutes on an H100 as sized), from the
# repository root. Every stage resumes from its checkpoints, so a stopped run continues where it was.
#     bash examples/ram/gpu_run.sh                   # results in runs/small-gpu and docs/results/ram_small_gpu.json
#     bash examples/ram/gpu_run.sh --dry-run         # on the CPU with every step count scaled by 0.05
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
out=${RUN_OUT:-runs/small-gpu}
if [ "${1:-}" = "--dry-run" ]; then
  common=(--preset small --device cpu --steps-scale 0.05 --n-steps 8 --tasks noise25,blur2 --threads 2)
  out=${RUN_OUT:-runs/small-dry}
else
  common=(--preset small --device cuda)
fi
started=$(date +%s)
python -m examples.ram all "${common[@]}" --out "$out" --no-progress
python -m examples.ram ablate "${common[@]}" --seeds 3 --out "$out" --no-progress
if [ "${1:-}" != "--dry-run" ]; then cp "$out/results.json" docs/results/ram_small_gpu.json; fi
echo "gpu_run: $(( $(date +%s) - started )) s"
