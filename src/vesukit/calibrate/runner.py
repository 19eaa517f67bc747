"""`vesukit calibrate` and `vesukit ablate` as library calls: labelled volumes from a
competition root, one cached ensemble pass, then the search or the ablation."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from vesukit.calibrate.labels import labelled_ids, prepared_labels
from vesukit.data import atomic_write_bytes


@dataclass
class EnsemblePass:
    """The labelled volumes, their cached maps of the active teachers, and the run settings
    (resolved as predict resolves them) the maps were made with."""

    root: Path
    ids: list[str]
    cache: object              # vesukit.calibrate.cache.MapCache
    settings: object           # vesukit.run_settings.RunSettings
    manifest: object           # the teachers' manifest as declared


def cached_ensemble_pass(data, teachers, cache_dir, volumes: int | None, device: str,
                         tta: str | None, overlap: float | None, dtype: str,
                         progress: Callable[[str], None] | None = None,
                         calibration=None) -> EnsemblePass:
    """The active teachers' maps of the labelled volumes (``tta``/``overlap`` None: resolved
    as predict resolves them, from ``calibration`` if given, else the teachers' defaults)."""
    from vesukit.calibrate.cache import build_cache
    from vesukit.data import find_competition_root
    from vesukit.devices import resolve_device
    from vesukit.run_settings import active_manifest, resolve_run_settings
    from vesukit.teachers import load_manifest

    root = find_competition_root(data)
    ids = labelled_ids(root, volumes)
    manifest = load_manifest(teachers)
    settings = resolve_run_settings(manifest, calibration, tta=tta, overlap=overlap)
    if progress:
        for line in settings.lines(decision=calibration is not None):
            progress(line)
    cache = build_cache(cache_dir, root, active_manifest(manifest, calibration), ids,
                        device=str(resolve_device(device)), tta=dict(settings.tta),
                        overlap=settings.overlap, dtype=dtype, progress=progress)
    return EnsemblePass(root, ids, cache, settings, manifest)


