"""Chunk by chunk, in process: every chunk equals the one-piece ensemble, borders included."""

from __future__ import annotations

import numpy as np
import pytest

from tests.scroll.conftest import AIR, SHAPE, make_volume, one_volume_maps


def test_windows_reaching_a_region_cover_it_and_clamp_like_replicate_padding():
    from vesukit.scroll.plan import window_axis

    axis = window_axis(40, 16, 0.5, 12, 20)  # grid 0, 8, 16, 24: windows 0, 8, 16 reach [12, 20)
    assert axis.starts == (0, 8, 16) and list(axis.index) == list(range(0, 32))
    assert axis.crop == slice(12, 20)
    short = window_axis(5, 8, 0.5, 0, 5)  # shorter than the patch: padded 1 before, 2 after
    assert list(short.index) == [0, 0, 1, 2, 3, 4, 4, 4] and short.crop == slice(1, 6)


@pytest.fixture(scope="module")
def full_volume(teachers):
    volume = make_volume()
    volume[:, :, :AIR] = np.random.default_rng(1).integers(0, 256, (SHAPE[0], SHAPE[1], AIR), dtype=np.uint8)
    return volume, one_volume_maps(volume, teachers)


@pytest.mark.parametrize("chunk", [(8, 12, 16), (5, 24, 11)])
def test_chunks_equal_the_one_piece_ensemble_at_every_border(teachers, full_volume, chunk):
    from vesukit.scroll.blocks import region_maps
    from vesukit.scroll.plan import chunk_grid, chunk_region
    from vesukit.teachers import load_manifest, load_teacher

    volume, reference = full_volume
    manifest = load_manifest(teachers)
    specs = list(manifest.teachers)
    models = [load_teacher(spec, manifest.root, device="cpu") for spec in specs]
    mean = np.full(SHAPE, np.nan, np.float32)
    disagreement = np.full(SHAPE, np.nan, np.float32)
    for index in chunk_grid(SHAPE, chunk):
        region = chunk_region(index, SHAPE, chunk)
        maps = region_maps(volume, SHAPE, region, specs, models, device="cpu").to_numpy()
        mean[region] = maps.mean
        disagreement[region] = maps.disagreement
    assert not np.isnan(mean).any()
    error = np.abs(mean - reference.mean)
    assert error.max() < 1e-5
    for axis, size in enumerate(chunk):  # the voxels on both sides of every chunk border
        borders = list(range(size, SHAPE[axis], size))
        planes = np.take(error, [b - 1 for b in borders] + borders, axis=axis)
        assert planes.size == 0 or planes.max() < 1e-5
    assert np.abs(disagreement - reference.disagreement).max() < 1e-5 or \
        np.mean(disagreement != reference.disagreement) < 1e-3  # votes flip only at p == 0.5 +- fp noise


def test_whole_slice_teachers_and_whole_volume_steps_are_refused(tmp_path):
    import dataclasses
    import json

    from tests.scroll.conftest import tiny_specs
    from vesukit.errors import UsageError
    from vesukit.scroll.decision import load_decision
    from vesukit.scroll.plan import teacher_passes

    whole = dataclasses.replace(tiny_specs()[1], plane="whole")
    with pytest.raises(UsageError, match="whole slices"):
        teacher_passes(whole, SHAPE, (slice(0, 8),) * 3, 0.5)
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": {"rule": "otsu"}}))
    with pytest.raises(UsageError, match="histogram"):
        load_decision(calibration)
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.5},
                                       "postprocess": [{"step": "remove_small", "min_voxels": 10}]}))
    with pytest.raises(UsageError, match="remove_small"):
        load_decision(calibration)
    # the winners' per-sheet steps need whole components too: refused, never run per chunk
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.5},
                                       "postprocess": "first_place"}))
    with pytest.raises(UsageError, match="first_place need whole connected components"):
        load_decision(calibration)
    # a fitted fusion (logit mean, its own weights) is refused, not silently averaged otherwise
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.5},
                                       "fusion": {"mode": "logit", "weights": {"a": 1.0}}}))
    with pytest.raises(UsageError, match="fitted fusion"):
        load_decision(calibration)


def test_chunk_decision_equals_the_one_piece_chain():
    """zero_border at the volume's faces and close with its halo, chunk by chunk."""
    from vesukit.decide import binarize
    from vesukit.decide.steps import apply_postprocess
    from vesukit.scroll.decision import ChunkDecision
    from vesukit.scroll.plan import chunk_grid, chunk_region

    rng = np.random.default_rng(3)
    mean = rng.random((20, 22, 24)).astype(np.float32) ** 3
    steps = ({"step": "zero_border", "width": 2}, {"step": "close", "radius": 1})
    expected = apply_postprocess(binarize(mean, 0.4), steps)
    decision = ChunkDecision(0.4, steps)
    got = np.zeros_like(expected)
    chunk = (7, 8, 9)
    for index in chunk_grid(mean.shape, chunk):
        own = chunk_region(index, mean.shape, chunk)
        region = chunk_region(index, mean.shape, chunk, decision.halo)
        inner = tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(own, region))
        got[own] = decision.apply(mean[region], region, mean.shape)[inner]
    np.testing.assert_array_equal(got, expected)


def test_input_is_an_ome_zarr_level_a_zarr_array_or_a_tiff(tmp_path):
    zarr = pytest.importorskip("zarr")
    from ome_zarr.writer import write_image

    from vesukit.data import write_volume
    from vesukit.errors import UsageError, VolumeError
    from vesukit.scroll.source import find_source

    volume = make_volume()
    write_image(volume, zarr.open_group(str(tmp_path / "image.zarr"), mode="w"), axes="zyx")
    assert find_source(tmp_path / "image.zarr", 0).open().shape == SHAPE
    level = find_source(tmp_path / "image.zarr", 1).open()
    assert level.shape[0] == SHAPE[0] and level.shape[1] < SHAPE[1]  # ome-zarr halves y and x
    with pytest.raises(UsageError, match="--level"):
        find_source(tmp_path / "image.zarr", 9)
    write_volume(tmp_path / "volume.tif", volume, "zlib")
    tiff = find_source(tmp_path / "volume.tif").open()
    np.testing.assert_array_equal(tiff[2:9, 3:20, 30:47], volume[2:9, 3:20, 30:47])
    zarr.open_array(str(tmp_path / "float.zarr"), mode="w", shape=(4, 4, 4), dtype="float32")[:] = 1
    with pytest.raises(VolumeError, match="uint8"):
        find_source(tmp_path / "float.zarr")


@pytest.mark.parametrize("bad, words", [
    ({"overlap": 1.0}, "--overlap 1.0"), ({"workers": 0}, "--workers 0"),
    ({"scheduler": "tcp://host:8786", "workers": 2}, "Drop --workers"), ({"chunk": (0, 8, 8)}, "--chunk 0 8 8"),
    ({"retries": -1}, "--retries -1"), ({"tta": "rotate"}, "--tta rotate"), ({"dtype": "int8"}, "--dtype int8"),
])
def test_segment_settings_are_checked_for_library_callers_too(bad, words, tmp_path):
    from vesukit.errors import UsageError
    from vesukit.scroll.run import SegmentConfig

    with pytest.raises(UsageError, match=words):
        SegmentConfig(input=tmp_path / "in.zarr", teachers=tmp_path, out=tmp_path / "out.zarr", **bad)
