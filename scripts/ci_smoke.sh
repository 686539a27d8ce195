#!/usr/bin/env bash
# CI smoke runs: every data format (with its default model) x three accumulation set-ups, each
# as a --fast_dev_run that trains a few micro-batches, validates, tests, writes every output into
# a temporary folder and reads it back. One line per run, then a summary line; the exit code is
# 0 only when every run passed. Extra arguments go to every run, e.g. your own log:
#
#   bash scripts/ci_smoke.sh                                      # the built-in data
#   bash scripts/ci_smoke.sh --root_path logs --data_path ahu.csv   # your CSV, same checks
#
# SMOKE_JOBS runs that many at once (default 2, one CPU thread each); PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
JOBS=${SMOKE_JOBS:-2}
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

SETUPS=(
  "GA 1|--fast_dev_run"
  "GA 3, uneven last window|--fast_dev_run 4 --gradient_accumulation_steps 3"
  "GA 3 across epochs|--fast_dev_run 4 --gradient_accumulation_steps 3 --cross_epoch_accumulation --train_epochs 2"
)
FORMATS=(Classification DualGAF GNN)

smoke() {  # $1: log name, $2: format, $3: set-up flags, then the extra arguments
  local log=$1 format=$2 flags=$3
  shift 3
  local start=$SECONDS
  # shellcheck disable=SC2086  # the set-up flags are words
  OMP_NUM_THREADS=1 $PY run.py --data "$format" $flags --progress none "$@" >"$LOGS/$log.out" 2>"$LOGS/$log.err"
  echo "$? $((SECONDS - start))" >"$LOGS/$log.rc"
}

started=$SECONDS
names=()
for format in "${FORMATS[@]}"; do
  for setup in "${SETUPS[@]}"; do
    name="$format, ${setup%%|*}"
    log=${#names[@]}
    names+=("$name")
    while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
    smoke "$log" "$format" "${setup#*|}" "$@" &
  done
done
wait

failed=0
for log in "${!names[@]}"; do
  read -r code seconds <"$LOGS/$log.rc"
  if [[ $code == 0 ]] && grep -q "^smoke run passed" "$LOGS/$log.out"; then
    printf "ok    %-45s %3ss  %s\n" "${names[$log]}" "$seconds" "$(grep -o '[0-9]* optimizer update(s) ([^)]*)' "$LOGS/$log.out")"
  else
    failed=$((failed + 1))
    printf "FAIL  %-45s %3ss  exit %s: %s\n" "${names[$log]}" "$seconds" "$code" "$(grep -v '^\s*$' "$LOGS/$log.err" | tail -n 1)"
  fi
done
total=${#names[@]}
echo "ci_smoke: $((total - failed)) of $total smoke runs passed in $((SECONDS - started)) s"
(( failed == 0 ))