def run_calibration(data, teachers, out, *, volumes: int | None = None, cache_dir=None,
                    device: str = "auto", tta: str | None = None, overlap: float | None = None,
                    holdout: float = 0.25, dtype: str = "float16", top_k: int = 3,
                    grid=None, winners: bool = False, fusion: bool = False,
                    progress: Callable[[str], None] | None = None,
                    exhaustive: bool = False, scheduler: str = "local",
                    workers: int | None = None, finalists: int | None = None, sample=None):
    """Build (or reuse) the cache, search, write ``out``; returns what was chosen (Calibrated).

    With ``fusion``, the teachers' weights and mode are fitted (with the first search's rule),
    then the rule and chain are searched again on the fused maps, so the file holds a rule,
    chain and fusion scored together, as predict applies them. Each search runs on
    :class:`~vesukit.calibrate.engine.SearchEngine` (ranked with ``finalists``, default
    :data:`~vesukit.calibrate.engine.FINALISTS`; screened with 0; every mask exact if
    ``exhaustive``; on Dask unless ``scheduler`` is "none").
    """
    from vesukit.calibrate.labels import LabelFile
    from vesukit.calibrate.maps import CachedEnsemble
    from vesukit.calibrate.search import (
        RULE_GRID,
        LabelledVolume,
        calibrate_volumes,
        postprocess_options,
        whole_chains,
    )
    from vesukit.data import volume_path
    from vesukit.run_settings import fitted_on

    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir else out.parent / "calibration-cache"
    run = cached_ensemble_pass(data, teachers, cache_dir, volumes, device, tta, overlap, dtype,
                               progress)
    # maps and labels are made where they are scored (and a judged volume released after):
    # a hundred 320^3 ensembles and prepared labels would not fit in memory at once
    labels = {i: LabelFile(volume_path(run.root, i, "train_labels"), i) for i in run.ids}
    prepared = [LabelledVolume(i, CachedEnsemble(run.cache.folder, i), labels[i])
                for i in run.ids]
    # one teacher has no disagreement: a rule or step reading it would silently do nothing
    disagreement = len(run.settings.teachers) > 1
    voxels = _median_voxels(prepared)
    options = postprocess_options(voxels, winners=winners, disagreement=disagreement)
    whole = whole_chains(voxels, winners=winners)
    grid = without_disagreement(grid or RULE_GRID, progress) if not disagreement else grid

    from vesukit.calibrate.engine import FINALISTS, SearchEngine, dask_client, worker_count
    from vesukit.calibrate.sample import SearchSample
    from vesukit.calibrate.search import rule_candidates, split_volumes

    sample = SearchSample() if sample is None else sample
    rules = rule_candidates(grid or RULE_GRID) + list(whole)
    settings, block, engines = run.settings, None, []
    with dask_client(scheduler, workers, progress) as client:
        n_workers = worker_count(client)

        def searched(volumes):
            # the sample is spread over the fit volumes, the ones the search runs on
            fit_ids, held_ids = split_volumes([v.volume_id for v in volumes], holdout)
            engine = SearchEngine(volumes, exhaustive=exhaustive, client=client, progress=progress,
                                  finalists=FINALISTS if finalists is None else finalists,
                                  sample=sample, rules=rules, sample_among=fit_ids)
            if engine.sample is not None and progress:
                progress(f"search sample: screening on {len(engine.sample.ids(fit_ids))} of "
                         f"{len(fit_ids)} fit volume(s) ({engine.sample.describe()}); the "
                         "held-back volumes are scored whole")
            engine.plan(*_planned_with_holdout(engine, fit_ids, held_ids, grid or RULE_GRID,
                                               options, top_k, len(whole)))
            engines.append(engine)
            return calibrate_volumes(volumes, holdout=holdout, grid=grid or RULE_GRID,
                                     options=options, top_k=top_k, progress=progress, engine=engine,
                                     whole=whole)

        outcome = searched(prepared)
        if fusion:
            from vesukit.calibrate.fusion import fit_fusion, fuse_weights

            block = fit_fusion(run.cache, labels, outcome.fit_ids,
                               outcome.search.winner.candidate.rule, progress)
            weights = fuse_weights(run.cache, block)
            if progress:
                progress(f"rule and chain searched again on the fused maps ({block['mode']} mean)")
            first = outcome.search.winner
            outcome = searched([LabelledVolume(i, CachedEnsemble(run.cache.folder, i, weights,
                                                                 block["mode"]),
                                               labels[i]) for i in run.ids])
            # the first search only chose the rule the fusion was fitted with; the file's
            # decision is the second search's, on the fused maps
            block["evidence"]["rule_and_chain_before_fusion"] = {
                "decision": first.candidate.describe(), "mean_on_fit_volumes": first.mean}
            settings = replace(settings, fusion_mode=block["mode"],
                               weights={n: w for n, w in block["weights"].items() if w > 0})
    data_out = outcome.to_json()
    data_out["evidence"]["cache"] = str(cache_dir)
    engine = engines[-1]  # the search that chose the decision written
    data_out["evidence"]["search_engine"] = engine_evidence(engine, exhaustive, scheduler,
                                                            n_workers)
    data_out["evidence"]["tta"] = dict(settings.tta)
    # predict and the notebook run the TTA, overlap and fusion the decision was fitted with
    data_out["tta"] = settings.run_tta
    # predict rounds each teacher's map as the cache stored it, so it decides on these numbers
    data_out["fitted_on"] = {**fitted_on(settings, run.manifest), "precision": {"teacher_maps": dtype}}
    out.parent.mkdir(parents=True, exist_ok=True)
    if block is not None:
        from vesukit.calibrate.fusion import write_fused_manifest

        block["manifest"] = str(write_fused_manifest(run.manifest, block, out))
        data_out["fusion"] = block
    atomic_write_bytes(out, json.dumps(data_out, indent=1).encode())
    return Calibrated(outcome, block, settings)


def _planned_with_holdout(engine, fit_ids, held_ids, grid, options, top_k,
                          whole: int) -> tuple[int, int]:
    """The (screened, exact) masks one search from the teachers makes at most (the progress
    line's totals): the
    staged search on the fit volumes (on the sample's crops where it samples; the ranked
    search's finalists and the best fixed threshold, with and without its chain, exact), then
    the held-back check on every held volume, whole: the winner, the best fixed threshold, and
    every fixed threshold with the winner's chain."""
    from vesukit.calibrate.oof import masks_per_volume_bound

    bound = masks_per_volume_bound(grid, options, top_k, 1, whole=whole)
    screened = 0 if engine.exhaustive else bound
    exact = bound if engine.exhaustive or not engine.finalists else engine.finalists + 2
    searched = len(engine.sample.ids(fit_ids)) if engine.sample is not None else len(fit_ids)
    check = 2 + len(grid.get("fixed", []))
    return searched * screened, searched * exact + len(held_ids) * check


