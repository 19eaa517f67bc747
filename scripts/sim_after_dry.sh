#!/usr/bin/env bash
# The last step of `make submit-dry`: the offline Kaggle simulation, where this machine can run it.
#   SIM=auto (default) runs it when it can (root, util-linux `unshare`, wheels built or buildable)
#            and otherwise says in one line why it was skipped and how to run it;
#   SIM=1    requires it: a machine that cannot run it fails loudly;
#   SIM=0    skips it.
set -uo pipefail
PY=${PY:-.venv/bin/python}
SIM=${SIM:-auto}
HOW="run it as root with: sudo make kaggle-sim"

skip() { echo "submit-dry: the Kaggle simulation was skipped: $1; $HOW"; exit 0; }

case "$SIM" in
  0) skip "SIM=0" ;;
  1|auto) ;;
  *) echo "submit-dry: SIM must be auto, 1 or 0, not '$SIM'" >&2; exit 2 ;;
esac

reasons=$(PYTHONPATH=src "$PY" scripts/kaggle_sim.py --preflight)
status=$?
if [ "$status" != 0 ]; then
  # 3: the preflight's reasons; anything else: it could not even run.
  [ "$status" = 3 ] || reasons="its preflight check could not run ($PY exited $status)"
  if [ "$SIM" = 1 ]; then
    echo "submit-dry: SIM=1 but the Kaggle simulation cannot run here: $reasons; $HOW" >&2
    exit 1
  fi
  skip "$reasons"
fi

if ! bash build_wheels.sh; then
  if [ "$SIM" = 1 ]; then
    echo "submit-dry: SIM=1 but the wheels could not be built (make wheels needs the package registry)" >&2
    exit 1
  fi
  if ! ls wheels/vesukit-*.whl >/dev/null 2>&1; then
    skip "the wheels could not be built (make wheels needs the package registry) and none are built"
  fi
  echo "submit-dry: make wheels failed; simulating with the wheels already in wheels/"
fi
PYTHONPATH=src exec "$PY" scripts/kaggle_sim.py ${KAGGLE_SIM_ARGS:-}
