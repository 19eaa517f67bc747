"""`predict` reads test_images/<id>.zarr beside or instead of <id>.tif."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")


def to_zarr(tif, remove: bool = True):
    from vesukit.data import read_volume

    volume = read_volume(tif)
    path = tif.with_suffix(".zarr")
    array = zarr.open_array(str(path), mode="w", shape=volume.shape, chunks=(8, 8, 8), dtype="uint8")
    array[:] = volume
    if remove:
        tif.unlink()
    return path, volume


def test_zarr_volumes_are_listed_read_and_measured(tmp_path):
    from vesukit.data import list_test_ids, read_volume, read_volume_shape, volume_path
    from vesukit.errors import VolumeError
    from vesukit.submission.validate import expected_volumes
    from vesukit.synth import make_competition_root

    root = make_competition_root(tmp_path / "root", n_test=2, n_train=0, shapes=[(12, 16, 20)], seed=2)
    first, second = list_test_ids(root)
    path, volume = to_zarr(root / "test_images" / f"{first}.tif")
    to_zarr(root / "test_images" / f"{second}.tif", remove=False)  # both: the TIFF wins
    (root / "test.csv").unlink()
    assert list_test_ids(root) == sorted([first, second])
    assert volume_path(root, first) == path and volume_path(root, second).suffix == ".tif"
    np.testing.assert_array_equal(read_volume(path), volume)
    assert read_volume_shape(path) == (12, 16, 20)
    assert expected_volumes(root)[1][first] == (12, 16, 20)
    bad = zarr.open_array(str(tmp_path / "bad.zarr"), mode="w", shape=(4, 4), dtype="float32")
    bad[:] = 1
    with pytest.raises(VolumeError, match="uint8"):
        read_volume(tmp_path / "bad.zarr")


def test_predict_on_a_zarr_volume_writes_the_same_mask_as_on_its_tiff(teachers, tmp_path):
    from vesukit.cli import main
    from vesukit.data import list_test_ids, read_volume_pillow
    from vesukit.synth import make_competition_root

    root = make_competition_root(tmp_path / "root", n_test=1, n_train=0, shapes=[(12, 16, 20)], seed=3)
    as_zarr = tmp_path / "zarr-root"
    shutil.copytree(root, as_zarr)
    (volume_id,) = list_test_ids(root)
    to_zarr(as_zarr / "test_images" / f"{volume_id}.tif")
    masks = []
    for data in (root, as_zarr):
        out = tmp_path / data.name / "submission.zip"
        assert main(["predict", "--data", str(data), "--teachers", str(teachers), "--out", str(out),
                     "--device", "cpu", "--workdir", str(tmp_path / data.name / "work")]) == 0
        with zipfile.ZipFile(out) as archive:
            masks.append(read_volume_pillow(io.BytesIO(archive.read(f"{volume_id}.tif"))))
    np.testing.assert_array_equal(masks[0], masks[1])
