"""The calibration search engine: the ranked default (bounds decide, finalists get the full
scorer), screening that keeps the exhaustive search's decisions, chain-prefix reuse, Dask
(local cluster and a real scheduler), progress with an ETA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("numba")
distributed = pytest.importorskip("distributed")

from tests.dask_processes import scheduler_and_workers  # noqa: E402
from tests.fixtures import root_with_saved_maps  # noqa: E402
from vesukit.calibrate.engine import FINALISTS, PrefixCache, SearchEngine, chain_mask  # noqa: E402
from vesukit.calibrate.oof import out_of_fold  # noqa: E402
from vesukit.calibrate.search import LabelledVolume, postprocess_options, search  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.data import list_ids, read_volume  # noqa: E402
from vesukit.decide import binarize  # noqa: E402
from vesukit.decide.steps import apply_postprocess  # noqa: E402
from vesukit.maps import maps_from_probability  # noqa: E402
from vesukit.metric import PreparedLabel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "data" / "metric-vectors"
BIASES = [-1.0, 0.5, 0.0, 1.0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A root with 4 labelled 32^3 train volumes and a defective .npy map for each."""
    return root_with_saved_maps(tmp_path_factory.mktemp("engine"), 4, (32, 32, 32), 11, BIASES)


@pytest.fixture(scope="module")
def volumes(saved):
    root, maps = saved
    return [LabelledVolume(i, maps_from_probability(np.load(maps / f"{i}.npy")),
                           PreparedLabel(read_volume(root / "train_labels" / f"{i}.tif"), name=i))
            for i in list_ids(root, "train")]


def _cases():
    expected = json.loads((VECTORS / "expected.json").read_text())
    return sorted(c for c, e in expected.items() if max(e["shape"]) <= 96)[::4]


@pytest.mark.parametrize("case", _cases())
def test_the_bound_is_exact_but_for_dimension_one_matches(case):
    """What screening rests on: surface Dice, VOI and every count but m_1 are the scorer's,
    m_1 is at least the true one, so the bound is never below the score."""
    pred = tifffile.imread(VECTORS / "pred" / f"{case}.tif")
    label = PreparedLabel(tifffile.imread(VECTORS / "labels" / f"{case}.tif"), name=case)
    exact, bound = label.score(pred), label.bound(pred)
    assert bound.surface_dice == exact.surface_dice and bound.voi_score == exact.voi_score
    for dim in (0, 2):
        assert bound.topo_counts[dim] == exact.topo_counts[dim]
    m1, p1, g1 = bound.topo_counts[1]
    assert (p1, g1) == exact.topo_counts[1][1:] and exact.topo_counts[1][0] <= m1 <= min(p1, g1)
    assert bound.score >= exact.score - 1e-12


def test_chain_masks_from_cached_prefixes_equal_the_chain_run_whole(volumes):
    volume = volumes[0]
    chains = [({"step": "zero_border", "width": 3}, {"step": "remove_small", "min_voxels": 20},
               {"step": "close", "radius": 1}),
              ({"step": "zero_border", "width": 3}, {"step": "remove_small", "min_voxels": 20},
               {"step": "fill_holes", "max_voxels": 0}),
              ({"step": "zero_border", "width": 3},)]
    cache = PrefixCache()
    for chain in chains:
        got = chain_mask(volume, 0.4, chain, "t", cache)
        want = apply_postprocess(binarize(volume.maps.mean, 0.4), chain, volume.maps)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    # the second chain reused the first's two-step prefix, which the cache holds
    assert cache.get(("t", volume.volume_id, 0.4, repr([dict(s) for s in chains[0][:2]]))) is not None


def _decisions(result):
    return (result.winner.candidate.key, result.winner.mean,
            result.best_fixed.candidate.key, result.best_fixed.mean)


def test_screened_search_makes_the_exhaustive_searchs_decisions(volumes):
    options = postprocess_options(32 ** 3, winners=False, disagreement=False)
    exhaustive = search(volumes, options=options, top_k=2,
                        shared=SearchEngine(volumes, exhaustive=True))
    engine = SearchEngine(volumes, finalists=0)
    assert engine.mode == "screened"
    screened = search(volumes, options=options, top_k=2, shared=engine)
    assert _decisions(screened) == _decisions(exhaustive)
    assert screened.winner.exact and screened.best_fixed.exact
    # not every candidate needed the full scorer, and those that did were counted
    assert 0 < engine.rescored < len(screened.evaluated)
    assert any(not c.exact for c in screened.evaluated)
    # on 32^3 the bound costs about what the exact score does, so screening stops paying
    # and the rest of the search scores exactly up front, with the same decisions
    work = engine.work
    assert work["screening_stopped_after"] is not None
    assert work["screened_masks"] == work["screening_stopped_after"] < work["exact_masks"]
    exact_means = {c.candidate.key: c.mean for c in exhaustive.evaluated}
    for c in screened.evaluated:  # screened means bound the exact ones from above
        assert c.mean >= exact_means[c.candidate.key] - 1e-12 if not c.exact else \
            c.mean == exact_means[c.candidate.key]


