"""The training loop on real synthetic volumes with a real tiny student (CPU, seconds each):
learning, progressive unfreezing, early stopping, monitoring warnings, resume, determinism."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")
pytest.importorskip("segmentation_models_pytorch")

from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import build_model, save_checkpoint  # noqa: E402
from vesukit.train import TrainError  # noqa: E402
from vesukit.train.loop import EarlyStopping, Stage, TrainConfig, train_student  # noqa: E402
from vesukit.train.monitor import Limits, Monitor  # noqa: E402
from vesukit.train.run import held_back_volumes, label_volumes, split_ids  # noqa: E402
from vesukit.train.student import parts, student_spec  # noqa: E402

SHAPE = (24, 32, 32)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("root"), n_test=1, n_train=3,
                                 shapes=(SHAPE,), seed=3)


@pytest.fixture(scope="module")
def data(root):
    train_ids, held_ids = split_ids(root, None, 0.34)
    return label_volumes(root, train_ids), held_back_volumes(root, held_ids)


@pytest.fixture(scope="module")
def spec():
    return student_spec("smp.Unet", "tiny", patch=32)


def config(**changes):
    base = TrainConfig(stages=(Stage("all", 2, 3e-3),), steps_per_epoch=6, batch_size=4,
                       seed=1, limits=Limits(warmup_steps=4))
    return dataclasses.replace(base, **changes)


def test_the_loss_falls_on_a_learnable_target(spec, data, tmp_path):
    volumes, _ = data
    result, _ = train_student(spec, volumes, tmp_path, config(stages=(Stage("all", 4, 5e-3),)))
    losses = [h["loss"]["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 4
    assert (tmp_path / "train_log.png").stat().st_size > 1000


def _snapshot(model):
    return {name: {k: v.detach().clone() for k, v in getattr(model, name).state_dict().items()}
            for names in parts(model).values() for name in names}


def _changed(before, after, name):
    return any(not torch.equal(before[name][k], after[name][k]) for k in before[name])


def test_unfreezing_follows_head_decoder_encoder(spec, data, tmp_path):
    volumes, _ = data
    torch.manual_seed(1)
    snapshots = [_snapshot(build_model(spec))]  # the loop builds the same initial model

    def keep(record, model):
        snapshots.append(_snapshot(model))

    stages = (Stage("head", 1, 1e-2), Stage("decoder", 1, 1e-2), Stage("encoder", 1, 1e-2))
    train_student(spec, volumes, tmp_path, config(stages=stages), on_epoch=keep)
    start, head, decoder, encoder = snapshots
    assert _changed(start, head, "segmentation_head")
    assert not _changed(start, head, "decoder") and not _changed(start, head, "encoder")
    assert _changed(head, decoder, "decoder") and _changed(head, decoder, "segmentation_head")
    assert not _changed(head, decoder, "encoder")  # parameters and normalisation statistics
    assert _changed(decoder, encoder, "encoder")


def test_early_stopping_rules():
    patient = EarlyStopping(patience=2, decline=0)
    assert [patient.update(s)[1] is not None for s in (0.5, 0.6, 0.6, 0.59)] == \
        [False, False, False, True]
    falling = EarlyStopping(patience=0, decline=2)
    assert [falling.update(s)[1] is not None for s in (0.5, 0.7, 0.65, 0.6)] == \
        [False, False, False, True]


def test_early_stopping_ends_a_stage_that_stopped_improving(spec, data, tmp_path):
    volumes, held = data
    # a learning rate too small to move the score: no improvement after the first evaluation
    cfg = config(stages=(Stage("all", 6, 1e-9), Stage("head", 1, 1e-9)), patience=1,
                 steps_per_epoch=2)
    result, _ = train_student(spec, volumes, tmp_path, cfg, held_back=held)
    assert [h["stage"] for h in result.history] == ["all", "all", "head"]
    assert result.stopped == ["stage all after epoch 2: no improvement in 1 evaluations"]
    assert all(0 <= h["eval"]["score"] <= 1 for h in result.history)


def _init_with_head_bias(spec, path, bias):
    torch.manual_seed(1)
    model = build_model(spec)
    with torch.no_grad():
        head = model.segmentation_head[0]
        head.weight.zero_()
        head.bias.fill_(bias)
    save_checkpoint(model, path)
    return path


def test_a_healthy_run_raises_no_warning(spec, data, tmp_path):
    volumes, _ = data
    # (the component check needs a student good enough not to merge the tiny volumes'
    # sheets; it is shown quiet on a correct mask below)
    result, _ = train_student(spec, volumes, tmp_path, config(stages=(Stage("all", 3, 5e-3),)))
    assert result.warnings == []
    assert len(result.history) == 3 and result.history[-1]["pred_magnitude"] > 0.25


def test_a_zeroed_gradient_warns_vanishing(spec, data, tmp_path):
    volumes, _ = data
    cfg = config(loss_weights={"bce": 0.0, "dice": 0.0}, stages=(Stage("all", 1, 1e-3),))
    result, _ = train_student(spec, volumes, tmp_path, cfg)
    assert [w.split(":")[0] for w in result.warnings] == ["vanishing gradients"]


def test_a_huge_loss_warns_exploding(spec, data, tmp_path):
    volumes, _ = data
    cfg = config(loss_weights={"bce": 1e5, "dice": 0.0}, stages=(Stage("all", 1, 1e-6),))
    result, _ = train_student(spec, volumes, tmp_path, cfg)
    assert "exploding gradients" in [w.split(":")[0] for w in result.warnings]


def test_a_collapsed_output_warns(spec, data, tmp_path):
    volumes, _ = data
    init = _init_with_head_bias(spec, tmp_path / "timid.safetensors", -8.0)
    result, _ = train_student(spec, volumes, tmp_path / "run", config(
        stages=(Stage("all", 1, 1e-9),)), initial_weights=init)
    assert [w.split(":")[0] for w in result.warnings] == ["collapsed output"]
    assert result.history[0]["pred_magnitude"] < 0.01 < result.history[0]["target_magnitude"]


def test_one_giant_component_warns(spec, data, tmp_path):
    volumes, held = data
    init = _init_with_head_bias(spec, tmp_path / "bold.safetensors", 8.0)
    result, _ = train_student(spec, volumes, tmp_path / "run", config(
        stages=(Stage("all", 1, 1e-9),)), initial_weights=init, held_back=held)
    assert [w.split(":")[0] for w in result.warnings] == ["one giant component"]


def test_monitor_components_quiet_on_the_label_itself(data):
    _, held = data
    label = held[0].label
    message, values = Monitor().components(label == 1, label, "v", "all")
    assert message is None and values["largest_component_share"] < 0.6


class Killed(Exception):
    pass


def test_resume_after_a_kill_continues_from_the_last_checkpoint(spec, data, tmp_path):
    volumes, held = data
    cfg = config(stages=(Stage("all", 2, 3e-3), Stage("head", 2, 1e-3)), steps_per_epoch=3)
    whole, whole_model = train_student(spec, volumes, tmp_path / "whole", cfg, held_back=held)

    def kill_after_third(record, model):
        if len(seen) == 2:
            raise Killed
        seen.append(record)

    seen = []
    with pytest.raises(Killed):
        train_student(spec, volumes, tmp_path / "cut", cfg, held_back=held,
                      on_epoch=kill_after_third)
    with pytest.raises(TrainError, match="--resume"):
        train_student(spec, volumes, tmp_path / "cut", cfg, held_back=held)
    resumed_epochs = []
    result, model = train_student(spec, volumes, tmp_path / "cut", cfg, held_back=held,
                                  resume=True, on_epoch=lambda r, m: resumed_epochs.append(r))
    assert [(r["stage"], r["epoch"]) for r in resumed_epochs] == [("head", 2)]
    assert result.epochs_run == whole.epochs_run == 4
    # deterministic on the CPU: the interrupted run ends exactly where the whole one does
    assert [h["loss"] for h in result.history] == [h["loss"] for h in whole.history]
    for (k, a), b in zip(whole_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    log = (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 4


def test_resume_refuses_other_settings(spec, data, tmp_path):
    volumes, _ = data
    cfg = config(stages=(Stage("all", 1, 1e-3),), steps_per_epoch=1)
    train_student(spec, volumes, tmp_path, cfg)
    with pytest.raises(TrainError, match="other settings"):
        train_student(spec, volumes, tmp_path, dataclasses.replace(cfg, batch_size=2), resume=True)


def test_sampling_sees_enough_surface(data):
    from vesukit.train.sampling import Augment, PatchSampler

    volumes, _ = data
    spec = student_spec("resenc_unet3d", "tiny", patch=8)
    share = {}
    for fraction in (0.0, 1.0):
        sampler = PatchSampler(volumes, spec, surface_fraction=fraction, augment=Augment.none())
        patches = [sampler.sample() for _ in range(300)]
        assert all(x.shape == (1, 8, 8, 8) and t.shape == w.shape == (1, 8, 8, 8)
                   for x, t, w in patches)
        share[fraction] = float(np.mean([((t > 0.5) & (w > 0)).any() for _, t, w in patches]))
    assert share[1.0] == 1.0 and share[0.0] < 0.8
