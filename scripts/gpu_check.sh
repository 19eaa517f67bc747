#!/usr/bin/env bash
# One prepared check for a machine with a GPU (under 8 minutes on one H200-class GPU):
#   1. the CUDA-only tests (pytest -m gpu),
#   2. fp16 vs fp32 max |dp| of an nnU-Net ResEnc-M teacher on a 320^3 volume,
#   3. vesukit vs MONAI vs nnUNetPredictor on that teacher and volume (seconds, max |dp|),
#   4. the full seed9 ensemble's peak GPU memory at 320^3,
# all written into one folder (OUT, default build/gpu-check): pytest.txt, fp16.json,
# nnunet.json, seed9.json, log.txt.
#   scripts/gpu_check.sh [OUT]          on the GPU machine
#   scripts/gpu_check.sh --dry [OUT]    the same steps on the CPU at tiny sizes (the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
DRY=""
if [ "${1:-}" = "--dry" ]; then DRY="--dry"; shift; fi
OUT=${1:-build/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "gpu_check ${DRY:-(gpu)} $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  if [ -z "$DRY" ]; then
    # exit 5 = no test selected: fine, anything else is a failure
    "$PY" -m pytest -m gpu -q -p no:cacheprovider tests > "$OUT/pytest.txt" 2>&1 || [ $? -eq 5 ]
    tail -3 "$OUT/pytest.txt"
  else
    echo "dry: CUDA-only tests skipped (no GPU)" | tee "$OUT/pytest.txt"
  fi
  "$PY" scripts/gpu_check.py "$OUT" $DRY
  echo "gpu_check done: $OUT"
} 2>&1 | tee "$OUT/log.txt"