def engine_evidence(engine, exhaustive: bool, scheduler: str, workers: int) -> dict:
    """How the search that chose the decision ran, and the work it did (both paths write it)."""
    sample = None if engine.sample is None else {
        "volumes": engine.sample.volumes, "crop": engine.sample.crop,
        "screened_volumes": engine.screened_ids}
    return {"mode": engine.mode, "finalists": engine.finalists, "exhaustive": exhaustive,
            "scheduler": scheduler, "workers": workers, "masks_planned": engine.planned,
            "sample": sample, "candidates_rescored_exactly": engine.rescored, **engine.work}


@dataclass
class Calibrated:
    """What `calibrate` chose: the final search (on the fused maps when a fusion was fitted),
    the fusion block (or None) and the run settings the maps were made with."""

    outcome: object            # vesukit.calibrate.search.CalibrationOutcome
    fusion: dict | None
    settings: object           # vesukit.run_settings.RunSettings


def run_ablation(data, teachers, *, volumes: int | None = None, cache_dir=None,
                 calibration=None, device: str = "auto", tta: str | None = None,
                 overlap: float | None = None, dtype: str = "float16", json_out="ablation.json",
                 progress: Callable[[str], None] | None = None):
    """Per-teacher and leave-one-out scores from the cache; writes ``json_out`` if given.

    The default cache folder is the one `vesukit calibrate` uses when its output sits in the
    same folder, so calibrate and ablate share one ensemble pass.
    """
    from vesukit.calibrate.ablate import ablate
    from vesukit.decide import load_calibration

    base = Path(json_out).parent if json_out is not None else Path(".")
    cache_dir = Path(cache_dir) if cache_dir else base / "calibration-cache"
    decision = load_calibration(calibration)
    run = cached_ensemble_pass(data, teachers, cache_dir, volumes, device, tta, overlap, dtype,
                               progress, decision if calibration is not None else None)
    labels = prepared_labels(run.root, run.ids, progress)
    result = ablate(run.cache, labels, decision, progress=progress)
    if json_out is not None:
        json_out = Path(json_out)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(json_out, json.dumps(result.to_json(), indent=1).encode())
    return result


def without_disagreement(grid, progress=None):
    """The rule grid minus the rules that read the teachers' disagreement (maps that carry
    none: saved maps, or one teacher); says so when one was asked for."""
    from vesukit.errors import UsageError

    kept = {name: params for name, params in grid.items() if name != "uncertainty"}
    if "uncertainty" in grid and progress:
        progress("rule 'uncertainty' not searched: these maps carry no disagreement between "
                 "teachers (saved maps, or a single teacher)")
    if not kept:
        raise UsageError("--rules uncertainty: it reads the teachers' disagreement, which these "
                         "maps do not carry (saved maps, or a single teacher); choose another rule.")
    return kept


def maps_settings(made: dict | None, maps_dir) -> dict:
    """What a calibration fitted on saved maps carries so predict makes the same maps: the
    TTA, overlap and fusion of the run that saved them (its maps.json), and ``fitted_on``.
    Maps from elsewhere (nnU-Net, a TIFF) carry no such record: only their source is noted."""
    from vesukit.decide.calibration import TTA_CHOICES

    if made is None:
        return {"fitted_on": {"maps": str(maps_dir)}}
    tta = dict(made.get("tta") or {})
    fusion = dict(made.get("fusion") or {})
    out = {"fitted_on": {**made, "maps": str(maps_dir)}}
    if tta:
        out["tta"] = max(tta.values(), key=TTA_CHOICES.index)
    if fusion.get("weights"):
        out["fusion"] = {"mode": fusion.get("mode", "probability"), "weights": fusion["weights"],
                         "applied_by_predict": "the fusion the saved maps were made with"}
    return out


def _median_voxels(volumes) -> int:
    """The median voxels of the whole volumes (a chain's sizes are scaled to them, also when
    the search screens on crops)."""
    import numpy as np

    return int(np.median([np.prod(getattr(v.maps, "shape", None) or np.shape(v.maps.mean))
                          for v in volumes]))


