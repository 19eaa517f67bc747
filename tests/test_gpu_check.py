"""scripts/gpu_check.sh in its CPU dry mode: every step runs and writes its JSON, so the script
the GPU machine runs cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_mode_writes_every_result(tmp_path):
    pytest.importorskip("nnunetv2")
    pytest.importorskip("monai")
    out = tmp_path / "check"
    env = dict(os.environ, PY=sys.executable)
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry", str(out)],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu_check done" in (out / "log.txt").read_text()
    fp16 = json.loads((out / "fp16.json").read_text())
    assert fp16["max_dp_fp16_vs_fp32"] == 0.0          # autocast is CUDA-only
    nnunet = json.loads((out / "nnunet.json").read_text())
    assert nnunet["max_dp_vs_nnunet_fp32"] <= 1e-3
    assert {"vesukit_s", "nnunet_s", "monai_s"} <= set(nnunet)
    seed9 = json.loads((out / "seed9.json").read_text())
    assert len(seed9["rows"]) == 2 and seed9["peak_gib"] is None
