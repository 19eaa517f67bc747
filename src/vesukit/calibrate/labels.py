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
