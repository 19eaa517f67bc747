"""Labelled volumes from probability maps already on disk (no teachers run).

Maps come from `vesukit predict --save-maps`, nnU-Net's ``--save_probabilities``, or any tool
that writes ``<id>.npy``/``.npz``/``.tif``/``.zarr`` (:func:`vesukit.maps.read_map`); labels
from ``train_labels/<id>.tif`` of the competition root. vesukit's ``.npy`` maps stay
memory-mapped, so a hundred 320^3 volumes need not fit in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from vesukit.calibrate.search import LabelledVolume
from vesukit.errors import VesukitError


def load_map(path: Path):
    from vesukit.maps import read_map

    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r")
        if array.ndim == 3 and array.dtype in (np.float16, np.float32):
            return array
    return read_map(path)


class _MapsReadThere:
    """Ensemble maps made where they are used (a Dask worker, or here), once: the object
    pickles as the little that says how to make them, so a task that carries a volume carries
    no voxels, and :meth:`release` drops them when a streamed volume is done with. Reads as
    :class:`vesukit.maps.EnsembleMaps` (``mean``, ``variance``, ``disagreement`` ...)."""

    shape: tuple[int, ...]
    _maps = None

    def __getstate__(self):
        return {**self.__dict__, "_maps": None}

    def make(self):
        raise NotImplementedError

    def loaded(self):
        if self._maps is None:
            self._maps = self.make()
        return self._maps

    def __getattr__(self, name):  # mean, variance, disagreement, n_teachers ...
        if name.startswith("_") or name in ("shape",):
            raise AttributeError(name)
        return getattr(self.loaded(), name)

    def release(self) -> None:
        self._maps = None


class SavedMaps(_MapsReadThere):
    """A saved probability map (:func:`load_map`; a ``.npy`` is memory-mapped), read as the
    maps of :func:`vesukit.maps.maps_from_probability` (zero variance and disagreement)."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = Path(path), tuple(shape)

    def make(self):
        from vesukit.maps import maps_from_probability

        return maps_from_probability(load_map(self.path))


class CachedEnsemble(_MapsReadThere):
    """A volume's ensemble of the teachers in a calibration map cache, made from the cached
    teacher maps (``weights``/``mode``: a fusion's; default the cache's own weights)."""

    def __init__(self, folder: Path, volume_id: str, weights=None, mode: str = "probability"):
        from vesukit.calibrate.cache import MapCache

        cache = MapCache(folder)
        self.folder, self.volume_id = Path(folder), volume_id
        self.weights, self.mode = (None if weights is None else list(weights)), mode
        self.shape = tuple(cache.map_shape(volume_id))

    def make(self):
        from vesukit.calibrate.cache import MapCache
        from vesukit.calibrate.fusion import fuse

        cache = MapCache(self.folder)
        if self.weights is None:
            return cache.ensemble(self.volume_id)
        return fuse(cache, self.volume_id, self.weights, self.mode)


def map_volumes(maps_dir, root, count: int | None = None,
                progress: Callable[[str], None] | None = None,
                left_out: Mapping[str, str] | None = None) -> list[LabelledVolume]:
    """The labelled train volumes that have a saved map, each with its prepared label.

    ``left_out``: volume id -> why its map is not searched (maps.json's ``made_otherwise``: a
    map the run made without a teacher or with lowered TTA is not what predict applies to).
    """
    from vesukit.calibrate.labels import LabelFile, labelled_ids
    from vesukit.data import read_volume_shape, volume_path
    from vesukit.maps import find_maps

    found = find_maps(maps_dir)
    labelled = labelled_ids(root)
    ids = [i for i in labelled if i in found]
    skipped = [i for i in ids if i in (left_out or {})]
    if skipped and progress is not None:
        progress(f"WARNING {len(skipped)} map(s) left out: the run that saved them made them "
                 "otherwise (" + "; ".join(f"{i}: {left_out[i]}" for i in skipped[:5])
                 + (" ..." if len(skipped) > 5 else "") + "); predict them again to use them")
    if skipped and len(skipped) == len(ids):
        raise VesukitError(
            f"{maps_dir}: every labelled map was made otherwise than its maps.json says "
            f"({'; '.join(f'{i}: {left_out[i]}' for i in skipped[:3])}). Save the maps again "
            "with `vesukit predict --save-maps` and a time budget that does not lower TTA.")
    ids = [i for i in ids if i not in skipped]
    if not ids:
        raise VesukitError(
            f"{maps_dir}: none of its {len(found)} map(s) belongs to a labelled train volume of "
            f"{root} (labelled: {', '.join(labelled[:5])}{' ...' if len(labelled) > 5 else ''}). "
            "Save maps for train volumes, e.g. `vesukit predict --save-maps` on a root whose "
            "test_images are the train volumes.")
    if count is not None:
        ids = ids[:count]
    volumes = []
    for volume_id in ids:
        label_path = volume_path(root, volume_id, "train_labels")
        shape = tuple(read_volume_shape(label_path))
        map_shape = tuple(np.shape(load_map(found[volume_id])))
        if map_shape != shape:
            raise VesukitError(
                f"{found[volume_id]}: map shape {map_shape} differs from its label's {shape}; "
                "maps must be in the volume's shape.")
        # read and prepared where they are scored, and dropped after (a hundred 320^3 labels
        # prepared at once would need about 100 GB)
        volumes.append(LabelledVolume(volume_id, SavedMaps(found[volume_id], shape),
                                      LabelFile(label_path, volume_id, shape)))
    return volumes
