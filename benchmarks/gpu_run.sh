#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md on one GPU (about 8 minutes on an H100), from the repository root:
#     bash benchmarks/gpu_run.sh              # writes docs/bench/*_gpu.* (or $OUT/ when set)
#     bash benchmarks/gpu_run.sh --dry-run    # the same steps on the CPU at a minute's scale, to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-docs/bench}
mkdir -p "$out"
if [ "${1:-}" = "--dry-run" ]; then
  device=cpu; flags=(--threads 2); rows=(--quick --networks dncnn --steps 8 --reps 0 --captum-layers 1)
  paper=(--images 1 --images-per-pass 1 --steps 2); checks=false
else
  device=cuda; flags=(--bf16); rows=(--steps 200 --reps 1 --captum-layers 2)
  paper=(--images 70 --images-per-pass 1,7,14,35); checks=true
fi
started=$(date +%s)
if $checks; then python benchmarks/gpu_checks.py | tee "$out/gpu_checks.txt"; fi
python benchmarks/bench_mac.py --device "$device" "${flags[@]}" "${rows[@]}" --json "$out/bench_gpu.json" \
  | tee "$out/bench_gpu.txt"
python benchmarks/bench_mac.py --paper-swinir --device "$device" "${flags[@]}" "${paper[@]}" \
  --json "$out/paper_swinir_gpu.json" | tee "$out/paper_swinir_gpu.txt"
echo "gpu_run: $(( $(date +%s) - started )) s"
