"""What the staged search screens on at scale: centre crops of a spread subset of the volumes.

A training set of 100 volumes of 320^3 is too big to search candidate by candidate (hundreds of
candidates, each a chain of morphology and a topological score per volume). The search's
decisions (which rules start the descent, which steps it keeps, which finalist wins) are
therefore made on a sample: at most :attr:`SearchSample.volumes` volumes, evenly spread over the
sorted ids, each cut to its centre cube of :attr:`SearchSample.crop` voxels a side. What decides
a fold's fate is still measured whole: the out-of-fold judging scores each held volume's
winner and baseline on the full volume with the full scorer (``oof.py``).

Two things keep a crop honest about the full volume:

- a rule's threshold is computed on the **full** map (:func:`make_crop`), as predict computes
  it, not on the crop's histogram;
- component and hole sizes in the chains are scaled to the full volume's voxels (the runner
  sizes the options from the full shapes), so a step means the same on the crop.

Whether this picks the decision the exhaustive search picks is measured, not assumed
(docs/benchmarks.md, "Calibration at scale").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vesukit.calibrate.search import Candidate, LabelledVolume

SEARCH_VOLUMES = 16  # volumes the search screens on (0: every volume)
SEARCH_CROP = 160    # voxels a side of each screened volume's centre crop (0: whole volumes)


@dataclass(frozen=True)
class SearchSample:
    """At most ``volumes`` volumes (0: all), each cut to its centre ``crop``^3 (0: whole)."""

    volumes: int = SEARCH_VOLUMES
    crop: int = SEARCH_CROP

    def active_for(self, shapes: Sequence[Sequence[int]]) -> bool:
        """Whether the sample leaves anything out of volumes of these shapes."""
        return (0 < self.volumes < len(shapes)) or \
            (self.crop > 0 and any(max(shape) > self.crop for shape in shapes))

    def used_for(self, shapes: Sequence[Sequence[int]], exhaustive: bool) -> SearchSample | None:
        """This sample where a search of volumes of these shapes uses it, else None: when it
        leaves anything out, and never for the exhaustive search (the reference the sample is
        checked against)."""
        return self if not exhaustive and self.active_for(shapes) else None

    def ids(self, volume_ids: Iterable[str]) -> list[str]:
        """The sampled ids: evenly spread over the sorted ids (all of them when few)."""
        ids = sorted(volume_ids)
        if self.volumes <= 0 or len(ids) <= self.volumes:
            return ids
        step = len(ids) / self.volumes
        return [ids[int(i * step + step / 2)] for i in range(self.volumes)]

    def describe(self) -> str:
        volumes = "every volume" if self.volumes <= 0 else f"at most {self.volumes} volumes"
        crop = "whole" if self.crop <= 0 else f"centre {self.crop}^3 crops"
        return f"{volumes}, {crop}"


def volume_shape(volume: LabelledVolume) -> tuple[int, ...]:
    """The whole shape of a volume's maps, without making them where they are made lazily."""
    maps = volume.maps
    return tuple(maps.shape) if hasattr(maps, "shape") else tuple(np.shape(maps.mean))


def centre_box(shape: Sequence[int], edge: int) -> tuple[slice, ...]:
    """The centre cube of ``edge`` voxels a side (each axis shorter than ``edge`` whole)."""
    box = []
    for size in shape:
        side = size if edge <= 0 else min(size, edge)
        start = (size - side) // 2
        box.append(slice(start, start + side))
    return tuple(box)


@dataclass(frozen=True)
class CropOf:
    """The client's handle on a volume's centre crop; the crop itself is made where it is
    scored (:func:`make_crop`: on a Dask worker, or in this process)."""

    volume: LabelledVolume
    edge: int

    @property
    def volume_id(self) -> str:
        return crop_id(self.volume.volume_id, self.edge)


def crop_id(volume_id: str, edge: int) -> str:
    """How a crop appears in the candidate tables: never mistaken for its whole volume."""
    return f"{volume_id}[crop {edge}]"


def measured_on(scores) -> str:
    """What a table of per-volume scores was measured on, in words: "N volume(s)", or "N
    centre crop(s)" for a search on a sample."""
    crops = sum("[crop " in volume_id for volume_id in scores)
    return f"{crops} centre crop(s)" if crops else f"{len(scores)} volume(s)"


def _cut(array: Any, box: tuple[slice, ...]) -> Any:
    array = np.asarray(array)
    if array.ndim == 0 or 0 in array.strides:  # a broadcast constant (saved maps' zeros)
        return np.broadcast_to(array.reshape(-1)[:1].reshape(()), tuple(
            s.stop - s.start for s in box))
    return np.ascontiguousarray(array[box])


def crop_maps(maps: Any, box: tuple[slice, ...]) -> Any:
    """The ensemble maps (mean, variance, disagreement) cut to ``box``."""
    return replace(maps, mean=_cut(maps.mean, box), variance=_cut(maps.variance, box),
                   disagreement=_cut(maps.disagreement, box))


def make_crop(handle: CropOf, candidates: Sequence[Candidate]) -> LabelledVolume:
    """The crop of ``handle``: maps and label cut to the centre box, the label prepared for the
    scorer, and every rule of ``candidates`` thresholded on the **full** map."""
    from vesukit.calibrate.labels import crop_label

    volume = handle.volume
    full = getattr(volume.maps, "loaded", lambda: volume.maps)()
    shape = np.shape(full.mean)
    box = centre_box(shape, handle.edge)
    thresholds = {}
    for candidate in candidates:
        if candidate.rule_key not in thresholds:
            thresholds[candidate.rule_key] = float(candidate.rule(full))
    crop = LabelledVolume(handle.volume_id, crop_maps(full, box),
                          crop_label(volume.label, box, handle.volume_id), thresholds=thresholds)
    release = getattr(volume, "release", None)
    if release is not None:
        release()
    return crop
