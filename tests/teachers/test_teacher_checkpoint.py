"""Checkpoint loading: every architecture survives every save form with identical outputs;
wrapped/prefixed checkpoints load; pickled code is refused; mismatches are summarised."""

from __future__ import annotations

import io
import json
import warnings

import pytest
import torch
from safetensors.torch import save_file
from teacher_fixtures import ALL_ARCHS, tiny_spec

from vesukit.teachers import TeacherError, build_model, load_teacher
from vesukit.teachers.checkpoint import load_weights, read_state_dict

SMP_ARCHS = [a for a in ALL_ARCHS if a.startswith("smp.")]


def _model(spec, seed=0):
    torch.manual_seed(seed)
    model = build_model(spec).eval()
    # Non-default BatchNorm/InstanceNorm statistics, so buffers are really carried over.
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return model


def _input(spec):
    return torch.randn(1, spec.in_channels, *spec.patch, generator=torch.Generator()
                       .manual_seed(1))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _torch_save(path, obj):
    torch.save(obj, path)


FORMS = {
    # name: (file name, writer(path, model))
    "safetensors": ("w.safetensors", lambda p, m: save_file(
        {k: v.contiguous() for k, v in _state(m).items()}, str(p))),
    "plain": ("w.pth", lambda p, m: _torch_save(p, _state(m))),
    "state_dict": ("w.pt", lambda p, m: _torch_save(p, {"state_dict": _state(m), "epoch": 3})),
    "model": ("w.pt", lambda p, m: _torch_save(p, {"model": _state(m), "optimizer": {
        "lr": 0.1}})),
    "model_state_dict": ("w.pt", lambda p, m: _torch_save(p, {"model_state_dict": _state(m),
                                                               "best": 0.61})),
    "ema_only": ("w.pt", lambda p, m: _torch_save(p, {"model_ema": _state(m)})),
    "ddp": ("w.pth", lambda p, m: _torch_save(p, {f"module.{k}": v
                                                  for k, v in _state(m).items()})),
    "compile": ("w.bin", lambda p, m: _torch_save(p, {f"_orig_mod.{k}": v
                                                      for k, v in _state(m).items()})),
    "ddp+compile+wrapped": ("w.pt", lambda p, m: _torch_save(p, {"state_dict": {
        f"module._orig_mod.{k}": v for k, v in _state(m).items()}})),
    "lightning": ("w.ckpt", lambda p, m: _torch_save(p, {
        "state_dict": {**{f"model.{k}": v for k, v in _state(m).items()},
                       "criterion.pos_weight": torch.ones(1)},
        "epoch": 7, "global_step": 70, "hyper_parameters": {"lr": 1e-3, "arch": "x"}})),
    "folder": ("w", lambda p, m: (p.mkdir(), save_file(
        {k: v.contiguous() for k, v in _state(m).items()}, str(p / "model.safetensors")))),
    "fp16": ("w.safetensors", lambda p, m: save_file(
        {k: (v.half() if v.is_floating_point() else v).contiguous()
         for k, v in _state(m).items()}, str(p))),
}


@pytest.fixture(scope="module", params=ALL_ARCHS)
def built(request):
    """(spec, trained model, its output, a second instance that checkpoints are loaded into)."""
    spec = tiny_spec(request.param)
    model = _model(spec)
    # on one thread, as the tests' own passes run (conftest): this module-scoped fixture runs
    # before that function-scoped one, and some CPU kernels (smp.UnetPlusPlus on torch 2.14)
    # sum in another order on two threads, which a bitwise comparison sees
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            expected = model(_input(spec))
    finally:
        torch.set_num_threads(before)
    return spec, model, expected, _model(spec, seed=1)


