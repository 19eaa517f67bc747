#!/usr/bin/env bash
# The dry run behind `make submit-dry`: a synthetic competition root and generated seed9
# teachers -> `vesukit predict` -> `vesukit validate` on the zip it wrote.
#   DEVICE=cpu  (default) tiny teachers, small non-cubic volumes: a few minutes on 2 cores.
#   DEVICE=cuda full-size teachers on 320^3 / 256^3 volumes, like a Kaggle run.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DRY=${DRY:-build/dry}
DEVICE=${DEVICE:-cpu}
TTA=${TTA:-flip}
if [[ "$DEVICE" == cuda* ]]; then
  SIZE=${SIZE:-full}; SHAPES=(--shape 320 320 320 --shape 256 256 256); N_TEST=${N_TEST:-3}
else
  SIZE=${SIZE:-tiny}; SHAPES=(--shape 48 96 80 --shape 64 64 64 --shape 40 72 56); N_TEST=${N_TEST:-3}
fi
vesukit() { "$PY" -m vesukit "$@"; }

rm -rf "$DRY"
mkdir -p "$DRY"
echo "== 1/4 synthetic competition root ($N_TEST test volumes)"
vesukit synth "$DRY/data" --test "$N_TEST" --train 0 "${SHAPES[@]}" --seed 7
echo "== 2/4 seed9 teachers ($SIZE)"
vesukit teachers init "$DRY/teachers" --preset seed9 --size "$SIZE" --seed 0
echo "== 3/4 predict on $DEVICE (tta $TTA)"
vesukit predict --data "$DRY/data" --teachers "$DRY/teachers" --out "$DRY/submission.zip" \
  --device "$DEVICE" --tta "$TTA" --workdir "$DRY/work" --audit "$DRY/audit"
echo "== 4/4 validate"
vesukit validate "$DRY/submission.zip" --data "$DRY/data"
echo "dry run OK: $DRY/submission.zip (run record $DRY/work/run.json)"