def run_calibration_from_maps(maps_dir, data, out, *, volumes: int | None = None, folds: int = 3,
                              top_k: int = 3, grid=None, winners: bool = True,
                              budget_hours: float | None = None,
                              progress: Callable[[str], None] | None = None,
                              exhaustive: bool = False, scheduler: str = "local",
                              workers: int | None = None, finalists: int | None = None,
                              sample=None):
    """Saved maps + labels -> out-of-fold search -> ``out``; returns the OutOfFold result.

    ``sample`` (:class:`~vesukit.calibrate.sample.SearchSample`, default: at most 16 volumes,
    centre 160^3 crops) is what the searches screen on when the volumes are more or bigger
    than that; the folds are judged on whole volumes either way.

    The search runs on :class:`~vesukit.calibrate.engine.SearchEngine` (ranked with
    ``finalists``, default :data:`~vesukit.calibrate.engine.FINALISTS`; screened with 0; every
    mask exact if ``exhaustive``; on Dask unless ``scheduler`` is "none"). With
    ``budget_hours``, one mask of the first volume is timed (threshold, the longest chain, the
    bound and the full scorer) and the search takes only as many volumes (the first ones, in
    id order) as the upper bound on its masks allows within the budget; the result says so.
    """
    from vesukit.calibrate.engine import FINALISTS

    finalists = FINALISTS if finalists is None else finalists
    from vesukit.calibrate.engine import SearchEngine, dask_client, worker_count
    from vesukit.calibrate.maps import map_volumes
    from vesukit.calibrate.oof import out_of_fold
    from vesukit.calibrate.sample import SearchSample
    from vesukit.calibrate.search import RULE_GRID, postprocess_options, rule_candidates, whole_chains
    from vesukit.data import find_competition_root
    from vesukit.run_settings import MADE_OTHERWISE, read_maps_provenance

    out = Path(out)
    root = find_competition_root(data)
    made = read_maps_provenance(maps_dir)
    made_otherwise = dict((made or {}).pop(MADE_OTHERWISE, None) or {})
    prepared = map_volumes(maps_dir, root, volumes, progress, left_out=made_otherwise)
    voxels = _median_voxels(prepared)
    options = postprocess_options(voxels, winners=winners, disagreement=False)
    whole = whole_chains(voxels, winners=winners)
    # saved maps carry only the mean: rules that read the disagreement have nothing to use
    grid = without_disagreement(grid or RULE_GRID, progress)
    sample = SearchSample() if sample is None else sample
    rules = rule_candidates(grid) + list(whole)
    with dask_client(scheduler, workers, progress) as client:
        n_workers = worker_count(client)
        budget, take, planned = _search_budget(prepared, grid, options, top_k, folds, exhaustive,
                                               finalists, budget_hours, n_workers, progress,
                                               whole=len(whole), sample=sample, rules=rules)
        prepared = prepared[:take]
        engine = SearchEngine(prepared, exhaustive=exhaustive, client=client, progress=progress,
                              finalists=finalists, sample=sample, rules=rules)
        if engine.sample is not None and progress:
            screened = len(engine.sample.ids(v.volume_id for v in prepared))
            progress(f"search sample: screening on {screened} of {len(prepared)} volume(s) "
                     f"({engine.sample.describe()}); folds judged on the whole volumes")
        engine.plan(*planned(len(prepared)))
        oof = out_of_fold(prepared, folds, grid, options, top_k, progress, engine=engine,
                          whole=whole)
    oof.budget = budget
    data_out = oof.final.calibration().to_json()
    data_out.update(maps_settings(made, maps_dir))
    data_out["evidence"] = {"maps": str(maps_dir), "left_out": made_otherwise,
                            "budget": budget, "out_of_fold": oof.to_json(), **oof.final.to_json(),
                            # every volume (the final search's own "volumes" are the crops it
                            # searched on when it searched on a sample)
                            "volumes": [v.volume_id for v in prepared],
                            "searched_on": sorted(oof.final.winner.scores),
                            "search_engine": engine_evidence(engine, exhaustive, scheduler,
                                                             n_workers)}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(data_out, indent=1).encode())
    return oof


