"""A teacher's `plane` setting: whole-slice 2.5D inference with a real smp network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.teachers.teacher_fixtures import tiny_spec
from vesukit.infer import predict_teacher
from vesukit.teachers import TeacherSpec, build_model
from vesukit.teachers.presets import preset_specs


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    spec = tiny_spec("smp.Unet", patch=(64, 64))
    return spec, build_model(spec).eval()


def test_plane_round_trips_and_defaults_to_tile():
    spec = preset_specs("seed9", "tiny")[0]
    assert spec.plane == "tile"
    whole = dataclasses.replace(spec, plane="whole")
    assert TeacherSpec.from_json(whole.to_json(), where="t") == whole
    assert spec.stride == 32


def test_whole_plane_runs_each_slice_in_one_piece(unet):
    spec, model = unet
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, size=(6, 40, 72), dtype=np.uint8)  # 40x72: not a tile size
    calls = []
    original = model.forward

    def spy(x):
        calls.append(tuple(x.shape[-2:]))
        return original(x)

    model.forward = spy
    try:
        whole = predict_teacher(volume, model, dataclasses.replace(spec, plane="whole"),
                                device="cpu")
        assert set(calls) == {(64, 96)}  # padded to multiples of the stride (32), one piece
        calls.clear()
        explicit = predict_teacher(volume, model, spec, device="cpu", plane="whole")
        tiled = predict_teacher(volume, model, spec, device="cpu")
        assert set(calls) == {(64, 96), (64, 64)}
    finally:
        model.forward = original
    assert whole.shape == tiled.shape == (6, 40, 72)
    torch.testing.assert_close(whole, explicit)  # the spec's plane equals passing it
    assert not torch.equal(whole, tiled)  # a different computation, not a silent no-op
