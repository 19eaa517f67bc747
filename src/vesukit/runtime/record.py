"""The run record (`run.json` in the workdir): enough to trace a submission later.

Rewritten atomically after every volume, so it is current even if the run dies.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from vesukit.data import atomic_write_bytes


class RunRecord:
    def __init__(self, path: Path, data: dict):
        self.path = Path(path)
        self.data = data

    @classmethod
    def start(cls, path, config, device, manifest, calibration, root, ids) -> "RunRecord":
        from vesukit.runtime.pipeline import environment_summary

        data = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment_summary(device),
            "data_root": str(root),
            "test_ids": list(ids),
            "teachers_dir": str(manifest.root),
            "teachers": [
                {"name": s.name, "arch": s.arch, "encoder": s.encoder,
                 "input_kind": s.input_kind, "weight": s.weight, "checkpoint": s.checkpoint}
                for s in manifest.teachers
            ],
            "tta": config.tta,
            "overlap": config.overlap,
            "calibration": calibration.to_dict(),
            "calibration_file": str(config.calibration) if config.calibration else None,
            "out": str(config.out),
            "volumes": [],
            "finished": None,
        }
        record = cls(path, data)
        record.save()
        return record

    def add_volume(self, result) -> None:
        entry = asdict(result)
        entry["shape"] = list(result.shape)
        self.data["volumes"].append(entry)
        self.save()

    def finish(self, wall_seconds: float, device_seconds: float, valid: bool) -> None:
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.data["wall_seconds"] = wall_seconds
        self.data["device_seconds"] = device_seconds
        self.data["device_busy_share"] = device_seconds / wall_seconds if wall_seconds else 0.0
        self.data["zip_valid"] = valid
        self.save()

    def save(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.data, indent=2).encode())
