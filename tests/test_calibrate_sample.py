"""Calibration at scale: the search screens on centre crops of a spread sample of the volumes,
the folds are judged on every whole volume, and whole volumes are read where they are scored
and released after (docs/decide.md, "Searching at scale")."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("distributed")

from tests.fixtures import root_with_saved_maps  # noqa: E402
from vesukit.calibrate.engine import SearchEngine  # noqa: E402
from vesukit.calibrate.maps import map_volumes  # noqa: E402
from vesukit.calibrate.oof import out_of_fold  # noqa: E402
from vesukit.calibrate.sample import SearchSample, centre_box, crop_id  # noqa: E402
from vesukit.calibrate.search import RULE_GRID, rule_candidates  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.data import list_ids, read_volume  # noqa: E402
from vesukit.decide import Calibration, ThresholdRule  # noqa: E402
from vesukit.decide.apply import decide  # noqa: E402
from vesukit.maps import maps_from_probability  # noqa: E402
from vesukit.metric import score_volume  # noqa: E402

BIASES = [-1.0, 0.5, 0.0, 1.0, -0.5, 1.5]
SAMPLE = ["--search-volumes", "3", "--search-crop", "24"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A root with 6 labelled 40^3 train volumes and a defective .npy map for each."""
    return root_with_saved_maps(tmp_path_factory.mktemp("sample"), 6, (40, 40, 40), 5, BIASES)


def _calibrate(saved, out, *extra) -> dict:
    root, maps = saved
    assert main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(out),
                 "--folds", "3", "--steps", "basic", "--top-k", "1",
                 "--rules", "fixed,foreground_fraction", *extra]) == 0
    return json.loads(Path(out).read_text())


def _tables(written: dict) -> list:
    return [(c["rule"], c["params"], c["postprocess"], c["scores"], c["thresholds"], c["exact"])
            for c in written["evidence"]["candidates"]]


def test_the_search_screens_on_crops_of_a_spread_sample_and_judges_whole_volumes(saved, tmp_path):
    root, maps = saved
    written = _calibrate(saved, tmp_path / "c.json", *SAMPLE, "--scheduler", "none")
    ids = sorted(list_ids(root, "train"))
    sample = written["evidence"]["search_engine"]["sample"]
    assert sample["screened_volumes"] == [ids[1], ids[3], ids[5]]  # evenly spread
    # every candidate of the final search was screened on those volumes' crops, and the
    # finalists (exact) were scored on the same volumes whole
    crops = {crop_id(i, 24) for i in sample["screened_volumes"]}
    assert written["evidence"]["volumes"] == ids
    assert written["evidence"]["searched_on"] == sample["screened_volumes"]
    exact = [c for c in written["evidence"]["candidates"] if c["exact"]]
    assert len(exact) >= 2  # the finalists, the best fixed threshold
    for candidate in written["evidence"]["candidates"]:
        assert set(candidate["scores"]) == (set(sample["screened_volumes"]) if candidate["exact"]
                                            else crops)
    # ... with each rule's threshold taken from the whole map, as predict takes it
    for candidate in written["evidence"]["candidates"]:
        rule = ThresholdRule(candidate["rule"], candidate["params"])
        for volume_id in sample["screened_volumes"]:
            whole = maps_from_probability(np.load(maps / f"{volume_id}.npy"))
            key = volume_id if candidate["exact"] else crop_id(volume_id, 24)
            assert candidate["thresholds"][key] == pytest.approx(float(rule(whole)), abs=1e-7)
    # the winner's reported scores are the exact whole-volume scores of predict's decision
    winner = Calibration.from_json(written)
    for volume_id in sample["screened_volumes"]:
        mask, _ = decide(maps_from_probability(np.load(maps / f"{volume_id}.npy")), winner)
        label = read_volume(root / "train_labels" / f"{volume_id}.tif")
        rule = {k: v for k, v in written["threshold"].items() if k != "rule"}
        reported = next(c for c in exact if c["rule"] == written["threshold"]["rule"]
                        and c["params"] == rule and c["postprocess"] == written["postprocess"])
        assert reported["scores"][volume_id] == pytest.approx(score_volume(mask, label).score,
                                                              abs=1e-12)
    # the folds are judged on every whole volume: each held volume's score is what predict's
    # decision scores there with the exact scorer
    oof = written["evidence"]["out_of_fold"]
    assert sorted(oof["oof_winner_scores"]) == ids
    judged = 0
    for fold, decision in zip(oof["folds"], oof["fold_decisions"]):
        winner = Calibration.from_json(decision)
        for volume_id in fold:
            whole = maps_from_probability(np.load(maps / f"{volume_id}.npy"))
            mask, _ = decide(whole, winner)
            label = read_volume(root / "train_labels" / f"{volume_id}.tif")
            assert oof["oof_winner_scores"][volume_id] == pytest.approx(
                score_volume(mask, label).score, abs=1e-12)
            judged += 1
    assert judged == len(ids)
    # the ablation is measured on the held folds' sampled crops
    assert all(row["folds"] >= 1 for row in oof["ablation"])


