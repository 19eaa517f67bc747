"""`vesukit calibrate` and `vesukit ablate` as library calls: labelled volumes from a
competition root, one cached ensemble pass, then the search or the ablation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from vesukit.calibrate.labels import labelled_ids, prepared_labels
from vesukit.data import atomic_write_bytes
from vesukit.infer.settings import DEFAULT_OVERLAP


def cached_ensemble_pass(data, teachers, cache_dir, volumes: int | None, device: str,
                         tta: str, overlap: float, dtype: str,
                         progress: Callable[[str], None] | None = None):
    """(root, ids, cache): the labelled volumes and their cached teacher maps."""
    from vesukit.calibrate.cache import build_cache
    from vesukit.data import find_competition_root
    from vesukit.devices import resolve_device
    from vesukit.teachers import load_manifest

    root = find_competition_root(data)
    ids = labelled_ids(root, volumes)
    manifest = load_manifest(teachers)
    cache = build_cache(cache_dir, root, manifest, ids, device=str(resolve_device(device)),
                        tta=tta, overlap=overlap, dtype=dtype, progress=progress)
    return root, ids, cache


def run_calibration(data, teachers, out, *, volumes: int | None = None, cache_dir=None,
                    device: str = "auto", tta: str = "none", overlap: float = DEFAULT_OVERLAP,
                    holdout: float = 0.25, dtype: str = "float16", top_k: int = 3,
                    grid=None, winners: bool = False,
                    progress: Callable[[str], None] | None = None,
                    exhaustive: bool = False, scheduler: str = "local",
                    workers: int | None = None):
    """Build (or reuse) the cache, search, write ``out``; returns the CalibrationOutcome.

    The search runs on :class:`~vesukit.calibrate.engine.SearchEngine` (screened unless
    ``exhaustive``; on Dask unless ``scheduler`` is "none")."""
    from vesukit.calibrate.search import (
        RULE_GRID,
        LabelledVolume,
        calibrate_volumes,
        postprocess_options,
    )

    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir else out.parent / "calibration-cache"
    root, ids, cache = cached_ensemble_pass(data, teachers, cache_dir, volumes, device, tta,
                                            overlap, dtype, progress)
    labels = prepared_labels(root, ids, progress)
    prepared = [LabelledVolume(i, cache.ensemble(i), labels[i]) for i in ids]
    options = postprocess_options(_median_voxels(prepared), winners=winners)
    from vesukit.calibrate.engine import SearchEngine, dask_client

    with dask_client(scheduler, workers, progress) as client:
        engine = SearchEngine(prepared, exhaustive=exhaustive, client=client, progress=progress)
        outcome = calibrate_volumes(prepared, holdout=holdout, grid=grid or RULE_GRID,
                                    options=options, top_k=top_k, progress=progress,
                                    engine=engine)
    data_out = outcome.to_json()
    data_out["evidence"]["cache"] = str(cache_dir)
    data_out["evidence"]["tta"] = tta
    data_out["tta"] = tta  # predict and the notebook run the TTA the decision was fitted with
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(data_out, indent=1).encode())
    return outcome


def run_ablation(data, teachers, *, volumes: int | None = None, cache_dir=None,
                 calibration=None, device: str = "auto", tta: str = "none",
                 overlap: float = DEFAULT_OVERLAP, dtype: str = "float16", json_out="ablation.json",
                 progress: Callable[[str], None] | None = None):
    """Per-teacher and leave-one-out scores from the cache; writes ``json_out`` if given.

    The default cache folder is the one `vesukit calibrate` uses when its output sits in the
    same folder, so calibrate and ablate share one ensemble pass.
    """
    from vesukit.calibrate.ablate import ablate
    from vesukit.decide import load_calibration

    base = Path(json_out).parent if json_out is not None else Path(".")
    cache_dir = Path(cache_dir) if cache_dir else base / "calibration-cache"
    root, ids, cache = cached_ensemble_pass(data, teachers, cache_dir, volumes, device, tta,
                                            overlap, dtype, progress)
    labels = prepared_labels(root, ids, progress)
    result = ablate(cache, labels, load_calibration(calibration), progress=progress)
    if json_out is not None:
        json_out = Path(json_out)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(json_out, json.dumps(result.to_json(), indent=1).encode())
    return result


def _median_voxels(volumes) -> int:
    import numpy as np

    return int(np.median([np.prod(np.shape(v.maps.mean)) for v in volumes]))


def run_calibration_from_maps(maps_dir, data, out, *, volumes: int | None = None, folds: int = 3,
                              top_k: int = 3, grid=None, winners: bool = True,
                              budget_hours: float | None = None,
                              progress: Callable[[str], None] | None = None,
                              exhaustive: bool = False, scheduler: str = "local",
                              workers: int | None = None):
    """Saved maps + labels -> out-of-fold search -> ``out``; returns the OutOfFold result.

    The search runs on :class:`~vesukit.calibrate.engine.SearchEngine` (screened unless
    ``exhaustive``; on Dask unless ``scheduler`` is "none"). With ``budget_hours``, one
    mask of the first volume is timed (threshold, the longest chain, the scorer as the search
    uses it) and the search takes only as many volumes (the first ones, in id order) as the
    upper bound on its masks allows within the budget; the result says so.
    """
    from vesukit.calibrate.engine import SearchEngine, dask_client, worker_count
    from vesukit.calibrate.maps import map_volumes
    from vesukit.calibrate.oof import out_of_fold
    from vesukit.calibrate.search import RULE_GRID, postprocess_options
    from vesukit.data import find_competition_root

    out = Path(out)
    root = find_competition_root(data)
    prepared = map_volumes(maps_dir, root, volumes, progress)
    options = postprocess_options(_median_voxels(prepared), winners=winners, disagreement=False)
    # saved maps carry only the mean: rules that read the disagreement have nothing to use
    grid = {k: v for k, v in (grid or RULE_GRID).items() if k != "uncertainty"} or RULE_GRID
    with dask_client(scheduler, workers, progress) as client:
        n_workers = worker_count(client)
        budget, take, planned = _search_budget(prepared, grid, options, top_k, folds, exhaustive,
                                               budget_hours, n_workers, progress)
        prepared = prepared[:take]
        engine = SearchEngine(prepared, exhaustive=exhaustive, client=client, progress=progress)
        engine.plan(planned * len(prepared))
        oof = out_of_fold(prepared, folds, grid, options, top_k, progress, engine=engine)
    oof.budget = budget
    data_out = oof.final.calibration().to_json()
    data_out["evidence"] = {"maps": str(maps_dir), "volumes": [v.volume_id for v in prepared],
                            "budget": budget, "out_of_fold": oof.to_json(), **oof.final.to_json(),
                            "search_engine": {"exhaustive": exhaustive, "scheduler": scheduler,
                                              "workers": n_workers,
                                              "candidates_rescored_exactly": engine.rescored,
                                              **engine.work}}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(data_out, indent=1).encode())
    return oof


def _search_budget(prepared, grid, options, top_k, folds, exhaustive, budget_hours, workers,
                   progress):
    """(budget record or None, volumes to search, masks planned per volume).

    Masks per volume are bounded by the staged search's candidates
    (:func:`~vesukit.calibrate.oof.masks_per_volume_bound`); a screened search may rescore each
    with the full scorer, so its bound counts every mask twice, screened and exact. Volumes
    are spread over the workers.
    """
    from vesukit.calibrate.engine import time_one_mask
    from vesukit.calibrate.oof import budget_volumes, masks_per_volume_bound
    from vesukit.calibrate.search import Candidate
    from vesukit.decide import ThresholdRule

    bound = masks_per_volume_bound(grid, options, top_k, folds)
    planned = bound if exhaustive else 2 * bound
    if budget_hours is None:
        return None, len(prepared), planned
    longest = tuple({"step": slot, **next(o for o in reversed(opts) if o is not None)}
                    for slot, opts in options.items() if any(o is not None for o in opts))
    candidate = Candidate(ThresholdRule(), longest)
    exact_s = time_one_mask(prepared[0], candidate, exact=True)
    screen_s = 0.0 if exhaustive else time_one_mask(prepared[0], candidate, exact=False)
    per_mask = (exact_s + screen_s) / workers  # one candidate on one volume, at most
    take = budget_volumes(len(prepared), per_mask, bound, budget_hours * 3600)
    budget = {"hours": budget_hours, "seconds_per_mask_measured": per_mask,
              "seconds_per_exact_mask": exact_s, "seconds_per_screened_mask": screen_s,
              "workers": workers, "masks_per_volume_bound": bound,
              "volumes_available": len(prepared), "volumes_searched": take,
              "estimated_hours_at_most": take * bound * per_mask / 3600}
    if progress:
        progress(f"budget {budget_hours} h: {screen_s:.2f} s per screened mask + {exact_s:.2f} s "
                 f"exact, at most {bound} candidates per volume on {workers} worker(s) -> "
                 f"searching {take} of {len(prepared)} volume(s)")
    return budget, take, planned
