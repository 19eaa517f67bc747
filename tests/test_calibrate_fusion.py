"""Fusion weights and mode fitted out-of-fold from the cached maps, and `calibrate --fusion`,
with real tiny 3D teachers (random weights, different seeds) on a synthetic root."""

import json

import numpy as np
import pytest

pytest.importorskip("numba")
torch = pytest.importorskip("torch")

from tests.fixtures import unet3d_ensemble  # noqa: E402
from vesukit.calibrate.cache import build_cache  # noqa: E402
from vesukit.calibrate.fusion import candidates, fit_fusion, fuse  # noqa: E402
from vesukit.calibrate.runner import labelled_ids, prepared_labels  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.decide import ThresholdRule  # noqa: E402
from vesukit.infer import EnsembleAccumulator  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import load_manifest  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("root"), n_test=1, n_train=3,
                                 shapes=((24, 32, 32),), seed=6)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    unet3d_ensemble(folder)
    return folder


def test_candidates_cover_modes_weights_and_leave_one_out():
    cands = candidates(["a", "b"], [1.0, 1.0], {"a": 0.5, "b": 0.25})
    labels = {(c.label, c.mode) for c in cands}
    assert ("equal", "probability") in labels and ("equal", "logit") in labels
    assert ("without a", "logit") in labels and ("favour b", "probability") in labels
    score = [c for c in cands if c.label == "score"][0]
    assert score.weights == (1.0, 0.5)
    # the manifest's weights equal the equal ones here: not tried twice
    assert not any(c.label == "manifest" for c in cands)


def test_fuse_matches_the_accumulator_in_logit_mode(root, teachers, tmp_path):
    manifest = load_manifest(teachers)
    ids = labelled_ids(root)
    cache = build_cache(tmp_path / "cache", root, manifest, ids[:1])
    maps = fuse(cache, ids[0], (1.0, 0.0, 2.0), "logit")
    accumulator = EnsembleAccumulator(maps.mean.shape, mode="logit")
    for name, weight in (("unet_0", 1.0), ("unet_2", 2.0)):
        accumulator.add(np.array(cache.teacher_map(ids[0], name), dtype=np.float32), weight)
    np.testing.assert_allclose(maps.mean, accumulator.result().to_numpy().mean, atol=1e-6)


def test_fit_chooses_the_best_candidate_and_checks_itself_out_of_fold(root, teachers, tmp_path):
    manifest = load_manifest(teachers)
    ids = labelled_ids(root)
    cache = build_cache(tmp_path / "cache", root, manifest, ids)
    labels = prepared_labels(root, ids)
    # a rule that follows the maps, so weights and mode change the masks
    rule = ThresholdRule("foreground_fraction", {"fraction": 0.1, "lo": 0.0, "hi": 1.0})
    fusion = fit_fusion(cache, labels, ids, rule)
    table = fusion["evidence"]["candidates"]
    assert {c["mode"] for c in table} == {"probability", "logit"}
    assert fusion["weights"] == table[0]["weights"] and fusion["mode"] == table[0]["mode"]
    assert table[0]["mean"] == max(c["mean"] for c in table)
    oof = fusion["evidence"]["out_of_fold"]
    assert [f["held_out"] for f in oof["folds"]] == [[i] for i in ids]  # few: one out each
    assert oof["score"] == pytest.approx(np.mean([f["score"] for f in oof["folds"]]))
    assert 0 <= oof["equal_probability"] <= 1


def test_the_procedure_check_takes_at_most_its_folds(root, teachers, tmp_path):
    """Leaving each of n volumes out costs about n^2 masks (the score-weighted candidates are
    new vectors in every fold): at 75 fit volumes of 320^3, some 20,000 whole-volume masks.
    The check deals the volumes into at most FUSION_FOLDS folds; each volume is held out once,
    and its score is the fold choice's, scored as leaving it out alone would score it."""
    manifest = load_manifest(teachers)
    ids = labelled_ids(root)
    cache = build_cache(tmp_path / "cache", root, manifest, ids)
    labels = prepared_labels(root, ids)
    rule = ThresholdRule("foreground_fraction", {"fraction": 0.1, "lo": 0.0, "hi": 1.0})
    two = fit_fusion(cache, labels, ids, rule, folds=2)["evidence"]["out_of_fold"]
    assert len(two["folds"]) == 2
    assert sorted(v for f in two["folds"] for v in f["held_out"]) == sorted(ids)
    assert sorted(two["per_volume"]) == sorted(ids)
    assert two["score"] == pytest.approx(np.mean(list(two["per_volume"].values())))
    for fold in two["folds"]:  # each fold's choice, made without its held volumes
        alone = fit_fusion(cache, labels, [i for i in ids if i not in fold["held_out"]], rule)
        assert fold["chosen"] == {k: alone[k] for k in ("label", "mode", "weights")}