def _search_budget(prepared, grid, options, top_k, folds, exhaustive, finalists, budget_hours,
                   workers, progress, whole: int = 0, sample=None, rules=()):
    """(budget record or None, volumes to search, (screened, exact) masks planned for n volumes).

    Masks per searched volume are bounded by the staged search's candidates
    (:func:`~vesukit.calibrate.oof.masks_per_volume_bound`), each screened unless
    ``exhaustive``; then the full scorer runs on every one of them (exhaustive, and at most so
    when screening with ``finalists`` 0) or on the finalists and what judges the folds
    (:func:`~vesukit.calibrate.oof.exact_masks_per_volume_bound`). On a ``sample`` the searches
    screen on the sampled volumes' crops only, and every volume costs its judging: two exact
    masks (its fold's winner and baseline) on the whole volume. Volumes are spread over the
    workers.
    """
    from vesukit.calibrate.engine import time_one_mask
    from vesukit.calibrate.oof import budget_volumes, exact_masks_per_volume_bound, masks_per_volume_bound
    from vesukit.calibrate.sample import CropOf, make_crop
    from vesukit.calibrate.search import Candidate
    from vesukit.decide import ThresholdRule

    bound = masks_per_volume_bound(grid, options, top_k, folds, whole=whole)
    screened = 0 if exhaustive else bound
    exact = bound if exhaustive or not finalists else \
        exact_masks_per_volume_bound(options, folds, finalists)
    shapes = [tuple(v.maps.shape) if hasattr(v.maps, "shape") else v.maps.mean.shape
              for v in prepared]
    sampling = sample is not None and not exhaustive and sample.active_for(shapes)
    judged = 2  # per volume on a sample: its fold's winner and baseline, whole

    def sampled(n: int) -> int:
        return len(sample.ids(v.volume_id for v in prepared[:n])) if sampling else n

    def planned(n: int) -> tuple[int, int]:  # (screened, exact) masks for n volumes
        return sampled(n) * screened, sampled(n) * exact + (n * judged if sampling else 0)

    if budget_hours is None:
        return None, len(prepared), planned
    longest = tuple({"step": slot, **next(o for o in reversed(opts) if o is not None)}
                    for slot, opts in options.items() if any(o is not None for o in opts))
    candidate = Candidate(ThresholdRule(), longest)
    judge_s = time_one_mask(prepared[0], candidate, exact=True) if sampling else 0.0
    searched_on = make_crop(CropOf(prepared[0], sample.crop), list(rules) + [candidate]) \
        if sampling and sample.crop > 0 else prepared[0]
    exact_s = time_one_mask(searched_on, candidate, exact=True)
    screen_s = 0.0 if exhaustive else time_one_mask(searched_on, candidate, exact=False)
    prepared[0].release()  # timed here; searched and judged where the engine runs it

    def seconds(n: int) -> float:  # at most, spread over the workers
        return (sampled(n) * (screened * screen_s + exact * exact_s)
                + (n * judged * judge_s if sampling else 0.0)) / workers

    if sampling:  # a constant (the sample's screening) plus each volume's judging
        take = len(prepared)
        while take > 2 and seconds(take) > budget_hours * 3600:
            take -= 1
    else:
        take = budget_volumes(len(prepared), seconds(1), budget_hours * 3600)
    per_volume = seconds(len(prepared)) / max(len(prepared), 1)
    budget = {"hours": budget_hours, "seconds_per_volume_at_most": per_volume,
              "seconds_per_exact_mask": exact_s, "seconds_per_screened_mask": screen_s,
              "seconds_per_judged_whole_mask": judge_s,
              "workers": workers, "masks_per_volume_bound": bound,
              "screened_masks_per_volume_bound": screened, "exact_masks_per_volume_bound": exact,
              "volumes_available": len(prepared), "volumes_searched": take,
              "screened_volumes": sampled(take),
              "estimated_hours_at_most": seconds(take) / 3600}
    if progress:
        progress(f"budget {budget_hours} h: at most {screened} screened masks ({screen_s:.2f} s "
                 f"each) and {exact} exact ({exact_s:.2f} s) per searched volume"
                 + (f", {judged} whole-volume masks ({judge_s:.2f} s) per judged volume"
                    if sampling else "")
                 + f" on {workers} worker(s) -> searching {take} of {len(prepared)} volume(s)")
    return budget, take, planned
