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


def map_volumes(maps_dir, root, count: int | None = None,
                progress: Callable[[str], None] | None = None,
                left_out: Mapping[str, str] | None = None) -> list[LabelledVolume]:
    """The labelled train volumes that have a saved map, each with its prepared label.

    ``left_out``: volume id -> why its map is not searched (maps.json's ``made_otherwise``: a
    map the run made without a teacher or with lowered TTA is not what predict applies to).
    """
    from vesukit.calibrate.labels import labelled_ids, prepared_labels
    from vesukit.maps import find_maps, maps_from_probability

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
