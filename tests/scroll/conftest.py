"""Real teachers (a 3D U-Net and a 2.5D smp U-Net over two axes, saved and loaded from disk)
and a zarr volume whose left third is air, small enough for a shared CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

SHAPE = (16, 24, 48)
CHUNK = (8, 12, 16)
AIR = 36  # x < AIR is 0: the first column of chunks (and its halo, close included) reads only zeros


def tiny_specs():
    from vesukit.teachers import TeacherSpec, preset_specs

    cube = dataclasses.replace(preset_specs("unet3d", "tiny")[0], patch=(8, 8, 8))
    slices = TeacherSpec(name="slices", arch="smp.Unet", encoder="tu-resnet18", input_kind="2.5d", patch=(16, 16),
                         checkpoint="slices.safetensors", axes=(0, 2), context=3, weight=2.0,
                         model_kwargs={"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "encoder_depth": 3,
                                       "decoder_channels": [16, 8, 8]})
    return [cube, slices]


@pytest.fixture(scope="session")
def teachers(tmp_path_factory):
    import torch

    from vesukit.teachers import build_model, save_checkpoint, save_manifest

    folder = tmp_path_factory.mktemp("teachers")
    specs = tiny_specs()
    for seed, spec in enumerate(specs):
        torch.manual_seed(seed)
        save_checkpoint(build_model(spec).eval(), folder / spec.checkpoint)
    save_manifest(folder, specs)
    return folder


def make_volume(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    volume[:, :, :AIR] = 0
    return volume


@pytest.fixture(scope="session")
def volume_zarr(tmp_path_factory):
    import zarr

    path = tmp_path_factory.mktemp("input") / "volume.zarr"
    volume = make_volume()
    array = zarr.open_array(str(path), mode="w", shape=SHAPE, chunks=CHUNK, dtype="uint8")
    array[:] = volume
    return path, volume


def one_volume_maps(volume: np.ndarray, folder, tta: str = "none"):
    """The ensemble maps as predict computes them in process (VolumeComputer's calls)."""
    from vesukit.infer import EnsembleAccumulator, predict_teacher
    from vesukit.teachers import load_manifest, load_teacher

    manifest = load_manifest(folder)
    accumulator = EnsembleAccumulator(volume.shape, "cpu")
    for spec in manifest.teachers:
        model = load_teacher(spec, manifest.root, device="cpu")
        accumulator.add(predict_teacher(volume, model, spec, device="cpu", tta=tta), spec.weight, spec.name)
    return accumulator.result().to_numpy()
