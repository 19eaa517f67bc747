"""The input volume of `segment`: an OME-Zarr image at a chosen level, a plain zarr array, or
a TIFF; opened lazily wherever a task runs, so only the voxels a chunk needs are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vesukit.data import zarr_array_name
from vesukit.errors import VolumeError


@dataclass(frozen=True)
class Source:
    """Where the volume is: ``path`` (a .zarr folder or a TIFF) and, in a zarr, the array."""

    path: Path
    array: str = ""
    kind: str = "zarr"

    def open(self):
        """An array-like (Z, Y, X) uint8 volume: zarr arrays and TIFFs read only what is sliced."""
        if self.kind == "tiff":
            import tifffile

            from vesukit._optional import require

            zarr = require("zarr", "reading a TIFF chunk by chunk in `segment`")
            return zarr.open_array(tifffile.imread(self.path, aszarr=True), mode="r")
        from vesukit._optional import require

        zarr = require("zarr", "vesukit segment")
        return zarr.open_array(str(self.path / self.array) if self.array else str(self.path), mode="r")

    def describe(self) -> str:
        return f"{self.path}" + (f" (array '{self.array}')" if self.array else "")


def find_source(path: str | Path, level: int = 0) -> Source:
    """Resolve INPUT: an OME-Zarr image (``level`` picks the resolution), a zarr array, a TIFF."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder. INPUT is an OME-Zarr image, a zarr array or a TIFF.")
    if path.is_file():
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise VolumeError(f"{path}: not a TIFF; INPUT is an OME-Zarr image, a zarr array or a TIFF.")
        source = Source(path, kind="tiff")
    else:
        source = Source(path, zarr_array_name(path, level, "vesukit segment"))
    array = source.open()
    if len(array.shape) != 3 or str(array.dtype) != "uint8":
        raise VolumeError(f"{source.describe()}: shape {tuple(array.shape)} dtype {array.dtype}; segment needs a "
                          "uint8 (Z, Y, X) volume.")
    return source
