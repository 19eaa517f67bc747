"""The cached ensemble pass, ablation against direct scoring, and the two commands, with
real tiny 3D teachers (random weights, checkpoints written in the test) on a synthetic root."""

import json

import numpy as np
import pytest

pytest.importorskip("numba")
torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from tests.fixtures import unet3d_ensemble  # noqa: E402
from vesukit.calibrate import cache as cache_module  # noqa: E402
from vesukit.calibrate.ablate import ablate  # noqa: E402
from vesukit.calibrate.cache import CacheError, MapCache, build_cache  # noqa: E402
from vesukit.calibrate.labels import labelled_ids, prepared_labels  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.data import read_volume, volume_path  # noqa: E402
from vesukit.decide import Calibration, ThresholdRule, binarize, load_calibration  # noqa: E402
from vesukit.decide.steps import apply_postprocess  # noqa: E402
from vesukit.infer import EnsembleAccumulator, predict_teacher  # noqa: E402
from vesukit.metric import score_volume  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import load_manifest, load_teacher  # noqa: E402

SHAPES = ((24, 32, 32), (32, 24, 28))
WEIGHTS = (1.0, 2.0, 0.5)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("root"), n_test=1, n_train=3,
                                 shapes=SHAPES, seed=5)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Three tiny 3D U-Nets (different seeds and weights) in one teachers folder."""
    folder = tmp_path_factory.mktemp("teachers")
    unet3d_ensemble(folder, seeds=range(len(WEIGHTS)), weights=WEIGHTS)
    return folder


# a calibration whose threshold follows the maps, so every subset gets its own mask
CALIBRATION = Calibration(ThresholdRule("foreground_fraction", {"fraction": 0.1, "lo": 0.0,
                                                                 "hi": 1.0}),
                          ({"step": "remove_small", "min_voxels": 4},))


def test_cache_stores_each_teacher_once_and_is_reused(root, teachers, tmp_path):
    manifest = load_manifest(teachers)
    ids = labelled_ids(root, 2)
    cache = build_cache(tmp_path / "cache", root, manifest, ids)
    assert cache.volume_ids == tuple(ids)
    stored = cache.teacher_map(ids[0], "unet_1")
    assert stored.dtype == np.float16 and not stored.flags.writeable
    assert stored.shape == read_volume(volume_path(root, ids[0], "train_images")).shape
    on_disk = zarr.open_array(str(tmp_path / "cache" / ids[0] / "unet_1.zarr"), mode="r")
    assert on_disk.dtype == np.float16 and on_disk.chunks == stored.shape  # < 128: one chunk
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*/*.zarr")}
    assert len(stamps) == len(ids) * len(WEIGHTS)
    again = build_cache(tmp_path / "cache", root, manifest, ids)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing recomputed
    assert again.volume_ids == cache.volume_ids
    # other settings: the old maps are not reused
    other = build_cache(tmp_path / "cache", root, manifest, ids[:1], dtype="float32")
    assert other.volume_ids == (ids[0],)
    assert other.teacher_map(ids[0], "unet_0").dtype == np.float32
    with pytest.raises(CacheError, match="no cached map"):
        other.teacher_map(ids[1], "unet_0")


def test_a_crash_while_writing_leaves_no_half_map(root, teachers, tmp_path, monkeypatch):
    """A writer killed after writing chunks but before the rename leaves no entry; the next
    build removes the leftover and computes the map."""
    manifest = load_manifest(teachers)
    ids = labelled_ids(root, 1)
    real_replace = cache_module.os.replace

    def crash_on_unet_2(source, target):
        if str(target).endswith("unet_2.zarr"):
            raise KeyboardInterrupt("killed")
        real_replace(source, target)

    monkeypatch.setattr(cache_module.os, "replace", crash_on_unet_2)
    with pytest.raises(KeyboardInterrupt):
        build_cache(tmp_path / "cache", root, manifest, ids)
    monkeypatch.setattr(cache_module.os, "replace", real_replace)
    volume_dir = tmp_path / "cache" / ids[0]
    assert sorted(p.name for p in volume_dir.glob("*.zarr")) == ["unet_0.zarr", "unet_1.zarr"]
    assert list(volume_dir.glob(".*.tmp"))  # the half-done write, under its temporary name
    cache = build_cache(tmp_path / "cache", root, manifest, ids)
    assert cache.volume_ids == tuple(ids) and not list(volume_dir.glob(".*.tmp"))
    assert cache.teacher_map(ids[0], "unet_2").shape == cache.teacher_map(ids[0], "unet_0").shape


def test_an_old_npy_cache_is_rebuilt_as_zarr(root, teachers, tmp_path):
    """Format 1 kept <volume>/<teacher>.npy: it is cleared and rebuilt, never read."""
    ids = labelled_ids(root, 1)
    old = tmp_path / "cache"
    (old / ids[0]).mkdir(parents=True)
    np.save(old / ids[0] / "unet_0.npy", np.zeros((2, 2, 2), np.float16))
    (old / "cache.json").write_text(json.dumps({"format": 1, "fingerprint": None,
                                                "dtype": "float16", "volumes": {ids[0]: [2, 2, 2]},
                                                "teachers": [{"name": "unet_0", "weight": 1.0}]}))
    with pytest.raises(CacheError, match="format 1"):
        MapCache(old)
    said = []
    cache = build_cache(old, root, load_manifest(teachers), ids, progress=said.append)
    assert any("older format; rebuilt" in line for line in said)
    assert not list(old.glob("*/*.npy"))
    assert cache.volume_ids == tuple(ids) and cache.teacher_map(ids[0], "unet_0").shape != (2, 2, 2)


def direct_scores(root, teachers, ids, subsets):
    """Each subset's ensemble computed from scratch (teachers run here, no cache) and scored:
    {subset: {volume: score}}."""
    manifest = load_manifest(teachers)
    specs = {s.name: s for s in manifest.teachers}
    models = {name: load_teacher(spec, manifest.root, "cpu") for name, spec in specs.items()}
    scores = {subset: {} for subset in subsets}
    for volume_id in ids:
        volume = read_volume(volume_path(root, volume_id, "train_images"))
        label = read_volume(volume_path(root, volume_id, "train_labels"))
        with torch.inference_mode():
            probabilities = {name: predict_teacher(volume, models[name], specs[name],
                                                   device="cpu") for name in specs}
        for subset in subsets:
            accumulator = EnsembleAccumulator(volume.shape)
            for name in subset:
                accumulator.add(probabilities[name], specs[name].weight)
            maps = accumulator.result()
            threshold = CALIBRATION.rule(maps)
            mask = apply_postprocess(binarize(maps.mean, threshold), CALIBRATION.postprocess,
                                     maps)
            scores[subset][volume_id] = score_volume(mask, label).score
    return scores


def test_ablation_numbers_equal_scoring_the_ensembles_directly(root, teachers, tmp_path):
    ids = labelled_ids(root, 2)
    # float32 maps: the cache then holds exactly what predict computes
    cache = build_cache(tmp_path / "cache", root, load_manifest(teachers), ids,
                        dtype="float32")
    result = ablate(cache, prepared_labels(root, ids), CALIBRATION)
    names = ("unet_0", "unet_1", "unet_2")
    assert result.teachers == list(names)
    subsets = [names] + [(t,) for t in names] + [tuple(o for o in names if o != t)
                                                  for t in names]
    direct = direct_scores(root, teachers, ids, subsets)
    assert result.full == direct[names]
    for teacher in names:
        assert result.alone[teacher] == direct[(teacher,)]
        assert result.without[teacher] == direct[tuple(o for o in names if o != teacher)]
    # the leave-one-out ensembles really differ from the full one somewhere
    assert any(result.without[t] != result.full for t in names)
    data = result.to_json()
    for teacher in names:
        gains = data["gain"][teacher]["scores"]
        assert gains == {v: result.full[v] - result.without[teacher][v] for v in ids}
    recommendation = data["recommendation"]
    assert sorted(recommendation["drop"] + recommendation["keep"]) == list(names)
    assert recommendation["keep"]


def test_recommendation_drops_teachers_without_a_stable_gain():
    from vesukit.calibrate.ablate import Ablation

    volumes = ["a", "b", "c"]
    result = Ablation(
        teachers=["good", "noise", "harm"], volumes=volumes, calibration={},
        full={"a": 0.6, "b": 0.6, "c": 0.6},
        alone={t: dict.fromkeys(volumes, 0.5) for t in ("good", "noise", "harm")},
        without={"good": {"a": 0.5, "b": 0.52, "c": 0.55},    # +0.1, +0.08, +0.05: stable
                 "noise": {"a": 0.5, "b": 0.7, "c": 0.58},    # +0.1, -0.1, +0.02: not
                 "harm": {"a": 0.65, "b": 0.66, "c": 0.62}})  # always better without
    assert result.stable_gain("good")
    assert not result.stable_gain("noise") and not result.stable_gain("harm")
    assert result.recommendation()["drop"] == ["noise", "harm"]
    table = result.table()
    assert "good" in table and "drop" in table and "keep" in table


def test_calibrate_and_ablate_commands(root, teachers, tmp_path, capsys):
    out = tmp_path / "run" / "calibration.json"
    code = main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(out), "--volumes", "2", "--device", "cpu", "--holdout", "0.5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held back (1 volume(s))" in printed and "wrote" in printed
    data = json.loads(out.read_text())
    calibration = load_calibration(out)  # predict --calibration reads the same file
    assert calibration.rule.name == data["threshold"]["rule"]
    assert data["evidence"]["candidates"] and data["evidence"]["held_back"]["winner"]
    assert (tmp_path / "run" / "calibration-cache" / "cache.json").is_file()
    # the default search from the teachers is the ranked one: its winner was scored exactly
    engine = data["evidence"]["search_engine"]
    assert engine["mode"] == "ranked" and engine["finalists"] == 3 and data["evidence"]["winner"]["exact"]
    assert 0 < engine["exact_masks"] < engine["screened_masks"]
    # ... and it says how it ran, as the search from saved maps does: on the local cluster's
    # workers (one per core), with the masks it planned and the candidates it rescored
    assert engine["scheduler"] == "local" and engine["workers"] >= 1
    assert engine["masks_planned"] >= engine["screened_masks"] > 0
    assert engine["candidates_rescored_exactly"] >= 1 and engine["exhaustive"] is False

    report = tmp_path / "run" / "ablation.json"
    code = main(["ablate", "--data", str(root), "--teachers", str(teachers), "--volumes", "2",
                 "--device", "cpu", "--json", str(report), "--calibration", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "full ensemble (3 teachers, 2 volumes)" in printed
    assert "recommendation:" in printed
    ablation = json.loads(report.read_text())
    assert set(ablation["alone"]) == {"unet_0", "unet_1", "unet_2"}
    assert ablation["calibration"] == calibration.to_json()


def test_predict_applies_a_written_calibration(root, teachers, tmp_path, capsys):
    """predict reads calibrate's file (evidence and all) and thresholds with its rule."""
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(out), "--volumes", "1", "--device", "cpu", "--holdout", "0",
                 "--rules", "fixed,otsu"]) == 0
    data = json.loads(out.read_text())
    assert "evidence" in data and "held_back" not in data["evidence"]
    assert {c["rule"] for c in data["evidence"]["candidates"]} == {"fixed", "otsu"}
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(tmp_path / "submission.zip"), "--device", "cpu",
                 "--calibration", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "VALID" in capsys.readouterr().out
    record = json.loads((tmp_path / "vesukit-work" / "run.json").read_text())
    assert json.dumps(data["threshold"], sort_keys=True)[1:-1] in json.dumps(record,
                                                                           sort_keys=True)