@pytest.mark.parametrize("form", list(FORMS))
def test_every_architecture_round_trips_every_form(tmp_path, built, form):
    spec, model, expected, target = built
    filename, write = FORMS[form]
    write(tmp_path / filename, model)
    with torch.no_grad():
        for tensor in target.state_dict().values():   # forget any earlier load
            if tensor.is_floating_point():
                tensor.add_(1.0)
    state, report = read_state_dict(tmp_path / filename)
    load_weights(target, state, report)
    with torch.no_grad():
        got = target(_input(spec))
    assert got.shape == (1, spec.out_channels, *spec.patch)
    if form == "fp16":
        torch.testing.assert_close(got, expected, atol=0.05, rtol=0.05)
        assert not torch.equal(got, expected)  # fp16 rounding is real, yet the load worked
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("form", ["safetensors", "ddp+compile+wrapped", "lightning"])
def test_load_teacher_end_to_end(tmp_path, built, form):
    """The public entry point: build from the spec, read, load, eval mode."""
    spec, model, expected, _ = built
    filename, write = FORMS[form]
    write(tmp_path / filename, model)
    loaded = load_teacher(spec.__class__(**{**spec.__dict__, "checkpoint": filename}),
                          tmp_path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(_input(spec)), expected)


@pytest.mark.parametrize("arch", SMP_ARCHS)
def test_smp_save_pretrained_folder(tmp_path, arch):
    spec = tiny_spec(arch, checkpoint="pretrained")
    model = _model(spec)
    model.save_pretrained(str(tmp_path / "pretrained"))
    assert (tmp_path / "pretrained" / "config.json").is_file()
    loaded = load_teacher(spec, tmp_path)
    x = _input(spec)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_smp_folder_that_disagrees_with_the_manifest(tmp_path):
    spec = tiny_spec("smp.Unet", checkpoint="pretrained")
    _model(spec).save_pretrained(str(tmp_path / "pretrained"))
    config = json.loads((tmp_path / "pretrained" / "config.json").read_text())
    config["_model_class"] = "FPN"
    (tmp_path / "pretrained" / "config.json").write_text(json.dumps(config))
    with pytest.raises(TeacherError, match=r"teacher 'smp_unet': field 'arch': the manifest "
                                           r"says 'smp.Unet' but .* smp.FPN"):
        load_teacher(spec, tmp_path)


def test_plain_weights_win_over_ema_unless_chosen(tmp_path):
    spec = tiny_spec("transunet", checkpoint="both.pt")
    plain, ema = _model(spec, seed=1), _model(spec, seed=2)
    torch.save({"state_dict": _state(plain), "state_dict_ema": _state(ema)}, tmp_path / "both.pt")
    x = _input(spec)
    loaded = load_teacher(spec, tmp_path)
    report = loaded.vesukit_load_report
    assert report.location == "state_dict" and report.alternatives == ["state_dict_ema"]
    assert "state_dict_ema" in report.summary()
    with torch.no_grad():
        assert torch.equal(loaded(x), plain(x))
        chosen = spec.__class__(**{**spec.__dict__, "checkpoint_key": "state_dict_ema"})
        assert torch.equal(load_teacher(chosen, tmp_path)(x), ema(x))
    wrong = spec.__class__(**{**spec.__dict__, "checkpoint_key": "ema_weights"})
    with pytest.raises(TeacherError, match=r"checkpoint_key 'ema_weights': no entry"):
        load_teacher(wrong, tmp_path)


def test_torch_averaged_model_checkpoint(tmp_path):
    spec = tiny_spec("resenc_unet3d", checkpoint="swa.pt")
    model = _model(spec)
    averaged = torch.optim.swa_utils.AveragedModel(model)
    torch.save(averaged.state_dict(), tmp_path / "swa.pt")   # 'module.' keys + 'n_averaged'
    loaded = load_teacher(spec, tmp_path)
    assert loaded.vesukit_load_report.dropped == ["n_averaged"]
    x = _input(spec)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_numpy_metadata_beside_the_weights_is_data_not_code(tmp_path):
    import numpy as np

    spec = tiny_spec("resenc_unet3d", checkpoint="np.pt")
    model = _model(spec)
    torch.save({"state_dict": _state(model), "best_dice": np.float64(0.61),
                "step": np.int32(7), "history": np.arange(4.0)}, tmp_path / "np.pt")
    loaded = load_teacher(spec, tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(_input(spec)), model(_input(spec)))