def test_a_dask_client_scores_the_volumes_as_one_process_does(root, teachers, tmp_path):
    """calibrate --fusion scores the volumes on the search's Dask workers: label files and the
    cache folder travel as paths, and the block is the one one process writes."""
    distributed = pytest.importorskip("distributed")

    manifest = load_manifest(teachers)
    ids = labelled_ids(root)
    cache = build_cache(tmp_path / "cache", root, manifest, ids)
    from vesukit.calibrate.labels import LabelFile
    from vesukit.data import volume_path

    files = {i: LabelFile(volume_path(root, i, "train_labels"), i) for i in ids}
    rule = ThresholdRule("foreground_fraction", {"fraction": 0.1, "lo": 0.0, "hi": 1.0})
    here = fit_fusion(cache, files, ids, rule)
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=True,
                            dashboard_address=None) as client:
        there = fit_fusion(cache, files, ids, rule, client=client)
    assert there == here


def test_fit_holds_one_label_prepared_at_a_time(root, teachers, tmp_path, monkeypatch):
    """Labels read from their files (as `calibrate --fusion` passes them) are prepared for
    their volume's candidates and released after: at 100 volumes of 320^3 all of them
    prepared at once would not fit in memory. The choice is the one prepared labels give."""
    from vesukit.calibrate.labels import LabelFile
    from vesukit.data import volume_path

    ids = labelled_ids(root)
    cache = build_cache(tmp_path / "cache", root, load_manifest(teachers), ids)
    rule = ThresholdRule("foreground_fraction", {"fraction": 0.1, "lo": 0.0, "hi": 1.0})
    files = {i: LabelFile(volume_path(root, i, "train_labels"), i) for i in ids}
    held, most = [], 0
    original = LabelFile.prepared

    def counted(self):
        held.append(self.name) if self._prepared is None else None
        nonlocal most
        result = original(self)
        most = max(most, sum(f._prepared is not None for f in files.values()))
        return result

    monkeypatch.setattr(LabelFile, "prepared", counted)
    from_files = fit_fusion(cache, files, ids, rule)
    assert most == 1 and all(f._prepared is None for f in files.values())
    assert sorted(set(held)) == sorted(ids)
    from_prepared = fit_fusion(cache, prepared_labels(root, ids), ids, rule)
    assert from_files == from_prepared


def test_calibrate_fusion_writes_the_block_and_a_weighted_manifest(root, teachers, tmp_path,
                                                                   capsys):
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(out), "--device", "cpu", "--rules", "fixed", "--top-k", "1",
                 "--fusion"]) == 0
    data = json.loads(out.read_text())
    assert data["fusion"]["mode"] in ("probability", "logit")
    assert data["fusion"]["evidence"]["out_of_fold"]["folds"]
    fused = load_manifest(tmp_path / "teachers.fused.json")
    assert {s.name: s.weight for s in fused.teachers} == \
        {n: w for n, w in data["fusion"]["weights"].items() if w > 0}
    assert "out-of-fold" in capsys.readouterr().out
    zip_path = tmp_path / "sub.zip"
    assert main(["predict", "--data", str(root), "--teachers", str(tmp_path / "teachers.fused.json"),
                 "--out", str(zip_path), "--device", "cpu", "--workdir", str(tmp_path / "w")]) == 0
    # predict --calibration applies the fitted block itself, with the original manifest
    assert main(["predict", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(tmp_path / "sub2.zip"), "--device", "cpu", "--workdir", str(tmp_path / "w2"),
                 "--calibration", str(out)]) == 0
    record = json.loads((tmp_path / "w2" / "run.json").read_text())
    assert record["fusion"] == {"mode": data["fusion"]["mode"], "weights": data["fusion"]["weights"],
                                "source": "calibration", "weights_from": "calibration"}


def test_calibrate_fusion_fits_on_the_search_sample(root, teachers, tmp_path):
    """At scale the fusion is fitted on the volumes the search samples (whole), not on every
    fit volume: each weight candidate is an exact whole-volume mask per volume."""
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(out), "--device", "cpu", "--rules", "fixed", "--top-k", "1",
                 "--steps", "basic", "--holdout", "0", "--search-volumes", "2",
                 "--fusion", "--scheduler", "none"]) == 0
    data = json.loads(out.read_text())
    sampled = data["evidence"]["search_engine"]["sample"]["screened_volumes"]
    assert len(sampled) == 2 < len(labelled_ids(root))
    assert data["fusion"]["evidence"]["volumes"] == sampled
