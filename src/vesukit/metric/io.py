"""Reading a prediction set (zip or folder) and its labels, and scoring them all.

Predictions are read as the official scorer reads them: every ``**/*.tif`` (recursively, a
``.tiff`` is ignored), id = file name up to the first ``.``, pages read with Pillow and
stacked on axis 0, any non-zero voxel is surface.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vesukit.data import read_volume, read_volume_pillow
from vesukit.errors import VolumeError

Loader = Callable[[], np.ndarray]


def _id_of(name: str) -> str:
    return Path(name).name.split(".", 1)[0]


def prediction_loaders(source: str | os.PathLike) -> dict[str, Loader]:
    """id -> loader for every prediction in a submission zip or a folder."""
    source = Path(source)
    loaders: dict[str, Loader] = {}
    origin: dict[str, str] = {}

    def add(volume_id: str, where: str, loader: Loader) -> None:
        if volume_id in loaders:
            raise VolumeError(f"{source}: prediction id '{volume_id}' appears twice "
                              f"({origin[volume_id]} and {where}); keep one file per id.")
        loaders[volume_id] = loader
        origin[volume_id] = where

    if source.is_dir():
        for path in sorted(source.rglob("*.tif")):
            if path.is_file():
                add(_id_of(path.name), str(path), lambda p=path: read_volume_pillow(p))
    elif source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = [n for n in archive.namelist() if n.endswith(".tif") and not n.endswith("/")]

        def load_member(member: str) -> np.ndarray:
            with zipfile.ZipFile(source) as archive:
                return read_volume_pillow(archive.read(member))

        for name in sorted(names):
            add(_id_of(name), f"{source}:{name}", lambda n=name: load_member(n))
    elif source.exists():
        raise VolumeError(f"{source}: is neither a folder nor a zip archive; pass a "
                          "submission.zip or a folder of <id>.tif predictions.")
    else:
        raise VolumeError(f"{source}: no such file or folder.")
    if not loaders:
        raise VolumeError(f"{source}: holds no .tif prediction (files must be named <id>.tif).")
    return loaders


def label_paths(labels_dir: str | os.PathLike) -> dict[str, Path]:
    folder = Path(labels_dir)
    if not folder.is_dir():
        raise VolumeError(f"{folder}: the labels folder does not exist; pass the folder of "
                          "<id>.tif labels (e.g. <competition root>/train_labels).")
    paths = {_id_of(p.name): p for p in sorted(folder.glob("*.tif")) if p.is_file()}
    if not paths:
        raise VolumeError(f"{folder}: holds no <id>.tif label.")
    return paths


def paired_ids(pred_ids, label_ids, pred_source, labels_dir) -> list[str]:
    """The common ids; any prediction without a label, or label without a prediction, is an
    error naming the ids."""
    missing_label = sorted(set(pred_ids) - set(label_ids))
    missing_pred = sorted(set(label_ids) - set(pred_ids))
    if missing_label:
        raise VolumeError(f"{pred_source}: no label in {labels_dir} for prediction id(s) "
                          f"{', '.join(missing_label)}; add the label or remove the prediction.")
    if missing_pred:
        raise VolumeError(f"{pred_source}: no prediction for label id(s) "
                          f"{', '.join(missing_pred)} from {labels_dir}; every labelled volume "
                          "needs a prediction (or score a labels folder with only those ids).")
    return sorted(pred_ids)


def iter_scores(pred_source, labels_dir, *, workers: int | None = None) -> Iterator:
    """Yield (id, VolumeScore) in id order, one volume in memory at a time."""
    from vesukit.metric.score import PreparedLabel, default_workers

    workers = default_workers() if workers is None else max(1, int(workers))
    preds = prediction_loaders(pred_source)
    labels = label_paths(labels_dir)
    ids = paired_ids(preds, labels, pred_source, labels_dir)

    def load(volume_id):
        return read_volume(labels[volume_id]), preds[volume_id]()

    # Volumes are scored one after another (octants, surface Dice and VOI of one volume
    # run in parallel); the next pair is decoded in the background meanwhile, so at most
    # two pairs are in memory.
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(load, ids[0])
        for index, volume_id in enumerate(ids):
            label, pred = pending.result()
            if index + 1 < len(ids):
                pending = reader.submit(load, ids[index + 1])
            prepared = PreparedLabel(label, name=volume_id, workers=workers)
            yield volume_id, prepared.score(pred)


def score_predictions(pred_source, labels_dir, *, workers: int | None = None) -> dict:
    """``{"mean": x, "volumes": {id: VolumeScore.to_json()}}`` (the `score --json` shape)."""
    volumes = {vid: result.to_json() for vid, result in iter_scores(pred_source, labels_dir,
                                                                    workers=workers)}
    mean = float(np.mean([v["score"] for v in volumes.values()]))
    return {"mean": mean, "volumes": volumes}
