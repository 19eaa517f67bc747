"""Synthetic competition data: layout, determinism, and resemblance to the real volumes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from vesukit.data import find_competition_root, list_ids, list_test_ids, read_volume
from vesukit.synth import BORDER, make_competition_root, synth_volume


def test_volume_statistics_resemble_the_competition():
    image, label = synth_volume((96, 112, 128), seed=3)
    assert image.dtype == np.uint8 and label.dtype == np.uint8
    assert image.shape == label.shape == (96, 112, 128)
    # competition.md: intensity mean ~88, sd ~48; label 1 4-9 %, 0 25-39 %, 2 52-71 %.
    assert 70 < image.mean() < 105 and 35 < image.std() < 60
    fractions = [float((label == k).mean()) for k in (0, 1, 2)]
    assert 0.03 < fractions[1] < 0.11
    assert 0.2 < fractions[0] < 0.5
    assert 0.4 < fractions[2] < 0.75
    assert set(np.unique(label)) == {0, 1, 2}


def test_zero_border_in_y_and_x():
    image, label = synth_volume((16, 40, 40), seed=1)
    for array in (image, label):
        assert not array[:, :BORDER].any() and not array[:, -BORDER:].any()
        assert not array[:, :, :BORDER].any() and not array[:, :, -BORDER:].any()
    assert image[:, BORDER:-BORDER, BORDER:-BORDER].min() >= 0
    assert image[:, BORDER:-BORDER, BORDER:-BORDER].mean() > 40


def test_sheets_are_thin_and_several():
    image, label = synth_volume((64, 64, 64), seed=5)
    surface = label == 1
    # Several separate sheets (not one blob), and thin: eroding a 2-voxel sheet removes most.
    _, n_components = ndimage.label(surface)
    assert n_components >= 4
    eroded = ndimage.binary_erosion(surface, iterations=1)
    assert eroded.sum() < 0.35 * surface.sum()
    # Surfaces sit on bright papyrus: the image is brighter there than elsewhere.
    assert image[surface].mean() > image[label == 0].mean() + 30


def test_deterministic_by_seed_and_seed_matters():
    a = synth_volume((20, 24, 28), seed=11)
    b = synth_volume((20, 24, 28), seed=11)
    c = synth_volume((20, 24, 28), seed=12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_competition_root_layout(tmp_path):
    root = make_competition_root(tmp_path / "comp", n_test=3, n_train=2,
                                 shapes=[(24, 32, 40), (30, 30, 30)], seed=4)
    for name in ("train.csv", "test.csv", "train_images", "train_labels", "test_images"):
        assert (root / name).exists()
    with open(root / "train.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "scroll_id"] and len(rows) == 2
    test_ids = list_test_ids(root)
    train_ids = list_ids(root, "train")
    assert len(test_ids) == 3 and len(train_ids) == 2 and not set(test_ids) & set(train_ids)
    assert all(i.isdigit() for i in test_ids + train_ids)  # Kaggle ids are numbers
    shapes = [read_volume(root / "test_images" / f"{i}.tif").shape for i in test_ids]
    assert shapes == [(24, 32, 40), (30, 30, 30), (24, 32, 40)]
    for volume_id in train_ids:
        label = read_volume(root / "train_labels" / f"{volume_id}.tif")
        image = read_volume(root / "train_images" / f"{volume_id}.tif")
        assert label.shape == image.shape and label.max() == 2
        with tifffile.TiffFile(root / "train_images" / f"{volume_id}.tif") as tif:
            assert tif.pages.first.compression == 5  # LZW, like the competition's files
    assert find_competition_root(base=tmp_path) == root


def test_competition_root_is_deterministic(tmp_path):
    a = make_competition_root(tmp_path / "a", n_test=1, n_train=1, shapes=[(12, 16, 16)], seed=2)
    b = make_competition_root(tmp_path / "b", n_test=1, n_train=1, shapes=[(12, 16, 16)], seed=2)
    assert (a / "test.csv").read_text() == (b / "test.csv").read_text()
    for volume_id in list_test_ids(a):
        np.testing.assert_array_equal(read_volume(a / "test_images" / f"{volume_id}.tif"),
                                      read_volume(b / "test_images" / f"{volume_id}.tif"))


def test_competition_root_made_in_worker_processes_is_the_same_root(tmp_path):
    """`workers` only spreads the volumes over processes: each has its own seed, so the files
    are the same bytes as one process writes (a benchmark's 100 volumes are made this way)."""
    shapes = [(12, 16, 16), (10, 14, 18)]
    one = make_competition_root(tmp_path / "one", n_test=2, n_train=3, shapes=shapes, seed=6)
    two = make_competition_root(tmp_path / "two", n_test=2, n_train=3, shapes=shapes, seed=6,
                                workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert len(files) == 2 + 2 + 3 + 3
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


@pytest.mark.parametrize("shape", [(5, 9, 7), (2, 2, 2)])
def test_tiny_and_odd_shapes(shape):
    image, label = synth_volume(shape, seed=0)
    assert image.shape == label.shape == shape
