"""Per-volume work state in the workdir: the unit of resume and of multi-worker hand-off.

For each finished volume the workdir holds ``masks/<id>.tif`` (the exact bytes that go into the
zip) and ``state/<id>.json`` (how it was made). The mask is written first and the state last,
both atomically, so a state file always points at a complete mask: after ``kill -9`` at any
moment a volume is either fully done or not done at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vesukit.data import atomic_write_bytes

DONE = "done"          # predicted by the ensemble (possibly degraded: see `degraded`)
FALLBACK = "fallback"  # an empty mask written because the volume could not be predicted


@dataclass
class VolumeState:
    volume_id: str
    status: str                    # DONE or FALLBACK
    fingerprint: str               # what the mask depends on (teachers, TTA, calibration...)
    shape: tuple[int, int, int]
    threshold: float | None = None
    foreground: float = 0.0
    seconds: float = 0.0
    device_seconds: float = 0.0
    teacher_seconds: dict[str, float] = field(default_factory=dict)
    tta: str | None = None
    teachers: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)   # what this volume did without
    reason: str | None = None                           # why a fallback was written
    worker: int = 0
    audit: dict = field(default_factory=dict)           # report.volume_audit, with --audit

    def to_json(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data

    @classmethod
    def from_json(cls, data: dict) -> VolumeState:
        data = dict(data)
        data["shape"] = tuple(data["shape"])
        return cls(**data)


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (the settings a mask depends on)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StateStore:
    """Masks and states of one run's volumes, under ``workdir``."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.masks = self.workdir / "masks"
        self.states = self.workdir / "state"
        self.masks.mkdir(parents=True, exist_ok=True)
        self.states.mkdir(parents=True, exist_ok=True)

    def mask_path(self, volume_id: str) -> Path:
        return self.masks / f"{volume_id}.tif"

    def save(self, state: VolumeState, mask_tiff: bytes) -> None:
        atomic_write_bytes(self.mask_path(state.volume_id), mask_tiff)
        atomic_write_bytes(self.states / f"{state.volume_id}.json",
                           json.dumps(state.to_json(), indent=2).encode())

    def load(self, volume_id: str) -> VolumeState | None:
        path = self.states / f"{volume_id}.json"
        if not path.is_file() or not self.mask_path(volume_id).is_file():
            return None
        try:
            return VolumeState.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            return None  # unreadable state: the volume is simply redone

    def finished(self, volume_id: str, expected_fingerprint: str,
                 shape: tuple[int, int, int]) -> VolumeState | None:
        """The saved state if it is a usable prediction for these settings, else None.

        Fallback masks are never reused: a resumed run tries those volumes again.
        """
        state = self.load(volume_id)
        if (state is None or state.status != DONE or state.fingerprint != expected_fingerprint
                or tuple(state.shape) != tuple(shape)):
            return None
        return state

    def mask_bytes(self, volume_id: str) -> bytes:
        return self.mask_path(volume_id).read_bytes()
