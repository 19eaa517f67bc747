"""The labelled train volumes calibration is judged on, and their labels prepared for the scorer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vesukit.errors import CompetitionRootError, UsageError


def labelled_ids(root: str | Path, count: int | None = None) -> list[str]:
    """Train ids that have a label, sorted; the first ``count`` when given."""
    from vesukit.data import list_ids, volume_path

    ids = sorted(i for i in list_ids(root, "train")
                 if volume_path(root, i, "train_labels").is_file())
    if not ids:
        raise CompetitionRootError(
            f"{root}: no train volume has a label in train_labels/<id>.tif; calibration "
            "needs labelled volumes.")
    if count is not None:
        if count < 1:
            raise UsageError(f"--volumes {count}: must be >= 1.")
        ids = ids[:count]
    return ids


def prepared_labels(root: str | Path, ids: Sequence[str],
                    progress: Callable[[str], None] | None = None) -> dict:
    """volume id -> :class:`vesukit.metric.PreparedLabel` (prepared once, scored many times)."""
    from vesukit.data import read_volume, volume_path
    from vesukit.metric import PreparedLabel

    labels = {}
    for volume_id in ids:
        if progress:
            progress(f"{volume_id}: preparing the label")
        labels[volume_id] = PreparedLabel(read_volume(volume_path(root, volume_id, "train_labels")),
                                          name=volume_id)
    return labels


class LabelFile:
    """A train label read and prepared where it is scored (a Dask worker, or here), once.

    It pickles as its path (and crop box), so a task that carries a volume carries no voxels,
    and :meth:`release` drops the prepared label when a streamed volume is done with.
    ``score``/``bound``/``shape`` are :class:`vesukit.metric.PreparedLabel`'s.
    """

    def __init__(self, path: str | Path, name: str, shape: tuple[int, ...] | None = None,
                 box: tuple[slice, ...] | None = None):
        self.path, self.name, self.box = Path(path), name, box
        self._shape = shape
        self._prepared = None

    def __getstate__(self):
        return {"path": self.path, "name": self.name, "box": self.box, "_shape": self._shape,
                "_prepared": None}

    def array(self):
        from vesukit.data import read_volume

        label = read_volume(self.path)
        return label if self.box is None else label[self.box]

    def prepared(self):
        from vesukit.metric import PreparedLabel

        if self._prepared is None:
            self._prepared = PreparedLabel(self.array(), name=self.name)
        return self._prepared

    @property
    def shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = tuple(self.prepared().shape)
        return self._shape

    def score(self, mask):
        return self.prepared().score(mask)

    def bound(self, mask):
        return self.prepared().bound(mask)

    def release(self) -> None:
        self._prepared = None


def crop_label(label, box: tuple[slice, ...], name: str):
    """``label`` (a :class:`LabelFile` or a prepared label) cut to ``box`` and prepared."""
    import numpy as np

    from vesukit.metric import PreparedLabel
    from vesukit.metric.score import IGNORE_LABEL

    if isinstance(label, LabelFile):
        array = label.array()[box]
    else:  # a PreparedLabel: its ground truth and scored-voxel masks say the whole label
        ignored = ~label.keep[box] if hasattr(label, "keep") else label.ignore[box]
        array = np.where(ignored, np.uint8(IGNORE_LABEL), label.gt[box].astype(np.uint8))
    return PreparedLabel(np.ascontiguousarray(array), name=name)
