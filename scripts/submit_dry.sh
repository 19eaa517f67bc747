#!/usr/bin/env bash
# The dry run behind `make submit-dry`: a synthetic competition root and generated seed9
# teachers -> calibrate on the labelled train volumes -> `vesukit predict` -> `vesukit
# validate` on the zip it wrote.
#   DEVICE=cpu  (default) tiny teachers, small non-cubic volumes: about a minute on 2 cores.
#   DEVICE=cuda full-size teachers on 320^3 / 256^3 test volumes, like a Kaggle run.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DRY=${DRY:-build/dry}
DEVICE=${DEVICE:-cpu}
TTA=${TTA:-flip}
if [[ "$DEVICE" == cuda* ]]; then
  SIZE=${SIZE:-full}; N_TEST=${N_TEST:-3}
  TEST_SHAPES=(--shape 320 320 320 --shape 256 256 256)
  TRAIN_SHAPES=(--shape 128 128 128 --shape 160 128 128)
else
  SIZE=${SIZE:-tiny}; N_TEST=${N_TEST:-3}
  TEST_SHAPES=(--shape 48 96 80 --shape 64 64 64 --shape 40 72 56)
  TRAIN_SHAPES=(--shape 48 64 64 --shape 40 72 56)
fi
vesukit() { "$PY" -m vesukit "$@"; }

rm -rf "$DRY"
mkdir -p "$DRY"
echo "== 1/5 synthetic competition root ($N_TEST test + 2 labelled train volumes)"
vesukit synth "$DRY/data" --test "$N_TEST" --train 0 "${TEST_SHAPES[@]}" --seed 7
vesukit synth "$DRY/train" --test 0 --train 2 "${TRAIN_SHAPES[@]}" --seed 8
cp -r "$DRY/train/train.csv" "$DRY/train/train_images" "$DRY/train/train_labels" "$DRY/data/"
echo "== 2/5 seed9 teachers ($SIZE, random weights)"
vesukit teachers init "$DRY/teachers" --preset seed9 --size "$SIZE" --seed 0
echo "== 3/5 calibrate the threshold rule and post-processing on the train volumes"
# fitted with the TTA predict runs: predict takes it from the calibration (fit = apply)
vesukit calibrate --data "$DRY/data" --teachers "$DRY/teachers" --out "$DRY/calibration.json" \
  --device "$DEVICE" --tta "$TTA"
echo "== 4/5 predict on $DEVICE (tta $TTA, from the calibration)"
vesukit predict --data "$DRY/data" --teachers "$DRY/teachers" --out "$DRY/submission.zip" \
  --device "$DEVICE" --calibration "$DRY/calibration.json" \
  --workdir "$DRY/work" --audit "$DRY/audit"
echo "== 5/5 validate"
vesukit validate "$DRY/submission.zip" --data "$DRY/data"
echo "dry run OK: $DRY/submission.zip (run record $DRY/work/run.json, audit $DRY/audit/index.html)"
