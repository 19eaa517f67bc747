"""Presets and the `vesukit teachers init|check` command on real files."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from vesukit.cli import main
from vesukit.teachers import MANIFEST_NAME, load_manifest, load_teacher, write_preset
from vesukit.teachers.check import check_teachers, dummy_batch

SEED9 = ["v1_default", "v1_segformer_mit_b2", "v1_transunet_seresnext", "v1_segformer_mit_b4",
         "v2_default", "v2_segformer_mit_b2", "v2_transunet_seresnext", "v2_transunet",
         "v3_transunet"]


@pytest.fixture(scope="module")
def seed9(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed9")
    write_preset(folder, "seed9", "tiny", seed=0)
    return folder


def _digest(folder, spec):
    path = folder / spec.checkpoint
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files
                                   if p.suffix != ".md")).hexdigest()


def test_seed9_tiny_folder(seed9):
    manifest = load_manifest(seed9)
    assert [s.name for s in manifest.teachers] == SEED9
    specs = {s.name: s for s in manifest.teachers}
    # Every checkpoint form the loader supports is present in the preset.
    assert (seed9 / "v1_default" / "config.json").is_file()
    assert all(k.startswith("module.")
               for k in torch.load(seed9 / "v2_default.pth", weights_only=True))
    assert "state_dict" in torch.load(seed9 / "v3_transunet.ckpt", weights_only=True)
    # Context, axes, outputs vary so the engine's paths are exercised.
    assert {s.context for s in manifest.teachers} == {3, 5, 7}
    assert specs["v2_segformer_mit_b2"].axes == (0, 1, 2)
    assert (specs["v2_default"].out_channels, specs["v2_default"].channel) == (2, 1)
    assert specs["v2_transunet"].output == "probability"
    for spec in manifest.teachers:
        assert (seed9 / spec.checkpoint).exists()
        path = seed9 / spec.checkpoint
        files = list(path.rglob("*")) if path.is_dir() else [path]
        assert sum(p.stat().st_size for p in files) < 5_000_000     # tiny weights files


def test_seed9_teachers_load_strictly_and_run(seed9):
    rows = check_teachers(seed9)
    assert [r.name for r in rows] == SEED9
    assert all(r.ok for r in rows), [r.error for r in rows if not r.ok]
    assert all(0 < r.parameters < 2_000_000 for r in rows)


def test_presets_are_deterministic_in_the_seed(tmp_path, seed9):
    again = tmp_path / "again"
    other = tmp_path / "other"
    first = load_manifest(seed9).teachers[1:3]
    write_preset(again, "seed9", "tiny", seed=0)
    write_preset(other, "seed9", "tiny", seed=1)
    for spec in first:
        assert _digest(again, spec) == _digest(seed9, spec)
        assert _digest(other, spec) != _digest(seed9, spec)


def test_unet3d_preset(tmp_path):
    manifest = write_preset(tmp_path, "unet3d", "tiny")
    (spec,) = manifest.teachers
    assert spec.input_kind == "3d" and spec.patch == (32, 32, 32)
    model = load_teacher(spec, tmp_path)
    with torch.no_grad():
        assert model(dummy_batch(spec)).shape == (1, 1, 32, 32, 32)


def test_cli_init_and_check(tmp_path, capsys):
    folder = tmp_path / "t"
    assert main(["teachers", "init", str(folder), "--preset", "unet3d"]) == 0
    assert "unet3d_resenc" in capsys.readouterr().out
    # A second init does not silently replace a folder.
    assert main(["teachers", "init", str(folder), "--preset", "unet3d"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["teachers", "init", str(folder), "--preset", "unet3d", "--seed", "3",
                 "--force"]) == 0
    capsys.readouterr()
    assert main(["teachers", "check", str(folder)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["name", "architecture", "parameters", "input", "patch", "weight",
                      "load", "forward"]
    assert "unet3d_resenc" in out and "32x32x32" in out and "all 1 teacher(s) OK" in out


def test_cli_check_reports_broken_teachers(tmp_path, capsys, seed9):
    folder = tmp_path / "t"
    write_preset(folder, "unet3d", "tiny")
    (folder / "unet3d_resenc.safetensors").write_bytes(b"\x00" * 16)
    assert main(["teachers", "check", str(folder)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "cannot read as safetensors" in captured.out
    assert "1 of 1 teacher(s) failed: unet3d_resenc" in captured.err
    # A manifest error is a bad-input exit with the teacher and field named.
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["teachers"][0]["context"] = 2
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    assert main(["teachers", "check", str(folder)]) == 1
    assert "teacher 'unet3d_resenc': field 'context'" in capsys.readouterr().err
    assert main(["teachers", "check", str(seed9), "--device", "tpu"]) == 2


def test_cli_without_subcommand_is_a_usage_error(capsys):
    assert main(["teachers"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VESUKIT_SLOW"),
                    reason="writes 2.5 GB of full-size teachers; set VESUKIT_SLOW=1")
def test_full_seed9_init_and_check(tmp_path, capsys):
    assert main(["teachers", "init", str(tmp_path), "--size", "full"]) == 0
    capsys.readouterr()
    assert main(["teachers", "check", str(tmp_path)]) == 0
    assert "all 9 teacher(s) OK" in capsys.readouterr().out