def test_calibrate_rejects_a_root_without_labels(tmp_path, teachers, capsys):
    empty = make_competition_root(tmp_path / "r", n_test=1, n_train=1, shapes=SHAPES, seed=1)
    for label in (empty / "train_labels").glob("*.tif"):
        label.unlink()
    code = main(["calibrate", "--data", str(empty), "--teachers", str(teachers), "--out",
                 str(tmp_path / "c.json"), "--device", "cpu"])
    assert code == 1
    assert "needs labelled volumes" in capsys.readouterr().err
    code = main(["calibrate", "--data", str(empty), "--teachers", str(teachers), "--out",
                 str(tmp_path / "c.json"), "--rules", "fixed,median"])
    assert code == 2
    assert "median" in capsys.readouterr().err


def test_budget_hours_bounds_the_volumes_the_teachers_run_on(root, teachers, tmp_path, capsys,
                                                             monkeypatch):
    """calibrate --teachers --budget-hours: the teachers run on the first volume, a mask of it
    is timed, and only as many volumes as fit the budget are searched, so the teachers run on
    those only. The plan it prices is the one the search's progress line counts, and bounds
    what the search did."""
    from vesukit.calibrate import engine as engine_module

    out = tmp_path / "tight" / "calibration.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(out), "--device", "cpu", "--holdout", "0.5", "--steps", "basic",
                 "--budget-hours", "0.00001", "--scheduler", "none"]) == 0
    printed = capsys.readouterr().out
    assert "searched 2 of 3 volume(s)" in printed
    data = json.loads(out.read_text())
    budget, work = data["evidence"]["budget"], data["evidence"]["search_engine"]
    ids = labelled_ids(root)
    assert budget["volumes_searched"] == 2 and budget["volumes_available"] == 3
    assert data["evidence"]["fit_volumes"] + data["evidence"]["held_back_volumes"] == ids[:2]
    # the teachers never ran on the third volume
    assert MapCache(tmp_path / "tight" / "calibration-cache").volume_ids == tuple(ids[:2])
    assert work["screened_masks"] <= budget["screened_volumes"] * budget["screened_masks_per_volume_bound"]
    assert work["exact_masks"] <= (budget["screened_volumes"] * budget["exact_masks_per_volume_bound"]
                                   + budget["judged_volumes"] * budget["whole_masks_per_judged_volume"])
    assert work["screened_masks"] + work["exact_masks"] <= work["masks_planned"]

    # with a fixed timer the arithmetic is checked exactly: 2 s a mask, one worker
    monkeypatch.setattr(engine_module, "time_one_mask", lambda volume, candidate, exact: 2.0)
    out = tmp_path / "roomy" / "calibration.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(out), "--device", "cpu", "--holdout", "0.5", "--steps", "basic",
                 "--budget-hours", "10", "--scheduler", "none"]) == 0
    budget = json.loads(out.read_text())["evidence"]["budget"]
    assert budget["volumes_searched"] == 3 and budget["judged_volumes"] == 2  # 0.5 of 3, rounded
    masks = (budget["screened_volumes"] * (budget["screened_masks_per_volume_bound"]
                                           + budget["exact_masks_per_volume_bound"])
             + budget["judged_volumes"] * (budget["whole_masks_per_judged_volume"]
                                           + budget["whole_bounds_per_judged_volume"]))
    assert budget["estimated_hours_at_most"] * 3600 == pytest.approx(2.0 * masks)
    # the held-back check: the winner and the best fixed threshold exactly, every fixed
    # threshold with the winner's chain bounded, and at most all of them exactly
    from vesukit.calibrate.search import RULE_GRID
    assert budget["whole_masks_per_judged_volume"] == 2 + len(RULE_GRID["fixed"])
    assert budget["whole_bounds_per_judged_volume"] == len(RULE_GRID["fixed"])
