#!/usr/bin/env bash
# The dry run behind `make submit-dry`: synthetic competition root -> the stages that exist.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DRY=${DRY:-build/dry}
rm -rf "$DRY"
mkdir -p "$DRY"
"$PY" -m vesukit synth "$DRY/data" --test 3 --train 2 --shape 64 96 80 --shape 72 72 72 --seed 7
"$PY" -m vesukit doctor --input-base "$DRY"
