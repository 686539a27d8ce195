#!/usr/bin/env bash
# Train a detector on a labelled sensor log, export it, and run it on a new, unlabelled log.
# Extra flags go to the training run, e.g.
#   bash scripts/train_and_predict.sh --train_epochs 5
# The logs here come from the built-in simulator; put your building's CSV exports in their place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${WORK:-./runs/train_and_predict}
mkdir -p "$WORK"

# 1. A labelled log (Datetime, sensor columns, label) and "next week's" log without labels.
$PY run.py --export_data "$WORK/ahu.csv"
$PY -c "import pandas as pd, sys; pd.read_csv(sys.argv[1]).drop(columns=['label']).to_csv(sys.argv[2], index=False)" \
  "$WORK/ahu.csv" "$WORK/next_week.csv"

# 2. Train and test on the labelled log; export TorchScript (raw windows in, probabilities out).
$PY -u run.py --root_path "$WORK" --data_path ahu.csv --checkpoints "$WORK/checkpoints" --results "$WORK/results" \
  --resume auto --export torchscript "$@" | tee "$WORK/train.log"
run=$(sed -n 's/^>>> training //p' "$WORK/train.log" | head -1)

# 3. Predict on the new log with the best checkpoint: predictions.csv with times, class, probability, top 3.
$PY -u run.py --predict --checkpoint "$WORK/checkpoints/$run/best.pt" --root_path "$WORK" --data_path next_week.csv \
  --results "$WORK/results"
