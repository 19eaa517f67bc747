"""The ensemble's maps of one volume, the value every stage after inference works on.

Torch-free on purpose: threshold rules, post-processing and the audit take numpy arrays as
well as tensors, and must import where torch does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vesukit.errors import VesukitError


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class EnsembleMaps:
    """Weighted mean probability, variance and disagreement, each (Z, Y, X) float32.

    The maps are torch tensors as the accumulator returns them, or numpy arrays after
    :meth:`to_numpy`.
    """

    mean: Any
    variance: Any
    disagreement: Any
    n_teachers: int = 1
    total_weight: float = 1.0
    mode: str = "probability"

    def to_numpy(self) -> EnsembleMaps:
        return replace(self, mean=_to_numpy(self.mean), variance=_to_numpy(self.variance),
                       disagreement=_to_numpy(self.disagreement))

    def rounded_mean(self, dtype: str) -> EnsembleMaps:
        """The maps with the mean rounded through ``dtype`` (the precision a calibration was
        fitted on), kept float32."""
        if dtype == "float32":
            return self
        mean = self.mean
        if hasattr(mean, "detach"):
            import torch

            return replace(self, mean=mean.to(getattr(torch, dtype)).float())
        return replace(self, mean=np.asarray(mean).astype(dtype).astype(np.float32))

    def half(self) -> EnsembleMaps:
        """fp16 copies of the maps, for audit files (half the bytes)."""

        def conv(x):
            return x.half() if hasattr(x, "half") and hasattr(x, "detach") else \
                np.asarray(x).astype(np.float16)

        return replace(self, mean=conv(self.mean), variance=conv(self.variance),
                       disagreement=conv(self.disagreement))


# Saved probability maps: what `vesukit predict --save-maps` writes and what `vesukit calibrate
# --maps` and `vesukit postprocess` read. Foreground probability of one volume, (Z, Y, X).
MAP_SUFFIXES = (".npy", ".npz", ".tif", ".tiff", ".zarr")


def save_map(folder, volume_id: str, probability) -> None:
    """``<folder>/<id>.npy``, float16, the volume's shape; written atomically (temp + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array = _to_numpy(probability).astype(np.float16)  # run_settings.SAVED_MAP_DTYPE
    temporary = folder / f".{volume_id}.tmp.npy"
    np.save(temporary, array)
    os.replace(temporary, folder / f"{volume_id}.npy")


def find_maps(folder) -> dict:
    """volume id -> path of every saved map in ``folder`` (one format per id; .npy first)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VesukitError(f"{folder}: no such folder of probability maps. Save maps with "
                           "`vesukit predict --save-maps DIR` or point at nnU-Net's output folder.")
    found: dict = {}
    for suffix in MAP_SUFFIXES:
        for path in sorted(folder.glob(f"*{suffix}")):
            if path.name.startswith("."):
                continue
            found.setdefault(path.name[: -len(suffix)], path)
    if not found:
        raise VesukitError(f"{folder}: no probability maps here (looked for <id> with "
                           f"{', '.join(MAP_SUFFIXES)}).")
    return dict(sorted(found.items()))


def read_map(path) -> np.ndarray:
    """One saved map as float32 probabilities in [0, 1], (Z, Y, X).

    ``.npy`` (vesukit), nnU-Net's ``.npz`` (``probabilities``, classes first: class 1 is the
    surface), ``.tif`` (uint8 0-255 is scaled to [0, 1]; float as is) and zarr (a folder
    ``<id>.zarr`` holding an array, or an OME-Zarr image such as `vesukit segment` writes, read at
    its full resolution; zarr is optional).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r")
        elif suffix == ".npz":
            with np.load(path) as archive:
                if "probabilities" not in archive:
                    raise VesukitError(f"{path}: no 'probabilities' array (it holds "
                                       f"{', '.join(archive.files)}); expected nnU-Net's "
                                       "--save_probabilities output.")
                array = archive["probabilities"]
            if array.ndim == 4:
                if array.shape[0] < 2:
                    raise VesukitError(f"{path}: 'probabilities' has {array.shape[0]} class; "
                                       "class 1 (surface) is needed.")
                array = array[1]
        elif suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        elif suffix == ".zarr":
            from vesukit._optional import require
            from vesukit.data import zarr_array_name

            name = zarr_array_name(path, 0, "reading zarr maps")
            zarr = require("zarr", "reading zarr maps")
            array = np.asarray(zarr.open_array(str(path / name) if name else str(path), mode="r")[...])
        else:
            raise VesukitError(f"{path}: unknown map format; use one of {', '.join(MAP_SUFFIXES)}.")
    except VesukitError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file is bad input, named as such
        raise VesukitError(f"{path}: not a readable probability map ({type(exc).__name__}: "
                           f"{exc}).") from exc
    if array.ndim != 3:
        raise VesukitError(f"{path}: map has shape {tuple(array.shape)}; expected (Z, Y, X).")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.asarray(array, dtype=np.float32)


def maps_from_probability(probability: np.ndarray) -> EnsembleMaps:
    """EnsembleMaps for a saved mean probability (variance and disagreement are unknown: 0).

    The zero maps are broadcast views: no memory per volume.
    """
    zeros = np.broadcast_to(np.zeros((), dtype=np.float32), np.shape(probability))
    return EnsembleMaps(probability, zeros, zeros)
