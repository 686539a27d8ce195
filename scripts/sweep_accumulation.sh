#!/usr/bin/env bash
# Sweep: the same effective batch size reached with different micro-batch x accumulation
# splits. With a model without BatchNorm and --dropout 0 every split trains the same model
# (up to float rounding); otherwise they differ only by BatchNorm statistics and dropout draws.
# Every run adds one row to $RESULTS/summary.csv, printed at the end. Running the sweep again
# continues unfinished runs and re-tests finished ones (--resume auto).
#
#   EFFECTIVE=32 MODEL=ResNet1D DATA=Classification bash scripts/sweep_accumulation.sh --train_epochs 10
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
EFFECTIVE=${EFFECTIVE:-32}
MODEL=${MODEL:-DualGAFNet}
DATA=${DATA:-DualGAF}
RESULTS=${RESULTS:-./results/sweep_ga}
CHECKPOINTS=${CHECKPOINTS:-./checkpoints/sweep_ga}
STEPS=${STEPS:-"1 2 4 8"}

for steps in $STEPS; do
  if (( EFFECTIVE % steps )); then
    echo "skipping $steps steps: $EFFECTIVE is not a multiple" >&2
    continue
  fi
  batch=$(( EFFECTIVE / steps ))
  echo "=== micro-batch $batch x $steps steps = effective batch $EFFECTIVE"
  $PY -u run.py --model "$MODEL" --data "$DATA" --batch_size "$batch" --gradient_accumulation_steps "$steps" \
    --results "$RESULTS" --checkpoints "$CHECKPOINTS" --des "sweep_eff${EFFECTIVE}" --resume auto "$@"
done

echo
echo "=== $RESULTS/summary.csv"
$PY - "$RESULTS/summary.csv" <<'PYEOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cols = ["batch_size", "accumulation_steps", "effective_batch_size", "optimizer_updates", "test_accuracy", "test_macro_f1", "wall_time_s"]
print("  ".join(f"{c:>20}" for c in cols))
for r in rows:
    print("  ".join(f"{r[c]:>20}" for c in cols))
PYEOF
