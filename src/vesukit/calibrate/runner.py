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
                    workers: int | None = None, finalists: int | None = None, sample=None,
                    budget_hours: float | None = None):
    """Build (or reuse) the cache, search, write ``out``; returns what was chosen (Calibrated).

    With ``fusion``, the teachers' weights and mode are fitted (with the first search's rule),
    then the rule and chain are searched again on the fused maps, so the file holds a rule,
    chain and fusion scored together, as predict applies them. Each search runs on
    :class:`~vesukit.calibrate.engine.SearchEngine` (ranked with ``finalists``, default
    :data:`~vesukit.calibrate.engine.FINALISTS`; screened with 0; every mask exact if
    ``exhaustive``; on Dask unless ``scheduler`` is "none").

    With ``budget_hours``, the teachers run on the first volume, one mask of it is timed, and
    the search (and so the teachers) takes only as many of the first volumes, in id order, as
    the upper bound on its masks allows within the budget. The teachers' own time is not
    counted in it (the cache keeps their maps; the progress lines show it).
    """
    from vesukit.calibrate.engine import FINALISTS, SearchEngine, dask_client, worker_count
    from vesukit.calibrate.sample import SearchSample
    from vesukit.calibrate.search import calibrate_volumes, split_volumes
    from vesukit.run_settings import fitted_on

    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir else out.parent / "calibration-cache"
    finalists = FINALISTS if finalists is None else finalists
    sample = SearchSample() if sample is None else sample
    passes = dict(device=device, tta=tta, overlap=overlap, dtype=dtype)
    setup = dict(grid=grid, top_k=top_k, winners=winners, holdout=holdout,
                 exhaustive=exhaustive, finalists=finalists, sample=sample)
    settings, block, engines, budget = None, None, [], None
    with dask_client(scheduler, workers, progress) as client:
        n_workers = worker_count(client)
        if budget_hours is not None:
            budget, volumes = _teachers_within_budget(
                budget_hours, data, teachers, cache_dir, volumes, passes, setup, n_workers,
                progress)
        run = cached_ensemble_pass(data, teachers, cache_dir, volumes, progress=progress,
                                   **passes)
        settings = run.settings
        search = _TeacherSearch.of(run, progress=progress, **setup)

        def searched(prepared):
            # the sample is spread over the fit volumes, the ones the search runs on
            fit_ids, _ = split_volumes([v.volume_id for v in prepared], holdout)
            engine = SearchEngine(prepared, exhaustive=exhaustive, client=client,
                                  progress=progress, finalists=finalists, sample=sample,
                                  rules=search.rules, sample_among=fit_ids)
            if engine.sample is not None and progress:
                progress(f"search sample: screening on {len(engine.sample.ids(fit_ids))} of "
                         f"{len(fit_ids)} fit volume(s) ({engine.sample.describe()}); the "
                         "held-back volumes are scored whole")
            engine.plan(*search.plan.masks(len(prepared)))
            engines.append(engine)
            return calibrate_volumes(prepared, holdout=holdout, grid=search.grid,
                                     options=search.options, top_k=top_k, progress=progress,
                                     engine=engine, whole=search.whole)

        outcome = searched(search.volumes)
        if fusion:
            from vesukit.calibrate.fusion import fit_fusion, fuse_weights
            from vesukit.calibrate.maps import CachedEnsemble
            from vesukit.calibrate.search import LabelledVolume

            # on the sampled fit volumes, whole, where the search sampled (a fusion fit on
            # every fit volume scores each weight candidate on each, exactly)
            block = fit_fusion(run.cache, search.labels,
                               engines[0].screened_ids or outcome.fit_ids,
                               outcome.search.winner.candidate.rule, progress, client=client)
            weights = fuse_weights(run.cache, block)
            if progress:
                progress(f"rule and chain searched again on the fused maps ({block['mode']} mean)")
            first = outcome.search.winner
            outcome = searched([LabelledVolume(i, CachedEnsemble(run.cache.folder, i, weights,
                                                                 block["mode"]),
                                               search.labels[i]) for i in run.ids])
            # the first search only chose the rule the fusion was fitted with; the file's
            # decision is the second search's, on the fused maps
            block["evidence"]["rule_and_chain_before_fusion"] = {
                "decision": first.candidate.describe(), "mean_on_fit_volumes": first.mean}
            settings = replace(settings, fusion_mode=block["mode"],
                               weights={n: w for n, w in block["weights"].items() if w > 0})
    data_out = outcome.to_json()
    data_out["evidence"]["cache"] = str(cache_dir)
    data_out["evidence"]["budget"] = budget
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
    return Calibrated(outcome, block, settings, budget)