def test_sampled_search_is_identical_in_one_process_and_on_two_local_workers(saved, tmp_path):
    alone = _calibrate(saved, tmp_path / "alone.json", *SAMPLE, "--scheduler", "none")
    dask = _calibrate(saved, tmp_path / "dask.json", *SAMPLE, "--workers", "2")
    assert _tables(alone) == _tables(dask)
    assert alone["evidence"]["out_of_fold"]["oof_winner_scores"] == \
        dask["evidence"]["out_of_fold"]["oof_winner_scores"]
    decision = [{k: v for k, v in w.items() if k != "evidence"} for w in (alone, dask)]
    assert decision[0] == decision[1]


def test_whole_volumes_travel_as_paths_and_are_released_after_judging(saved):
    """A hundred 320^3 volumes do not fit in memory at once: a saved volume pickles as its
    paths, its label is prepared where it is scored, and judging drops it again."""
    root, maps = saved
    volumes = map_volumes(maps, root)
    assert len(pickle.dumps(volumes[0])) < 4096
    engine = SearchEngine(volumes, sample=SearchSample(volumes=3, crop=24),
                          rules=rule_candidates({"fixed": RULE_GRID["fixed"][:3]}))
    oof = out_of_fold(volumes, 3, {"fixed": RULE_GRID["fixed"][:3]}, {}, 1, engine=engine)
    assert sorted(oof.winner_scores) == sorted(v.volume_id for v in volumes)
    assert all(v.label._prepared is None and v.maps._maps is None for v in volumes)
    # the crops searched on are kept (made once), the whole volumes are not
    assert sorted(engine._crops) == sorted(crop_id(i, 24) for i in engine._sample_ids)


# module level, so the in-process Dask worker unpickles the same objects by reference
_WAITING: dict = {}


def _first_volume_waits(volume, items, exact, token):
    if volume.volume_id == _WAITING["volume_id"] and not _WAITING["counted"].wait(30):
        raise TimeoutError("no progress was counted while this volume was scored")
    return _WAITING["real"](volume, items, exact, token)


def test_whole_volumes_judged_on_dask_are_counted_as_each_finishes(saved, monkeypatch):
    """Judging whole 320^3 volumes takes minutes per volume: the progress line (and its ETA)
    moves as each volume's batch finishes, not once the slowest is done. Here the first
    volume's batch waits until a progress line has counted another volume's; counted only
    at the end, it would wait in vain."""
    import threading

    import distributed

    from vesukit.calibrate import engine as engine_module

    root, maps = saved
    volumes = map_volumes(maps, root)[:3]
    _WAITING.update(volume_id=volumes[0].volume_id, counted=threading.Event(),
                    real=engine_module.evaluate_batch)
    monkeypatch.setattr(engine_module, "evaluate_batch", _first_volume_waits)
    lines = []

    def progress(text):
        lines.append(text)
        _WAITING["counted"].set()

    candidates = rule_candidates({"fixed": RULE_GRID["fixed"][:2]})
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=3) as client:
        engine = SearchEngine(volumes, client=client, progress=progress, progress_every=0,
                              sample=SearchSample(volumes=2, crop=24), rules=candidates)
        judged = engine.for_volumes(volumes, exact=True).score_many(candidates, "held_back")
    assert [sorted(j.scores) for j in judged] == [sorted(v.volume_id for v in volumes)] * 2
    done = [int(line.split("/")[0].split()[-1]) for line in lines]
    assert done == [2, 4, 6]  # one line per volume, two candidates each


def test_a_judged_volume_gives_its_exact_scores_and_bounds_in_one_pass(saved, monkeypatch):
    """The held-back check wants two exact scores and a bound per fixed threshold of each
    whole held volume: one batch per volume reads and prepares it once for all of them."""
    from vesukit.calibrate import engine as engine_module
    from vesukit.calibrate.search import Evaluator

    root, maps = saved
    volumes = map_volumes(maps, root)[:3]
    passes = []
    real = engine_module.evaluate_batch

    def counted(volume, items, exact, token):
        passes.append(volume.volume_id)
        return real(volume, items, exact, token)

    monkeypatch.setattr(engine_module, "evaluate_batch", counted)
    candidates = rule_candidates({"fixed": RULE_GRID["fixed"][:4]})
    engine = SearchEngine(volumes, sample=SearchSample(volumes=2, crop=24), rules=candidates)
    judged = engine.for_volumes(volumes, exact=True).score_many(candidates[:2], "held_back",
                                                                bounds=candidates[2:])
    assert sorted(passes) == sorted(v.volume_id for v in volumes)  # one pass per volume
    exact = [Evaluator(volumes).score(candidate) for candidate in candidates]
    assert [j.scores for j in judged[:2]] == [e.scores for e in exact[:2]]
    assert all(j.exact for j in judged[:2])
    for bound, score in zip(judged[2:], exact[2:]):
        assert not bound.exact
        assert all(bound.scores[i] >= score.scores[i] for i in score.scores)
    # a candidate asked for exactly is not bounded too (the held-back check's winner is often
    # one of the fixed thresholds it bounds): its exact score stands for its bound
    fresh = SearchEngine(volumes, sample=SearchSample(volumes=2, crop=24), rules=candidates)
    again = fresh.for_volumes(volumes, exact=True).score_many(
        candidates[:1], "held_back", bounds=candidates[:2])
    assert again[1].scores == again[0].scores == exact[0].scores and again[1].exact
    assert (fresh.work["exact_masks"], fresh.work["screened_masks"]) == (3, 3)


