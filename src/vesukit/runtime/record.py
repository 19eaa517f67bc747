"""The run record (`run.json` in the workdir): enough to trace a submission later.

Versions, devices, teachers and weights, TTA, calibration, every volume's timings, threshold
and degradations, and every warning or time-budget decision. Rewritten atomically after each
change, so it is current even if the run dies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vesukit.data import atomic_write_bytes
from vesukit.doctor import environment_summary


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def applied_fusion(manifest, calibration) -> dict:
    """How predict combined the teachers: mode, the weights used, and where they came from."""
    return {"mode": calibration.fusion_mode,
            "weights": {s.name: s.weight for s in manifest.teachers},
            "source": "calibration" if calibration.fusion is not None else "default",
            "weights_from": "calibration" if calibration.overrides_weights else "manifest"}


class RunRecord:
    def __init__(self, path: Path, data: dict):
        self.path = Path(path)
        self.data = data

    @classmethod
    def start(cls, path, config, devices, manifest, calibration, root, ids,
              resumed) -> RunRecord:
        data = {
            "started": _now(),
            "environment": environment_summary(devices),
            "data_root": str(root),
            "test_ids": list(ids),
            "resumed": list(resumed),
            "teachers_dir": str(manifest.root),
            "teachers": [
                {"name": s.name, "arch": s.arch, "encoder": s.encoder,
                 "input_kind": s.input_kind, "weight": s.weight, "checkpoint": s.checkpoint}
                for s in manifest.teachers
            ],
            "tta": config.tta,
            "overlap": config.overlap,
            "time_budget_seconds": config.time_budget,
            "calibration": calibration.to_json(),
            "calibration_file": str(config.calibration) if config.calibration else None,
            "fusion": applied_fusion(manifest, calibration),
            "out": str(config.out),
            "volumes": [],
            "events": [],
            "finished": None,
        }
        record = cls(path, data)
        record.save()
        return record

    def add_volume(self, state) -> None:
        """Record a volume's state; a later state of the same volume replaces it."""
        entry = state.to_json()
        volumes = self.data["volumes"]
        for i, old in enumerate(volumes):
            if old["volume_id"] == entry["volume_id"]:
                volumes[i] = entry
                break
        else:
            volumes.append(entry)
        self.save()

    def event(self, text: str) -> None:
        self.data["events"].append({"time": _now(), "message": text})
        self.save()

    def finish(self, result) -> None:
        self.data["finished"] = _now()
        self.data["wall_seconds"] = result.wall_seconds
        self.data["device_seconds"] = result.device_seconds
        self.data["device_busy_share"] = result.device_busy_share
        self.data["fallbacks"] = [v.volume_id for v in result.fallbacks]
        self.data["degraded"] = result.degraded
        self.data["zip_valid"] = result.validation.valid
        self.data["error"] = result.error
        self.data["exit_code"] = result.exit_code
        self.save()

    def save(self) -> None:
        """Write run.json; a failure (a full disk) is kept in ``save_error``, never raised:
        the record must not cost the submission."""
        try:
            atomic_write_bytes(self.path, json.dumps(self.data, indent=2).encode())
            self.save_error = None
        except OSError as exc:
            self.save_error = exc