@dataclass
class _TeacherSearch:
    """What a search from the teachers' cached maps runs on: the volumes (maps and labels made
    where they are scored, and a judged volume released after: a hundred 320^3 ensembles and
    prepared labels would not fit in memory at once), the rules, the chains' options sized to
    the volumes, and its plan of masks."""

    volumes: list
    labels: dict
    grid: dict
    options: dict
    whole: list
    rules: list
    plan: object               # vesukit.calibrate.budget.SearchPlan

    @classmethod
    def of(cls, run: EnsemblePass, *, grid, top_k, winners, holdout, exhaustive, finalists,
           sample, progress=None, planned_ids=None, planned_shapes=None) -> _TeacherSearch:
        """The search on ``run``'s volumes; its plan (and the chains' sizes) for
        ``planned_ids`` of ``planned_shapes`` where given (a budget plans the volumes the
        teachers have not run on yet), else for ``run``'s."""
        from vesukit.calibrate.budget import held_back_plan
        from vesukit.calibrate.labels import LabelFile
        from vesukit.calibrate.maps import CachedEnsemble
        from vesukit.calibrate.sample import volume_shape
        from vesukit.calibrate.search import (
            RULE_GRID,
            LabelledVolume,
            postprocess_options,
            rule_candidates,
            whole_chains,
        )
        from vesukit.data import volume_path

        labels = {i: LabelFile(volume_path(run.root, i, "train_labels"), i) for i in run.ids}
        volumes = [LabelledVolume(i, CachedEnsemble(run.cache.folder, i), labels[i])
                   for i in run.ids]
        ids = list(run.ids) if planned_ids is None else list(planned_ids)
        shapes = [volume_shape(v) for v in volumes] if planned_shapes is None else planned_shapes
        # one teacher has no disagreement: a rule or step reading it would silently do nothing
        disagreement = len(run.settings.teachers) > 1
        # a chain's sizes are scaled to the whole volumes (also when the search screens crops)
        voxels = _median_voxels(shapes)
        options = postprocess_options(voxels, winners=winners, disagreement=disagreement)
        whole = whole_chains(voxels, winners=winners)
        grid = grid or RULE_GRID
        grid = grid if disagreement else without_disagreement(grid, progress)
        plan = held_back_plan(ids, shapes, grid, options, top_k, len(whole), holdout,
                              exhaustive, finalists, sample)
        return cls(volumes, labels, grid, options, whole, rule_candidates(grid) + list(whole),
                   plan)


def _teachers_within_budget(hours, data, teachers, cache_dir, volumes, passes, setup, workers,
                            progress) -> tuple[dict, int]:
    """(budget record, volumes to search): the teachers run on the first volume, whose mask
    is timed; the search's masks are counted for every labelled volume's shape (read from its
    header: the teachers have not run on it yet)."""
    from vesukit.calibrate.oof import masks_per_volume_bound
    from vesukit.data import find_competition_root, read_volume_shape, volume_path

    root = find_competition_root(data)
    ids = labelled_ids(root, volumes)
    shapes = [read_volume_shape(volume_path(root, i, "train_images")) for i in ids]
    first = _TeacherSearch.of(cached_ensemble_pass(data, teachers, cache_dir, 1, **passes),
                              planned_ids=ids, planned_shapes=shapes, **setup)
    bound = masks_per_volume_bound(first.grid, first.options, setup["top_k"], 1,
                                   whole=len(first.whole))
    return _within_budget(hours, first.volumes[0], len(ids), first.plan, first.options,
                          setup["exhaustive"], first.rules, workers, progress, bound=bound)


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
    budget: dict | None = None  # what --budget-hours planned (None: no budget)


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