def test_the_default_ranks_by_bounds_and_gives_only_its_finalists_the_full_scorer(volumes):
    options = postprocess_options(32 ** 3, winners=True, disagreement=False)
    exhaustive_engine = SearchEngine(volumes, exhaustive=True)
    exhaustive = search(volumes, options=options, top_k=2, shared=exhaustive_engine)
    engine = SearchEngine(volumes)
    assert engine.mode == "ranked" and engine.finalists == FINALISTS
    ranked = search(volumes, options=options, top_k=2, shared=engine)
    exact = [c for c in ranked.evaluated if c.exact]
    # the finalists (the best bounds overall) and the best fixed thresholds, no more
    assert FINALISTS <= len(exact) <= FINALISTS + 2 < len(ranked.evaluated)
    again = engine.for_volumes(volumes)  # every candidate's bound, from the cache
    bounds = {c.candidate.key: again.score(c.candidate).mean for c in ranked.evaluated}
    assert again.masks_scored == 0
    finalists = sorted(bounds, key=lambda k: -bounds[k])[:FINALISTS]
    assert set(finalists) <= {c.candidate.key for c in exact}
    work, full = engine.work, exhaustive_engine.work
    assert work["exact_masks"] <= (FINALISTS + 2) * len(volumes)
    assert work["exact_masks"] * 5 < full["exact_masks"]
    assert work["screened_masks"] <= full["exact_masks"]  # the same candidates, bounded
    # its winner is scored exactly and is within the 0.002 of the exhaustive search's
    exact_means = {c.candidate.key: c.mean for c in exhaustive.evaluated}
    assert ranked.winner.exact and ranked.best_fixed.exact
    assert ranked.winner.mean == exact_means.get(ranked.winner.candidate.key, ranked.winner.mean)
    assert ranked.winner.mean >= exhaustive.winner.mean - 0.002


def test_ranked_candidates_are_compared_on_bounds_even_where_another_fold_scored_exactly(volumes):
    """Folds share the mask cache; a mask a fold judged exactly must not look worse than its
    rivals' bounds in the next search (that would depend on which fold ran first)."""
    options = postprocess_options(32 ** 3, winners=False, disagreement=False)
    engine = SearchEngine(volumes)
    judge = engine.for_volumes(volumes, exact=True)
    assert judge.mode == "screened" and not judge.screen  # judging: every score exact
    first = search(volumes, options=options, top_k=1, shared=engine)
    judged = judge.score(first.winner.candidate)
    again = engine.for_volumes(volumes).score(first.winner.candidate)
    assert judged.exact and not again.exact and again.mean >= judged.mean


@pytest.mark.parametrize("workers", [1, 2])
def test_a_local_dask_cluster_gives_the_one_process_results(volumes, workers):
    options = postprocess_options(32 ** 3, winners=False, disagreement=False)
    alone = out_of_fold(volumes, 2, options=options, top_k=1, engine=SearchEngine(volumes))
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        engine = SearchEngine(volumes, client=client)
        dask = out_of_fold(volumes, 2, options=options, top_k=1, engine=engine)
        used = {w for _, w in engine._placed.values()}
    assert [c.to_json() for c in dask.final.evaluated] == [c.to_json() for c in alone.final.evaluated]
    assert dask.winner_scores == alone.winner_scores and dask.ablation == alone.ablation
    assert dask.masks_scored == alone.masks_scored
    assert len(used) == workers  # the volumes were spread over every worker


def _calibrate(saved, out, *extra):
    root, maps = saved
    return main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(out),
                 "--folds", "2", "--steps", "basic", "--top-k", "1",
                 "--rules", "fixed,foreground_fraction", *extra])


