"""What a calibration search costs, counted before it runs: the masks it makes at most, by kind
and by where they are scored, and the seconds they take at rates timed on one volume.

Both ways to calibrate use it, for the progress line's totals and for ``--budget-hours``:

- from saved maps, the out-of-fold search (``oof.py``): every volume is searched in ``folds``
  searches and judged once;
- from teachers, one search on the fit volumes, then the held-back check (``search.py``).

A mask's cost depends on where it is scored. On a sample (``sample.py``) a search screens and
ablates on the sampled volumes' crops, the ranked search's finalists are scored on the sampled
volumes whole, and judging is always on whole volumes: a whole 320^3 mask costs tens of crop
masks, so pricing them alike would make the budget's "at most" false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MaskCounts:
    """Masks one search makes at most.

    Per searched volume (each sampled one, on a sample): ``screened`` bounds and ``exact`` full
    scores where the search runs (the volume's crop on a sample), and ``exact_whole`` full
    scores on the whole volume (a ranked sample's finalists). Per judged volume: ``judged``
    full scores and ``judged_bounds`` bounds on the whole volume.
    """

    screened: int
    exact: int
    exact_whole: int = 0
    judged: int = 0
    judged_bounds: int = 0

    def totals(self, searched: int, judged: int) -> tuple[int, int]:
        """(screened, exact) masks of ``searched`` searched and ``judged`` judged volumes."""
        return (searched * self.screened + judged * self.judged_bounds,
                searched * (self.exact + self.exact_whole) + judged * self.judged)

    def seconds(self, searched: int, judged: int, rates: MaskSeconds) -> float:
        """Worker-seconds at most, at ``rates``."""
        return (searched * (self.screened * rates.screened + self.exact * rates.exact
                            + self.exact_whole * rates.whole)
                + judged * (self.judged * rates.whole + self.judged_bounds * rates.whole_bound))


@dataclass(frozen=True)
class MaskSeconds:
    """Seconds of one mask of the longest chain: screened and exact where the search runs
    (a crop on a sample), and exact and bounded on a whole volume."""

    screened: float
    exact: float
    whole: float
    whole_bound: float = 0.0


def out_of_fold_masks(grid: Mapping[str, Sequence[Mapping]], options: Mapping[str, list],
                      top_k: int, folds: int, whole: int, exhaustive: bool, finalists: int,
                      sampled: bool, crop: int) -> MaskCounts:
    """The out-of-fold search's masks (``sampled``: on a sample cutting ``crop``^3 crops).

    Unsampled, the judging is inside the per-volume bounds
    (:func:`~vesukit.calibrate.oof.exact_masks_per_volume_bound`). On a sample, every volume
    is judged by its fold's winner and baseline, whole; the ablation runs on the crops.
    """
    from vesukit.calibrate.oof import exact_masks_per_volume_bound, masks_per_volume_bound

    bound = masks_per_volume_bound(grid, options, top_k, folds, whole=whole)
    screened = 0 if exhaustive else bound
    if exhaustive or not finalists:
        return MaskCounts(screened, bound, 0, 2 if sampled else 0)
    exact = exact_masks_per_volume_bound(options, folds, finalists)
    if not (sampled and crop > 0):
        return MaskCounts(screened, exact, 0, 2 if sampled else 0)
    finalists_whole = max(folds, 1) * (finalists + 2)
    return MaskCounts(screened, exact - finalists_whole, finalists_whole, 2)


def held_back_masks(grid: Mapping[str, Sequence[Mapping]], options: Mapping[str, list],
                    top_k: int, whole: int, exhaustive: bool, finalists: int, sampled: bool,
                    crop: int) -> MaskCounts:
    """One search on the fit volumes, then the held-back check on each held volume, whole
    (:func:`~vesukit.calibrate.search.held_back_masks_per_volume`)."""
    from vesukit.calibrate.oof import masks_per_volume_bound
    from vesukit.calibrate.search import held_back_masks_per_volume

    bound = masks_per_volume_bound(grid, options, top_k, 1, whole=whole)
    judged, judged_bounds = held_back_masks_per_volume(grid)
    if exhaustive or not finalists:
        return MaskCounts(0 if exhaustive else bound, bound, 0, judged, judged_bounds)
    if sampled and crop > 0:
        return MaskCounts(bound, 0, finalists + 2, judged, judged_bounds)
    return MaskCounts(bound, finalists + 2, 0, judged, judged_bounds)


@dataclass(frozen=True)
class SearchPlan:
    """The masks a search of the first n volumes (in id order) makes at most: ``counts`` per
    searched and per judged volume, ``searched(n)`` and ``judged(n)`` how many of each, and the
    ``sample`` the search screens on (None: none)."""

    counts: MaskCounts
    searched: Callable[[int], int]
    judged: Callable[[int], int]
    sample: object = None

    def masks(self, n: int) -> tuple[int, int]:
        """(screened, exact) masks: the progress line's plan."""
        return self.counts.totals(self.searched(n), self.judged(n))

    def seconds(self, n: int, rates: MaskSeconds, workers: int) -> float:
        """Wall seconds at most, spread over ``workers``."""
        return self.counts.seconds(self.searched(n), self.judged(n), rates) / max(workers, 1)


def out_of_fold_plan(ids: Sequence[str], shapes: Sequence[Sequence[int]], grid, options,
                     top_k: int, folds: int, whole: int, exhaustive: bool, finalists: int,
                     sample) -> SearchPlan:
    """From saved maps: on a sample the searches run on the sampled volumes, and every volume
    is judged whole; unsampled, each volume's judging is inside its own bounds."""
    sample = sample.used_for(shapes, exhaustive) if sample is not None else None
    counts = out_of_fold_masks(grid, options, top_k, folds, whole, exhaustive, finalists,
                               sample is not None, sample.crop if sample is not None else 0)
    if sample is None:
        return SearchPlan(counts, lambda n: n, lambda n: 0)
    return SearchPlan(counts, lambda n: len(sample.ids(ids[:n])), lambda n: n, sample)


def held_back_plan(ids: Sequence[str], shapes: Sequence[Sequence[int]], grid, options,
                   top_k: int, whole: int, holdout: float, exhaustive: bool, finalists: int,
                   sample) -> SearchPlan:
    """From teachers: one search on the fit volumes (the sampled ones among them on a
    sample), then the held-back check on every held volume, whole."""
    from vesukit.calibrate.search import split_volumes

    sample = sample.used_for(shapes, exhaustive) if sample is not None else None
    counts = held_back_masks(grid, options, top_k, whole, exhaustive, finalists,
                             sample is not None, sample.crop if sample is not None else 0)

    def searched(n: int) -> int:
        fit, _ = split_volumes(ids[:n], holdout)
        return len(sample.ids(fit)) if sample is not None else len(fit)

    return SearchPlan(counts, searched, lambda n: len(split_volumes(ids[:n], holdout)[1]),
                      sample)


def time_masks(volume, options: Mapping[str, list], exhaustive: bool, sample,
               rules: Sequence = (), whole_bounds: bool = False) -> MaskSeconds:
    """Time one mask of the longest chain on ``volume`` from scratch: screened and exact on
    its crop when ``sample`` cuts crops, exact whole and (``whole_bounds``) bounded whole.
    The volume is released after."""
    from vesukit.calibrate.engine import time_one_mask
    from vesukit.calibrate.sample import CropOf, make_crop
    from vesukit.calibrate.search import Candidate
    from vesukit.decide import ThresholdRule

    longest = tuple({"step": slot, **next(o for o in reversed(opts) if o is not None)}
                    for slot, opts in options.items() if any(o is not None for o in opts))
    candidate = Candidate(ThresholdRule(), longest)
    whole = time_one_mask(volume, candidate, exact=True)
    whole_bound = time_one_mask(volume, candidate, exact=False) if whole_bounds else 0.0
    searched_on = volume
    if sample is not None and sample.crop > 0:
        searched_on = make_crop(CropOf(volume, sample.crop), list(rules) + [candidate])
    exact = whole if searched_on is volume else time_one_mask(searched_on, candidate, exact=True)
    screened = 0.0 if exhaustive else time_one_mask(searched_on, candidate, exact=False)
    volume.release()  # timed here; searched and judged where the engine runs it
    return MaskSeconds(screened, exact, whole, whole_bound)


def volumes_within(hours: float, available: int, cost: Callable[[int], float],
                   minimum: int = 2) -> int:
    """The most volumes (the first ones, in id order; at least ``minimum``) whose search
    ``cost(n)`` (wall seconds, growing with n) fits ``hours``."""
    take = available
    while take > minimum and cost(take) > hours * 3600:
        take -= 1
    return take


def budget_record(hours: float, plan: SearchPlan, rates: MaskSeconds, workers: int,
                  available: int, take: int, bound: int) -> dict:
    """What the budget planned, as calibration.json's evidence records it."""
    counts, wall = plan.counts, plan.seconds(take, rates, workers)
    return {"hours": hours, "seconds_per_volume_at_most": wall / max(take, 1),
            "seconds_per_exact_mask": rates.exact, "seconds_per_screened_mask": rates.screened,
            "seconds_per_judged_whole_mask": rates.whole,
            "seconds_per_judged_whole_bound": rates.whole_bound, "workers": workers,
            "masks_per_volume_bound": bound,
            "screened_masks_per_volume_bound": counts.screened,
            "exact_masks_per_volume_bound": counts.exact + counts.exact_whole,
            "exact_whole_masks_per_volume_bound": counts.exact_whole,
            "whole_masks_per_judged_volume": counts.judged,
            "whole_bounds_per_judged_volume": counts.judged_bounds,
            "volumes_available": available, "volumes_searched": take,
            "screened_volumes": plan.searched(take), "judged_volumes": plan.judged(take),
            "estimated_hours_at_most": wall / 3600}


def budget_line(record: dict) -> str:
    """The progress line saying what the budget allows."""
    b = record
    return (f"budget {b['hours']} h: at most {b['screened_masks_per_volume_bound']} screened "
            f"masks ({b['seconds_per_screened_mask']:.2f} s each) and "
            f"{b['exact_masks_per_volume_bound']} exact ({b['seconds_per_exact_mask']:.2f} s "
            "where searched, "
            f"{b['seconds_per_judged_whole_mask']:.2f} s whole) per searched volume, "
            f"{b['whole_masks_per_judged_volume']} whole-volume masks per judged volume, on "
            f"{b['workers']} worker(s) -> searching {b['volumes_searched']} of "
            f"{b['volumes_available']} volume(s)")