def test_the_sample_is_off_where_it_would_leave_nothing_out(saved):
    root, maps = saved
    volumes = map_volumes(maps, root)
    assert SearchEngine(volumes, sample=SearchSample(volumes=16, crop=64)).sample is None
    assert SearchEngine(volumes, sample=SearchSample(volumes=3, crop=64)).sample is not None
    assert SearchEngine(volumes, sample=SearchSample(volumes=3, crop=24),
                        exhaustive=True).sample is None  # the reference never samples
    assert centre_box((40, 40, 40), 24) == (slice(8, 32),) * 3
    assert centre_box((10, 40, 40), 24) == (slice(0, 10), slice(8, 32), slice(8, 32))


@pytest.mark.parametrize("flag", [["--search-volumes", "-1"], ["--search-crop", "8"]])
def test_bad_sample_flags_are_usage_errors(saved, tmp_path, flag, capsys):
    root, maps = saved
    code = main(["calibrate", "--maps", str(maps), "--data", str(root), "--out",
                 str(tmp_path / "x.json"), *flag])
    assert code == 2
    assert "--search" in capsys.readouterr().err


def test_budget_hours_counts_the_sample_once_and_every_judged_volume(saved, tmp_path, monkeypatch):
    """On a sample, the search's cost is the sample's search plus each volume's judging: the
    budget times a crop's masks and a whole volume's, prices the ranked search's finalists
    (scored on the sampled volumes whole) as whole-volume masks, and takes as many volumes as
    fit. (The timer is fixed here so the arithmetic is checked exactly: 1 s per crop mask,
    20 s per whole-volume mask.)"""
    from vesukit.calibrate import engine
    from vesukit.calibrate.runner import run_calibration_from_maps

    monkeypatch.setattr(engine, "time_one_mask", lambda volume, candidate, exact:
                        1.0 if "[crop" in volume.volume_id else 20.0)
    root, maps = saved

    def run(hours, name):
        oof = run_calibration_from_maps(maps, root, tmp_path / name, folds=3, top_k=1,
                                        grid={"fixed": RULE_GRID["fixed"][:3]}, winners=False,
                                        budget_hours=hours, scheduler="none",
                                        sample=SearchSample(volumes=3, crop=24))
        return oof.budget, oof

    budget, _ = run(100, "all.json")
    assert budget["volumes_searched"] == 6 and budget["screened_volumes"] == 3
    whole = budget["exact_whole_masks_per_volume_bound"]
    assert whole == 3 * (3 + 2)  # each fold's and the final search's finalists and best fixed
    per_sampled = (budget["screened_masks_per_volume_bound"]
                   + budget["exact_masks_per_volume_bound"] - whole + 20 * whole)
    assert budget["estimated_hours_at_most"] * 3600 == pytest.approx(3 * per_sampled + 6 * 2 * 20)
    # 4 volumes: 3 of them sampled, 4 judged; a fifth would need 40 s more
    hours = (3 * per_sampled + 4 * 2 * 20 + 1) / 3600
    budget, oof = run(hours, "tight.json")
    assert budget["volumes_searched"] == 4 and budget["screened_volumes"] == 3
    assert len(oof.winner_scores) == 4


def test_a_crop_of_a_prepared_label_is_the_crop_of_the_label(saved):
    """Volumes built in memory (a PreparedLabel, not a label file) are cut the same way."""
    from vesukit.calibrate.labels import crop_label
    from vesukit.metric import PreparedLabel

    root, _ = saved
    volume_id = sorted(list_ids(root, "train"))[0]
    label = read_volume(root / "train_labels" / f"{volume_id}.tif")
    label[:10] = 2  # an ignored band inside the crop, so the crop must carry the ignore mask
    box = centre_box(label.shape, 24)
    expected = PreparedLabel(np.ascontiguousarray(label[box]))
    cut = crop_label(PreparedLabel(label), box, "crop")
    assert np.array_equal(cut.gt, expected.gt) and np.array_equal(cut.keep, expected.keep)
    assert not cut.keep.all()
    pred = (np.random.default_rng(0).random(cut.shape) < 0.1).astype(np.uint8)
    assert cut.score(pred).score == expected.score(pred).score