def test_calibrate_on_a_running_scheduler_by_address_equals_one_process(saved, tmp_path, capsys):
    """The many-machines path: `dask scheduler`, `dask worker ADDRESS` (two, separate
    processes as on a cluster), then `calibrate --scheduler ADDRESS`."""
    with scheduler_and_workers(tmp_path, workers=2) as address:
        with distributed.Client(address) as client:
            client.wait_for_workers(2, timeout=120)
        assert _calibrate(saved, tmp_path / "remote.json", "--scheduler", address) == 0
    err = capsys.readouterr().err
    assert "search on Dask: 2 worker(s)" in err
    assert _calibrate(saved, tmp_path / "alone.json", "--scheduler", "none") == 0
    remote = json.loads((tmp_path / "remote.json").read_text())
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert remote["evidence"]["search_engine"]["workers"] == 2
    for key in ("threshold", "postprocess"):
        assert remote[key] == alone[key]
    assert remote["evidence"]["candidates"] == alone["evidence"]["candidates"]
    assert remote["evidence"]["out_of_fold"]["oof_winner_scores"] == \
        alone["evidence"]["out_of_fold"]["oof_winner_scores"]


def test_the_eta_prices_screened_and_exact_masks_at_their_own_rates(monkeypatch):
    """A screened mask on a crop takes a fraction of a second, an exact one on a whole 320^3
    volume many seconds: one average rate made the ETA read minutes where an hour was left.
    Each kind is planned and timed on its own; before the first exact mask the line says the
    exact masks are not yet timed."""
    from vesukit.calibrate import engine as engine_module

    clock = [0.0]
    monkeypatch.setattr(engine_module.time, "perf_counter", lambda: clock[0])
    lines = []
    progress = engine_module._Progress(lines.append, every=0)
    progress.planned.update(screened=100, exact=10)
    for _ in range(50):  # 50 screened masks, one second each
        clock[0] += 1.0
        progress.add(1, exact=False)
    assert lines[-1].endswith("ETA ~1m00s (exact masks not yet timed)")  # 50 + 10 at 1 s
    assert "search: 50/110 masks" in lines[-1] and "exact 0/10" in lines[-1]
    clock[0] += 120.0  # one whole volume: two exact masks in two minutes
    progress.add(2, exact=True)
    # 50 screened at 1 s and 8 exact at 60 s: 8m50s (one average rate said 3m10s)
    assert lines[-1].endswith("ETA ~8m50s") and "exact 2/10" in lines[-1]


def test_calibrate_prints_progress_with_an_eta_and_exhaustive_agrees(saved, tmp_path, capsys):
    assert _calibrate(saved, tmp_path / "ranked.json", "--workers", "2") == 0
    err = capsys.readouterr().err
    assert "search on Dask: 2 worker(s)" in err
    lines = [text for text in err.splitlines() if "masks (volumes x candidates" in text]
    assert lines and "ETA" in lines[-1] and "s/mask" in lines[-1]
    assert _calibrate(saved, tmp_path / "screened.json", "--finalists", "0", "--scheduler", "none") == 0
    assert _calibrate(saved, tmp_path / "exhaustive.json", "--exhaustive", "--scheduler", "none") == 0
    ranked, screened, exhaustive = (json.loads((tmp_path / f"{name}.json").read_text())["evidence"]
                                    for name in ("ranked", "screened", "exhaustive"))
    assert [e["search_engine"]["mode"] for e in (ranked, screened, exhaustive)] == \
        ["ranked", "screened", "exhaustive"]
    # --finalists 0: the exhaustive search's decision by construction; the default: within 0.002
    assert screened["winner"]["mean"] == exhaustive["winner"]["mean"]
    assert screened["winner_description"] == exhaustive["winner_description"]
    assert ranked["winner"]["mean"] >= exhaustive["winner"]["mean"] - 0.002
    assert screened["search_engine"]["candidates_rescored_exactly"] > 0
    assert not exhaustive["search_engine"]["candidates_rescored_exactly"]
    # the ETA's total bounds the masks made, and the default's bound counts the full scorer
    # only for its finalists and the folds' judging, not once more per candidate
    for evidence in (ranked, screened, exhaustive):
        work = evidence["search_engine"]
        assert work["screened_masks"] + work["exact_masks"] <= work["masks_planned"]
    assert ranked["search_engine"]["exact_masks"] < exhaustive["search_engine"]["exact_masks"]
    assert ranked["search_engine"]["masks_planned"] < screened["search_engine"]["masks_planned"]


def test_finalists_below_zero_is_a_usage_error(saved, tmp_path, capsys):
    assert _calibrate(saved, tmp_path / "c.json", "--finalists", "-1") == 2
    assert "--finalists -1" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_workers_with_a_scheduler_address_is_a_usage_error(saved, tmp_path, capsys):
    assert _calibrate(saved, tmp_path / "c.json", "--scheduler", "tcp://127.0.0.1:1",
                      "--workers", "2") == 2
    assert "dask worker ADDRESS" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
