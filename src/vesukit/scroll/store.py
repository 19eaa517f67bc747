"""The output OME-Zarr and its resume records.

Layout (OME-NGFF 0.4, zarr format 2, readable by ome-zarr's reader and viewers such as
napari)::

    OUT.zarr/            multiscales image "surface probability", one level
      0/                 (Z, Y, X) uint8 0-255 or float16, chunked like the tasks
      labels/mask/0/     uint8 0/1 mask (only with a calibration), same chunks
      .vesukit/run.json  the settings; a resume must match them
      .vesukit/settings.json  the resolved settings and where each came from (as predict's run.json)
      .vesukit/chunks/   one record per finished chunk (z_y_x.json), written atomically
                         after the chunk's data, so a killed run loses at most the chunks
                         being written, and those are simply done again

Each task writes exactly one zarr chunk of each array: no two tasks ever touch one file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesukit.data import atomic_write_bytes
from vesukit.errors import UsageError

DTYPES = ("uint8", "float16")
DONE, FALLBACK, SKIPPED = "done", "fallback", "skipped"


def _zarr():
    from vesukit._optional import require

    return require("zarr", "vesukit segment")


def _multiscales(name: str) -> dict:
    return {"multiscales": [{
        "version": "0.4", "name": name,
        "axes": [{"name": a, "type": "space"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}],
    }]}


@dataclass(frozen=True)
class OutputStore:
    """Paths and layout of one output; picklable, opened where it is used."""

    path: Path
    shape: tuple[int, int, int]
    chunk: tuple[int, int, int]
    dtype: str = "uint8"
    with_mask: bool = False

    @property
    def records(self) -> Path:
        return self.path / ".vesukit" / "chunks"

    def write_settings(self, record: dict) -> None:
        """``.vesukit/settings.json``: the resolved run settings with their sources (this run's;
        a resume rewrites it). Not part of the resume check, which ``run.json`` holds."""
        atomic_write_bytes(self.path / ".vesukit" / "settings.json",
                           json.dumps(record, indent=1).encode())

    def create(self, settings: dict, resume: bool) -> None:
        """Create the arrays and metadata, or check that ``settings`` match the run resumed."""
        run_file = self.path / ".vesukit" / "run.json"
        if self.path.exists():
            if not resume:
                raise UsageError(f"{self.path}: already exists. Pass --resume to continue it, or remove it.")
            if not run_file.is_file():
                raise UsageError(f"{self.path}: exists but was not written by `vesukit segment`; remove it.")
            previous = json.loads(run_file.read_text())
            if previous != settings:
                changed = sorted(k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k))
                raise UsageError(f"{self.path}: was started with other settings ({', '.join(changed)}); "
                                 "--resume needs the same ones. Rerun with them, or write to a new folder.")
            return
        zarr = _zarr()
        root = zarr.open_group(str(self.path), mode="w", zarr_format=2)
        root.attrs.update(_multiscales("surface probability"))
        fill = 0
        root.create_array("0", shape=self.shape, chunks=self.chunk, dtype=self.dtype, fill_value=fill,
                          chunk_key_encoding={"name": "v2", "separator": "/"})
        if self.with_mask:
            labels = root.create_group("labels")
            labels.attrs["labels"] = ["mask"]
            mask = labels.create_group("mask")
            mask.attrs.update({**_multiscales("mask"), "image-label": {
                "version": "0.4", "colors": [{"label-value": 1, "rgba": [255, 64, 0, 255]}],
                "source": {"image": "../../"}}})
            mask.create_array("0", shape=self.shape, chunks=self.chunk, dtype="uint8", fill_value=0,
                              chunk_key_encoding={"name": "v2", "separator": "/"})
        self.records.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_file, json.dumps(settings, indent=1, sort_keys=True).encode())

    def write(self, index: tuple[int, ...], region: tuple[slice, ...], probability: np.ndarray,
              mask: np.ndarray | None) -> None:
        """Write one chunk (exactly one zarr chunk per array)."""
        zarr = _zarr()
        array = zarr.open_array(str(self.path / "0"), mode="r+")
        if self.dtype == "uint8":
            array[region] = np.rint(np.clip(probability, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            array[region] = probability.astype(np.float16)
        if self.with_mask and mask is not None:
            zarr.open_array(str(self.path / "labels" / "mask" / "0"), mode="r+")[region] = mask

    def record(self, index: tuple[int, ...], status: str, **info) -> None:
        name = "_".join(map(str, index)) + ".json"
        atomic_write_bytes(self.records / name, json.dumps({"chunk": list(index), "status": status, **info}).encode())

    def finished(self) -> dict[tuple[int, ...], dict]:
        """Records of chunks done or skipped (fallbacks are done again on resume)."""
        out = {}
        for path in sorted(self.records.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except ValueError:
                continue  # cannot happen with atomic writes; treat as not finished
            if record.get("status") in (DONE, SKIPPED):
                out[tuple(record["chunk"])] = record
        return out

    def all_records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.records.glob("*.json"))]

    def finish(self, fallbacks: list[dict]) -> None:
        """Record the fallback chunks in the image's attributes, for any reader to see."""
        zarr = _zarr()
        root = zarr.open_group(str(self.path), mode="r+")
        root.attrs["vesukit"] = {"fallback_chunks": [f["chunk"] for f in fallbacks],
                                 "chunk": list(self.chunk), "dtype": self.dtype}
