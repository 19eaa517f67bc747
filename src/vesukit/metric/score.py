"""The leaderboard score of one volume, and the label-side cache reused across predictions."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vesukit.errors import VolumeError
from vesukit.metric import surface_dice as sd
from vesukit.metric import topology, voi

TOLERANCE = 2.0
SPACING = (1.0, 1.0, 1.0)
VOI_ALPHA = 0.3
WEIGHTS = {"topo": 0.30, "surface_dice": 0.35, "voi": 0.35}
TOPO_WEIGHTS = (0.34, 0.33, 0.33)
IGNORE_LABEL = 2


@dataclass(frozen=True)
class VolumeScore:
    score: float
    toposcore: float
    topo_counts: dict  # {0: (m, p, g), 1: ..., 2: ...}
    surface_dice: float
    voi_score: float
    voi_split: float
    voi_merge: float
    timings: dict = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict:
        """Keys exactly as metric-vectors/expected.json."""
        return {
            "score": self.score,
            "toposcore": self.toposcore,
            "topo_counts": {str(k): list(v) for k, v in sorted(self.topo_counts.items())},
            "surface_dice": self.surface_dice,
            "voi_score": self.voi_score,
            "voi_split": self.voi_split,
            "voi_merge": self.voi_merge,
        }

    @classmethod
    def from_json(cls, data: dict) -> VolumeScore:
        return cls(
            score=float(data["score"]), toposcore=float(data["toposcore"]),
            topo_counts={int(k): tuple(int(x) for x in v)
                         for k, v in data["topo_counts"].items()},
            surface_dice=float(data["surface_dice"]), voi_score=float(data["voi_score"]),
            voi_split=float(data["voi_split"]), voi_merge=float(data["voi_merge"]))


def _check_volume(array: np.ndarray, what: str, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise VolumeError(f"{name}: the {what} has shape {array.shape}, expected a 3D (Z,Y,X) "
                          "volume; write one TIFF page per Z slice.")
    return array


def _binary(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        return np.nan_to_num(array, nan=0.0) != 0
    return array != 0


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class PreparedLabel:
    """A label with everything that depends only on it computed once.

    ``PreparedLabel(label).score(pred)`` equals ``score_volume(pred, label)``; calibration
    calls ``score`` many times per label, so the label's octant Betti data, cavity labelling,
    surfels with their window codes, and 26-components are kept here.
    """

    def __init__(self, label: np.ndarray, *, name: str = "label", workers: int = 1):
        label = _check_volume(label, "label", name)
        self.name = name
        self.shape = label.shape
        self.keep = label != IGNORE_LABEL
        self.gt = _binary(label) & self.keep
        self.workers = workers
        blocks = [self.gt[s] for s in topology.octant_slices(self.shape)]
        if workers <= 1:
            self.gt_surface = sd.surface_of(self.gt)
            self.gt_runs = voi.fg_runs(self.gt)
            self.gt_blocks = [topology.InputBlock.build(b) for b in blocks]
        else:
            # The three parts are independent: one pool runs them side by side.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                f_surface = pool.submit(sd.surface_of, self.gt)
                f_runs = pool.submit(voi.fg_runs, self.gt)
                f_blocks = [pool.submit(topology.InputBlock.build, b) for b in blocks]
                self.gt_surface = f_surface.result()
                self.gt_runs = f_runs.result()
                self.gt_blocks = [f.result() for f in f_blocks]

    def score(self, pred: np.ndarray, *, workers: int | None = None) -> VolumeScore:
        pred = _check_volume(pred, "prediction", self.name)
        if pred.shape != self.shape:
            raise VolumeError(f"{self.name}: prediction shape {pred.shape} differs from the "
                              f"label shape {self.shape}; predict on the full volume.")
        workers = self.workers if workers is None else workers
        timings = topology.Timings()
        t0 = time.perf_counter()
        pred_bin = _binary(pred)
        pred_bin &= self.keep

        def surface_task():
            return sd.surface_dice_from(self.gt_surface, sd.surface_of(pred_bin),
                                        tolerance=TOLERANCE, spacing=SPACING)

        def voi_task():
            return voi.voi_from_runs(self.gt_runs, voi.fg_runs(pred_bin))

        octants = [(pred_bin[s], g)
                   for s, g in zip(topology.octant_slices(self.shape), self.gt_blocks)]
        if workers <= 1:
            surface = timings.timed("surface_dice", surface_task)
            split, merge = timings.timed("voi", voi_task)
            parts = [topology.octant_task(b, g, timings) for b, g in octants]
        else:
            # One pool for everything: the kernels release the GIL, so octants, surface
            # Dice and VOI overlap.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                f_octs = [pool.submit(topology.octant_task, b, g, timings) for b, g in octants]
                f_sd = pool.submit(timings.timed, "surface_dice", surface_task)
                f_voi = pool.submit(timings.timed, "voi", voi_task)
                parts = [f.result() for f in f_octs]
                surface = f_sd.result()
                split, merge = f_voi.result()
        counts = topology.sum_counts(parts)
        vscore = voi.voi_score(split, merge, VOI_ALPHA)
        toposcore = topology.topo_score(counts, TOPO_WEIGHTS)
        timings.seconds["wall"] = time.perf_counter() - t0

        score = (WEIGHTS["topo"] * toposcore + WEIGHTS["surface_dice"] * surface
                 + WEIGHTS["voi"] * vscore)
        score = float(min(max(score, 0.0), 1.0))
        return VolumeScore(score=score, toposcore=float(toposcore), topo_counts=counts,
                           surface_dice=float(surface), voi_score=float(vscore),
                           voi_split=float(split), voi_merge=float(merge),
                           timings=dict(timings.seconds))


    def bound(self, pred: np.ndarray) -> ScoreBound:
        """An upper bound on ``score(pred).score``, at a fraction of its cost.

        Everything is computed exactly except m_1, the dimension-1 matches, whose two image
        reductions per block are most of the scorer's time: m_1 is bounded per block by
        min(p_1, g_1) (a match cannot exceed either Betti number), and the topology F1 grows
        with m_1. Calibration screens candidates with it and runs :meth:`score` only where
        the bound could change a decision.
        """
        pred = _check_volume(pred, "prediction", self.name)
        if pred.shape != self.shape:
            raise VolumeError(f"{self.name}: prediction shape {pred.shape} differs from the "
                              f"label shape {self.shape}; predict on the full volume.")
        pred_bin = _binary(pred)
        pred_bin &= self.keep
        surface = sd.surface_dice_from(self.gt_surface, sd.surface_of(pred_bin),
                                       tolerance=TOLERANCE, spacing=SPACING)
        split, merge = voi.voi_from_runs(self.gt_runs, voi.fg_runs(pred_bin))
        counts = topology.sum_counts(
            topology.match_block(topology.InputBlock.build(pred_bin[s]), g, bound_dim1=True)
            for s, g in zip(topology.octant_slices(self.shape), self.gt_blocks))
        toposcore = topology.topo_score(counts, TOPO_WEIGHTS)
        vscore = voi.voi_score(split, merge, VOI_ALPHA)
        score = (WEIGHTS["topo"] * toposcore + WEIGHTS["surface_dice"] * surface
                 + WEIGHTS["voi"] * vscore)
        return ScoreBound(score=float(min(max(score, 0.0), 1.0)), toposcore=float(toposcore),
                          topo_counts=counts, surface_dice=float(surface),
                          voi_score=float(vscore))


@dataclass(frozen=True)
class ScoreBound:
    """:meth:`PreparedLabel.bound`: ``score`` and ``toposcore`` are upper bounds (``topo_counts``
    is exact but for m_1, its bound); ``surface_dice`` and ``voi_score`` are the exact values."""

    score: float
    toposcore: float
    topo_counts: dict
    surface_dice: float
    voi_score: float


def score_volume(pred: np.ndarray, label: np.ndarray, *, workers: int = 1,
                 name: str = "volume") -> VolumeScore:
    """The leaderboard score of one prediction against its 0/1/2 label."""
    label = _check_volume(label, "label", name)
    pred = _check_volume(pred, "prediction", name)
    if pred.shape != label.shape:
        raise VolumeError(f"{name}: prediction shape {pred.shape} differs from the label "
                          f"shape {label.shape}; predict on the full volume.")
    return PreparedLabel(label, name=name, workers=workers).score(pred)
