"""Teacher specs and the manifest: JSON round trip, strict validation, messages that name the
teacher and the field. These tests do not need torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vesukit.teachers import MANIFEST_NAME, Normalization, TeacherError, TeacherSpec, load_manifest, save_manifest
from vesukit.teachers.presets import preset_specs


def _all_preset_specs():
    return [s for preset in ("seed9", "unet3d") for size in ("tiny", "full")
            for s in preset_specs(preset, size)]


def test_every_preset_spec_round_trips_through_json():
    for spec in _all_preset_specs():
        text = json.dumps(spec.to_json())
        again = TeacherSpec.from_json(json.loads(text), where="test")
        assert again == spec
        assert hash(again) == hash(spec)
        assert again.to_json() == spec.to_json()


def test_spec_is_frozen_and_model_kwargs_read_only():
    spec = preset_specs("seed9", "tiny")[0]
    with pytest.raises(AttributeError):
        spec.context = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.model_kwargs["layers"] = [2]  # type: ignore[index]
    assert spec.in_channels == spec.context == 5
    assert preset_specs("unet3d", "tiny")[0].in_channels == 1


def _good() -> dict:
    return preset_specs("seed9", "tiny")[0].to_json()


@pytest.mark.parametrize("change, field, words", [
    ({"colour": "red"}, "colour", "unknown field"),
    ({"context": 4}, "context", "odd"),
    ({"context": 0}, "context", ">= 1"),
    ({"patch": [64, 50]}, "patch", "multiple of 32"),
    ({"patch": [64]}, "patch", "2 positive integers"),
    ({"channel": 1}, "channel", "out_channels=1"),
    ({"weight": -1}, "weight", ">= 0"),
    ({"weight": float("nan")}, "weight", "finite"),
    ({"tta": ["flip", "transpose"]}, "tta", "flip"),
    ({"arch": "smp.Nope"}, "arch", "unknown architecture"),
    ({"input_kind": "3d"}, "input_kind", "2.5d"),
    ({"output": "mask"}, "output", "logit"),
    ({"axes": [0, 3]}, "axes", "0, 1, 2"),
    ({"axes": []}, "axes", "distinct"),
    ({"encoder": None}, "encoder", "needs an encoder"),
    ({"normalization": {"scale": 1, "mean": 0, "std": 0}}, "normalization.std", "> 0"),
    ({"normalization": {"scale": 1, "gamma": 2}}, "normalization.gamma", "unknown"),
    ({"model_kwargs": {"encoder_weights": "imagenet"}}, "model_kwargs.encoder_weights",
     "never downloaded"),
    ({"out_channels": True}, "out_channels", "integer"),
    ({"name": "a b/c"}, "name", "letters"),
    ({"plane": "strips"}, "plane", "'tile', 'whole'"),
])
def test_impossible_values_name_the_teacher_and_the_field(change, field, words):
    data = {**_good(), **change}
    with pytest.raises(TeacherError) as info:
        TeacherSpec.from_json(data, where="teachers.json, teacher #1")
    message = str(info.value)
    assert message.startswith("teachers.json, teacher #1: teacher ")
    assert f"field '{field}'" in message
    assert words in message


def test_missing_required_field():
    data = _good()
    del data["patch"]
    with pytest.raises(TeacherError, match=r"teacher 'v1_default': field 'patch': missing"):
        TeacherSpec.from_json(data, where="x")


def test_3d_spec_rules():
    spec = preset_specs("unet3d", "tiny")[0]
    with pytest.raises(TeacherError, match="field 'context'.*3d"):
        TeacherSpec.from_json({**spec.to_json(), "context": 3}, where="x")
    with pytest.raises(TeacherError, match="field 'patch'.*multiple of 4"):
        TeacherSpec.from_json({**spec.to_json(), "patch": [32, 32, 30]}, where="x")
    with pytest.raises(TeacherError, match="field 'encoder'.*no encoder"):
        TeacherSpec.from_json({**spec.to_json(), "encoder": "resnet34"}, where="x")


def _write_folder(tmp_path: Path, specs) -> Path:
    for spec in specs:
        (tmp_path / spec.checkpoint).write_bytes(b"weights")
    save_manifest(tmp_path, specs)
    return tmp_path


def test_manifest_round_trip_and_checkpoint_paths(tmp_path):
    specs = preset_specs("unet3d", "tiny") + (preset_specs("seed9", "tiny")[1],)
    _write_folder(tmp_path, specs)
    manifest = load_manifest(tmp_path)
    assert manifest.teachers == specs
    assert manifest.root == tmp_path
    assert manifest.checkpoint_path(specs[0]) == tmp_path / specs[0].checkpoint
    assert load_manifest(tmp_path / MANIFEST_NAME).teachers == specs   # the file itself
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["format"] == 1 and len(data["teachers"]) == 2


def test_manifest_missing_checkpoint_names_teacher(tmp_path):
    specs = preset_specs("unet3d", "tiny")
    _write_folder(tmp_path, specs)
    (tmp_path / specs[0].checkpoint).unlink()
    with pytest.raises(TeacherError, match=r"teacher 'unet3d_resenc': field 'checkpoint': "
                                           r".*unet3d_resenc.safetensors does not exist"):
        load_manifest(tmp_path)
    # predict checks the files by loading them (a missing one drops that teacher only)
    assert load_manifest(tmp_path, require_files=False).teachers == specs


def test_a_weight_zero_teachers_checkpoint_is_never_checked(tmp_path):
    import dataclasses

    specs = preset_specs("seed9", "tiny")[:2]
    specs = (specs[0], dataclasses.replace(specs[1], weight=0))
    _write_folder(tmp_path, specs)
    (tmp_path / specs[1].checkpoint).unlink()
    assert load_manifest(tmp_path).teachers == specs


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.update(format=2), "field 'format'"),
    (lambda d: d.update(extra=1), "field 'extra': unknown top-level"),
    (lambda d: d.update(teachers=[]), "empty"),
    (lambda d: d["teachers"].append(dict(d["teachers"][0])), "'name': used twice"),
    (lambda d: d["teachers"][0].update(weight=0), "weight 0"),
    (lambda d: d["teachers"][0].update(context="5"), "teacher #1: teacher 'unet3d_resenc': "
                                                     "field 'context'"),
])
def test_manifest_validation(tmp_path, mutate, words):
    _write_folder(tmp_path, preset_specs("unet3d", "tiny"))
    path = tmp_path / MANIFEST_NAME
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(TeacherError, match=words):
        load_manifest(tmp_path)


def test_no_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(TeacherError, match="teachers init"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(TeacherError, match="cannot read the manifest as JSON"):
        load_manifest(tmp_path)


def test_normalization_defaults():
    assert Normalization() == Normalization(1 / 255, 0.0, 1.0)


def test_reading_manifests_does_not_import_torch(tmp_path):
    _write_folder(tmp_path, preset_specs("seed9", "tiny"))
    code = ("import sys, vesukit.teachers as t, vesukit.cli; "
            f"m = t.load_manifest({str(tmp_path)!r}); vesukit.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(m.teachers))")
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": src}, check=True)
    assert out.stdout.strip() == "9"