class TrainerState:
    """Something a training script might pickle alongside the weights."""

    def __init__(self):
        self.best_score = 0.6


def test_pickle_that_needs_code_is_refused(tmp_path):
    spec = tiny_spec("smp.Unet", checkpoint="evil.pt")
    torch.save({"state_dict": _state(_model(spec)), "trainer": TrainerState()},
               tmp_path / "evil.pt")
    with pytest.raises(TeacherError) as info:
        load_teacher(spec, tmp_path)
    message = str(info.value)
    assert "refused" in message and "pickled Python objects" in message
    assert "TrainerState" in message                       # names what would need code
    assert "never runs code" in message and "state_dict()" in message  # says what to do


def test_whole_module_pickle_is_refused(tmp_path):
    spec = tiny_spec("resenc_unet3d", checkpoint="whole.pth")
    torch.save(_model(spec), tmp_path / "whole.pth")
    with pytest.raises(TeacherError, match=r"refused.*ResEncUNet3D"):
        load_teacher(spec, tmp_path)


def test_context_mismatch_gives_a_readable_summary(tmp_path):
    trained = tiny_spec("smp.Unet", context=3)
    torch.save({"model": _state(_model(trained))}, tmp_path / "model.safetensors.pt")
    spec = tiny_spec("smp.Unet", context=5, checkpoint="model.safetensors.pt")
    with pytest.raises(TeacherError) as info:
        load_teacher(spec, tmp_path)
    message = str(info.value)
    assert "teacher 'smp_unet'" in message
    assert "1 with a different shape" in message
    assert "encoder.model.conv1.weight: [64, 3, 7, 7] vs [64, 5, 7, 7]" in message
    assert "trained on 3 channels, the spec gives 5" in message


def test_missing_and_unexpected_keys_are_grouped(tmp_path):
    spec = tiny_spec("transunet", checkpoint="w.pt")
    state = _state(_model(spec))
    removed = [k for k in state if k.startswith("bottleneck.layers.")]
    for key in removed:
        del state[key]
    state["extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(TeacherError) as info:
        load_teacher(spec, tmp_path)
    message = str(info.value)
    assert f"{len(removed)} missing from the checkpoint: bottleneck.layers.* " \
           f"({len(removed)} keys)" in message
    assert "1 unexpected in the checkpoint: extra_head.weight" in message
    # Not strict: what matches loads, the rest is reported as a warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_teacher(spec, tmp_path, strict=False)
    assert any("missing from the checkpoint" in str(w.message) for w in caught)
    assert model.vesukit_load_report.loaded == len(state) - 1


def test_other_architecture_says_nothing_matched(tmp_path):
    torch.save(_state(_model(tiny_spec("resenc_unet3d"))), tmp_path / "w.pt")
    spec = tiny_spec("smp.FPN", checkpoint="w.pt")
    with pytest.raises(TeacherError, match="nothing matched"):
        load_teacher(spec, tmp_path)


def test_unreadable_files(tmp_path):
    spec = tiny_spec("smp.Unet", checkpoint="w.pt")
    buffer = io.BytesIO()
    torch.save(_state(_model(spec)), buffer)
    (tmp_path / "w.pt").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(TeacherError, match="cannot read as a torch checkpoint"):
        load_teacher(spec, tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(TeacherError, match="cannot read as safetensors"):
        read_state_dict(tmp_path / "w.safetensors")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(TeacherError, match="no weights found: top-level entries are 'epoch'"):
        read_state_dict(tmp_path / "meta.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="folder must hold one of model.safetensors"):
        read_state_dict(tmp_path / "empty")
