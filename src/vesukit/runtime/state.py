"""Per-volume work state in the workdir: the unit of resume and of multi-worker hand-off.

For each finished volume the workdir holds ``masks/<id>.tif`` (the exact bytes that go into the
zip) and ``state/<id>.json`` (how it was made). The mask is written first and the state last,
both atomically, so a state file always points at a complete mask: after ``kill -9`` at any
moment a volume is either fully done or not done at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vesukit.data import atomic_write_bytes
from vesukit.runtime.faults import inject

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
    input_stamp: str | None = None                      # the test volume's size + mtime
    fingerprint_parts: dict = field(default_factory=dict)  # part -> hash (why a redo)

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


HASH_SPAN = 1 << 20  # bytes hashed at each end of a checkpoint


def file_stamp(path: str | os.PathLike, content: bool = False) -> str:
    """``size:mtime_ns`` of a file, plus a fast content hash with ``content``.

    The hash covers the first and last MiB and the size: it catches weights retrained and
    saved under the same name (even with the mtime restored) at the cost of reading 2 MiB,
    not the whole checkpoint. A folder (a Hugging Face style checkpoint) stamps every file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return fingerprint([(str(p.relative_to(path)), file_stamp(p, content)) for p in files])
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    if not content:
        return stamp
    digest = hashlib.sha256(str(stat.st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(HASH_SPAN))
        if stat.st_size > HASH_SPAN:
            handle.seek(max(stat.st_size - HASH_SPAN, HASH_SPAN))
            digest.update(handle.read(HASH_SPAN))
    return f"{stamp}:{digest.hexdigest()[:16]}"


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
                 shape: tuple[int, int, int], input_stamp: str | None = None
                 ) -> VolumeState | None:
        """The saved state if it is a usable prediction for these settings, else None.

        Fallback masks are never reused: a resumed run tries those volumes again.
        """
        state, _ = self.reusable(volume_id, expected_fingerprint, shape, input_stamp)
        return state

    def reusable(self, volume_id: str, expected_fingerprint: str, shape: tuple[int, int, int],
                 input_stamp: str | None = None, parts: dict | None = None
                 ) -> tuple[VolumeState | None, str | None]:
        """(the saved state, None) when it can be reused, else (None, why it is redone)."""
        inject("resume", volume_id)
        state = self.load(volume_id)
        if state is None:
            return None, None  # never finished: nothing to explain
        if state.status != DONE:
            return None, "it was a fallback"
        if state.fingerprint != expected_fingerprint:
            changed = sorted(k for k, v in (parts or {}).items()
                             if state.fingerprint_parts.get(k) != v)
            return None, ("changed since: " + ", ".join(changed) if changed
                          else "the settings changed")
        if tuple(state.shape) != tuple(shape):
            return None, f"its shape changed ({state.shape} -> {tuple(shape)})"
        if input_stamp is not None and state.input_stamp != input_stamp:
            return None, "its input volume changed (size or modification time)"
        return state, None

    def mask_bytes(self, volume_id: str) -> bytes:
        return self.mask_path(volume_id).read_bytes()