def _median_voxels(shapes) -> int:
    """The median voxels of the whole volumes' ``shapes`` (a chain's sizes are scaled to them,
    also when the search screens on crops)."""
    import numpy as np

    return int(np.median([np.prod(shape) for shape in shapes]))


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
    from vesukit.calibrate.sample import SearchSample, volume_shape
    from vesukit.calibrate.search import RULE_GRID, postprocess_options, rule_candidates, whole_chains
    from vesukit.data import find_competition_root
    from vesukit.run_settings import MADE_OTHERWISE, read_maps_provenance

    out = Path(out)
    root = find_competition_root(data)
    made = read_maps_provenance(maps_dir)
    made_otherwise = dict((made or {}).pop(MADE_OTHERWISE, None) or {})
    prepared = map_volumes(maps_dir, root, volumes, progress, left_out=made_otherwise)
    shapes = [volume_shape(v) for v in prepared]
    voxels = _median_voxels(shapes)
    options = postprocess_options(voxels, winners=winners, disagreement=False)
    whole = whole_chains(voxels, winners=winners)
    # saved maps carry only the mean: rules that read the disagreement have nothing to use
    grid = without_disagreement(grid or RULE_GRID, progress)
    sample = SearchSample() if sample is None else sample
    rules = rule_candidates(grid) + list(whole)
    with dask_client(scheduler, workers, progress) as client:
        n_workers = worker_count(client)
        budget, take, plan = _search_budget(prepared, shapes, grid, options, top_k, folds,
                                            exhaustive, finalists, budget_hours, n_workers,
                                            progress, whole=len(whole), sample=sample,
                                            rules=rules)
        prepared = prepared[:take]
        engine = SearchEngine(prepared, exhaustive=exhaustive, client=client, progress=progress,
                              finalists=finalists, sample=sample, rules=rules)
        if engine.sample is not None and progress:
            screened = len(engine.sample.ids(v.volume_id for v in prepared))
            progress(f"search sample: screening on {screened} of {len(prepared)} volume(s) "
                     f"({engine.sample.describe()}); folds judged on the whole volumes")
        engine.plan(*plan.masks(len(prepared)))
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


def _search_budget(prepared, shapes, grid, options, top_k, folds, exhaustive, finalists,
                   budget_hours, workers, progress, whole: int = 0, sample=None, rules=()):
    """(budget record or None, volumes to search, the plan) of the out-of-fold search
    (:func:`~vesukit.calibrate.budget.out_of_fold_plan`)."""
    from vesukit.calibrate.budget import out_of_fold_plan
    from vesukit.calibrate.oof import masks_per_volume_bound

    plan = out_of_fold_plan([v.volume_id for v in prepared], shapes, grid, options, top_k,
                            folds, whole, exhaustive, finalists, sample)
    if budget_hours is None:
        return None, len(prepared), plan
    budget, take = _within_budget(budget_hours, prepared[0], len(prepared), plan, options,
                                  exhaustive, rules, workers, progress,
                                  bound=masks_per_volume_bound(grid, options, top_k, folds,
                                                               whole=whole))
    return budget, take, plan


def _within_budget(hours, first, available, plan, options, exhaustive, rules, workers,
                   progress, bound: int):
    """(budget record, volumes to take): one mask of the longest chain timed on ``first``
    (and on its crop where the plan samples), then as many of the first volumes as fit
    ``hours`` on ``workers``."""
    from vesukit.calibrate.budget import budget_line, budget_record, time_masks, volumes_within

    rates = time_masks(first, options, exhaustive, plan.sample, rules,
                       whole_bounds=plan.counts.judged_bounds > 0)
    take = volumes_within(hours, available, lambda n: plan.seconds(n, rates, workers))
    budget = budget_record(hours, plan, rates, workers, available, take, bound)
    if progress:
        progress(budget_line(budget))
    return budget, take
