#!/usr/bin/env bash
# Examples of gradient accumulation. Extra flags are passed to every run, e.g.
#   bash scripts/run_with_gradient_accumulation.sh --train_epochs 5
# Running it again continues every run from its last.pt (--resume auto); a finished run is
# only tested again (without --resume a second start of the same run is refused).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

# The headline: micro-batches of 4, two of them per optimizer update (effective batch 8).
$PY -u run.py --model DualGAFNet --data DualGAF --step 96 \
  --batch_size 4 --gradient_accumulation_steps 2 --loss_preset hvac_similar_optimized \
  --des ga_manual --resume auto "$@"

# Automatic steps from the micro-batch size: batch 2 -> 4 steps (effective batch 8).
$PY -u run.py --model DualGAFNet --data DualGAF --step 96 \
  --batch_size 2 --enable_auto_gradient_accumulation --loss_preset hvac_similar_optimized \
  --des ga_auto --resume auto "$@"

# Windows that carry over the epoch end instead of being flushed there.
$PY -u run.py --model Transformer --data Classification --step 96 \
  --batch_size 8 --gradient_accumulation_steps 4 --cross_epoch_accumulation \
  --des ga_cross_epoch --resume auto "$@"

# The same effective batch on two processes (CPU: gloo; one GPU each with CUDA): 4 x 1 step x 2.
# --target_batch_size keeps the recipe and the run name whatever the number of processes.
$PY -m torch.distributed.run --standalone --nproc_per_node "${NPROC:-2}" run.py --model DualGAFNet --data DualGAF --step 96 \
  --batch_size 4 --target_batch_size 8 --loss_preset hvac_similar_optimized \
  --des ga_torchrun --resume auto --save_every_updates 50 "$@"
