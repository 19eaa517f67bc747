"""Labelled volumes from probability maps already on disk (no teachers run).

Maps come from `vesukit predict --save-maps`, nnU-Net's ``--save_probabilities``, or any tool
that writes ``<id>.npy``/``.npz``/``.tif``/``.zarr`` (:func:`vesukit.maps.read_map`); labels
from ``train_labels/<id>.tif`` of the competition root. vesukit's ``.npy`` maps stay
memory-mapped, so a hundred 320^3 volumes need not fit in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable
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


def map_volumes(maps_dir, root, count: int | None = None,
                progress: Callable[[str], None] | None = None) -> list[LabelledVolume]:
    """The labelled train volumes that have a saved map, each with its prepared label."""
    from vesukit.calibrate.runner import labelled_ids, prepared_labels
    from vesukit.maps import find_maps, maps_from_probability

    found = find_maps(maps_dir)
    labelled = labelled_ids(root)
    ids = [i for i in labelled if i in found]
    if not ids:
        raise VesukitError(
            f"{maps_dir}: none of its {len(found)} map(s) belongs to a labelled train volume of "
            f"{root} (labelled: {', '.join(labelled[:5])}{' ...' if len(labelled) > 5 else ''}). "
            "Save maps for train volumes, e.g. `vesukit predict --save-maps` on a root whose "
            "test_images are the train volumes.")
    if count is not None:
        ids = ids[:count]
    labels = prepared_labels(root, ids, progress)
    volumes = []
    for volume_id in ids:
        probability = load_map(found[volume_id])
        if tuple(probability.shape) != tuple(labels[volume_id].shape):
            raise VesukitError(
                f"{found[volume_id]}: map shape {tuple(probability.shape)} differs from its "
                f"label's {tuple(labels[volume_id].shape)}; maps must be in the volume's shape.")
        volumes.append(LabelledVolume(volume_id, maps_from_probability(probability),
                                      labels[volume_id]))
    return volumes
