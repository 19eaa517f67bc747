"""Helpers for the submission tests: masks, TIFF bytes and zips built entry by entry."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import tifffile

from vesukit.data import encode_volume

# Non-cubic and different per volume, so transpositions and swaps are visible.
SHAPES = [(6, 12, 10), (8, 10, 14)]


def mask_for(shape, seed: int = 0, fraction: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < fraction).astype(np.uint8)


def tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    kwargs.setdefault("compression", "zlib")
    kwargs.setdefault("photometric", "minisblack")
    tifffile.imwrite(buffer, array, metadata=None, **kwargs)
    return buffer.getvalue()


def good_entries(shapes: dict) -> dict[str, bytes]:
    """One correct ``<id>.tif`` per id."""
    return {f"{i}.tif": encode_volume(mask_for(s, n)) for n, (i, s) in enumerate(shapes.items())}


def write_zip(path: Path, entries, compression=zipfile.ZIP_DEFLATED) -> Path:
    """``entries``: mapping or list of (name, bytes); lists allow duplicate names."""
    items = entries.items() if isinstance(entries, dict) else entries
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in items:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return path
