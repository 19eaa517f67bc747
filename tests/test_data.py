"""Volume I/O and competition-root discovery, on real TIFF files written in each test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from vesukit import _optional
from vesukit.data import (
    encode_volume,
    find_competition_root,
    list_ids,
    list_test_ids,
    read_test_ids,
    read_volume,
    read_volume_pillow,
    read_volume_shape,
    write_volume,
)
from vesukit.errors import CompetitionRootError, VolumeError

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(7, 13, 11), dtype=np.uint8)


def write_with_pillow(path: Path, volume: np.ndarray, compression: str) -> None:
    pages = [Image.fromarray(plane) for plane in volume]
    pages[0].save(path, save_all=True, append_images=pages[1:], compression=compression)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("compression", [None, "zlib", "lzw"])
def test_read_volume_every_compression(tmp_path, volume, compression):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, volume, photometric="minisblack", compression=compression)
    out = read_volume(path)
    assert out.dtype == np.uint8 and out.shape == volume.shape
    np.testing.assert_array_equal(out, volume)


def test_lzw_falls_back_to_pillow_without_imagecodecs(tmp_path, volume, monkeypatch):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, volume, photometric="minisblack", compression="lzw")
    calls = []
    import vesukit.data as data

    real = data._read_pages_with_pillow
    monkeypatch.setattr(data, "_read_pages_with_pillow", lambda p: calls.append(p) or real(p))
    _optional.disable("imagecodecs")
    try:
        out = read_volume(path)
    finally:
        _optional.enable("imagecodecs")
    assert calls, "the Pillow path was not taken"
    np.testing.assert_array_equal(out, volume)


def test_lzw_reads_in_a_process_where_imagecodecs_cannot_be_imported(tmp_path, volume):
    """The Kaggle situation: imagecodecs absent for tifffile too, not only for vesukit."""
    path = tmp_path / "v.tif"
    write_with_pillow(path, volume, "tiff_lzw")
    np.save(tmp_path / "expected.npy", volume)
    code = (
        "import sys; sys.modules['imagecodecs'] = None\n"
        "import numpy as np, tifffile\n"
        "from vesukit.data import read_volume\n"
        f"out = read_volume({str(path)!r})\n"
        f"assert (out == np.load({str(tmp_path / 'expected.npy')!r})).all()\n"
        "try:\n"
        f"    tifffile.imread({str(path)!r}); print('tifffile-decoded')\n"
        "except Exception:\n"
        "    print('tifffile-failed')\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    # Proves the test is meaningful: tifffile alone cannot decode this file.
    assert "tifffile-failed" in result.stdout


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(VolumeError, match=r"nope\.tif: no such file"):
        read_volume(tmp_path / "nope.tif")


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    with pytest.raises(VolumeError, match=r"flat\.tif: holds a single 2D page.*one page per Z"):
        read_volume(path)


def test_rgb_pages_are_refused(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(VolumeError, match=r"rgb\.tif: page 0 has 3 samples per pixel"):
        read_volume(path)


def test_extra_samples_are_refused(tmp_path):
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8, 2), np.uint8), photometric="minisblack",
                     planarconfig="contig", extrasamples=[0])
    with pytest.raises(VolumeError, match=r"samples per pixel"):
        read_volume(path)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int8])
def test_non_uint8_is_refused(tmp_path, dtype):
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), dtype), photometric="minisblack")
    with pytest.raises(VolumeError, match=rf"wide\.tif: page 0 holds {np.dtype(dtype)} samples"):
        read_volume(path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_file_is_refused(tmp_path, volume, compression):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, volume, photometric="minisblack", compression=compression)
    data = path.read_bytes()
    # Keep the header and the first IFDs but drop the tail holding later pages' data and IFDs.
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError, match=r"cut\.tif: .*(truncated or corrupt|corrupt)"):
        read_volume(path)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "junk.tif"
    path.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(VolumeError, match=r"junk\.tif: cannot be decoded as a TIFF"):
        read_volume(path)


# --------------------------------------------------------------------------- writing


def test_write_reads_back_identically_through_tifffile_and_pillow(tmp_path, volume):
    path = write_volume(tmp_path / "mask.tif", volume)
    np.testing.assert_array_equal(tifffile.imread(path), volume)
    np.testing.assert_array_equal(read_volume_pillow(path), volume)  # the scorer's reader
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == volume.shape[0]
        assert tif.pages.first.compression == 8  # adobe deflate (zlib)


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path, volume, monkeypatch):
    target = tmp_path / "mask.tif"
    write_volume(target, volume)
    before = target.read_bytes()

    import vesukit.data as data

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(data.os, "fsync", crash)
    with pytest.raises(OSError):
        write_volume(target, np.zeros_like(volume))
    assert target.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_write_refuses_2d_and_float(tmp_path):
    with pytest.raises(VolumeError, match="must be 3D"):
        write_volume(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(VolumeError, match="must be uint8"):
        write_volume(tmp_path / "a.tif", np.zeros((2, 4, 4), np.float32))
    assert not list(tmp_path.iterdir())


def test_bool_masks_are_written_as_uint8(tmp_path):
    mask = np.zeros((3, 5, 5), bool)
    mask[1, 2, 2] = True
    out = read_volume(write_volume(tmp_path / "m.tif", mask))
    assert out.dtype == np.uint8 and out[1, 2, 2] == 1 and out.sum() == 1


def test_lzw_writing_without_imagecodecs_uses_pillow(tmp_path, volume):
    _optional.disable("imagecodecs")
    try:
        data = encode_volume(volume, compression="lzw")
    finally:
        _optional.enable("imagecodecs")
    path = tmp_path / "lzw.tif"
    path.write_bytes(data)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.compression == 5  # LZW
    np.testing.assert_array_equal(read_volume(path), volume)


# --------------------------------------------------------------------------- discovery


def make_root(folder: Path, csv_ids=None, image_ids=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if csv_ids is not None:
        lines = ["id,scroll_id"] + [f"{i},26002" for i in csv_ids]
        (folder / "test.csv").write_text("\n".join(lines) + "\n")
    if image_ids is not None:
        (folder / "test_images").mkdir(exist_ok=True)
        for i in image_ids:
            write_volume(folder / "test_images" / f"{i}.tif", np.zeros((2, 4, 4), np.uint8))
    return folder


@pytest.mark.parametrize("layout", ["vesuvius-challenge-surface-detection",
                                    "competitions/vesuvius-challenge-surface-detection",
                                    "datasets/someone/vesuvius-challenge-surface-detection"])
def test_root_is_found_under_each_kaggle_mount_layout(tmp_path, layout):
    root = make_root(tmp_path / "input" / layout, ["1", "2"], ["1", "2"])
    (tmp_path / "input" / "datasets" / "someone" / "teachers").mkdir(parents=True)
    assert find_competition_root(base=tmp_path / "input") == root


def test_base_comes_from_the_environment(tmp_path, monkeypatch):
    root = make_root(tmp_path / "in" / "vesuvius-challenge-surface-detection", ["9"], ["9"])
    monkeypatch.setenv("VESUKIT_INPUT_BASE", str(tmp_path / "in"))
    assert find_competition_root() == root


def test_explicit_root(tmp_path):
    root = make_root(tmp_path / "mine", ["1"], ["1"])
    assert find_competition_root(root) == root
    with pytest.raises(CompetitionRootError, match="not a directory"):
        find_competition_root(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompetitionRootError, match="holds neither test.csv nor test_images"):
        find_competition_root(tmp_path / "empty")


def test_no_root_found_says_where_it_looked(tmp_path):
    (tmp_path / "input" / "unrelated").mkdir(parents=True)
    with pytest.raises(CompetitionRootError, match=r"no competition root found under .*input"):
        find_competition_root(base=tmp_path / "input")


def test_ids_in_csv_order_when_both_agree(tmp_path):
    root = make_root(tmp_path / "r", ["30", "10", "20"], ["10", "20", "30"])
    assert list_test_ids(root) == ["30", "10", "20"]


def test_ids_from_either_source_alone(tmp_path):
    assert list_test_ids(make_root(tmp_path / "a", csv_ids=["5", "4"])) == ["5", "4"]
    assert list_test_ids(make_root(tmp_path / "b", image_ids=["7", "6"])) == ["6", "7"]


def test_a_test_row_without_image_stays_for_a_fallback_a_train_one_is_an_error(tmp_path):
    root = make_root(tmp_path / "r", ["1", "2", "3"], ["1"])
    assert read_test_ids(root) == (["1", "2", "3"], [])  # predict gives 2 and 3 fallbacks
    with pytest.raises(CompetitionRootError, match=r"2 row\(s\) of .*test\.csv have no .*: 2, 3"):
        list_ids(root, "test")  # the strict check calibrate's train split keeps


def test_a_test_image_without_row_is_ignored_with_a_warning(tmp_path):
    root = make_root(tmp_path / "r", ["1"], ["1", "8"])
    ids, notes = read_test_ids(root)
    assert ids == ["1"]
    assert len(notes) == 1 and "1 volume(s) in" in notes[0] and "have no row in" in notes[0]
    assert notes[0].endswith("are ignored (the scorer reads the csv): 8")


def test_a_test_id_listed_twice_counts_once_with_a_warning(tmp_path):
    root = make_root(tmp_path / "r", ["1", "2", "1"], ["1", "2"])
    ids, notes = read_test_ids(root)
    assert ids == ["1", "2"] and len(notes) == 1 and "ids listed twice, kept once: 1" in notes[0]


def test_a_volume_with_a_zero_size_dimension_is_a_volume_error(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "z.zarr"
    zarr.open_array(str(path), mode="w", shape=(0, 32, 32), dtype="uint8")
    with pytest.raises(VolumeError, match=r"z\.zarr: zarr array of shape \(0, 32, 32\) has a zero-size"):
        read_volume_shape(path)
    with pytest.raises(VolumeError, match="zero-size dimension"):
        read_volume(path)


def test_no_ids_at_all(tmp_path):
    with pytest.raises(CompetitionRootError, match="lists no test volumes"):
        list_test_ids(make_root(tmp_path / "a", csv_ids=[]))
    with pytest.raises(CompetitionRootError, match="lists no test volumes"):
        list_test_ids(make_root(tmp_path / "b", image_ids=[]))
    (tmp_path / "c").mkdir()
    with pytest.raises(CompetitionRootError, match="neither test.csv nor test_images"):
        list_test_ids(tmp_path / "c")


def test_csv_without_id_column(tmp_path):
    (tmp_path / "test.csv").write_text("volume,scroll\n1,2\n")
    with pytest.raises(CompetitionRootError, match="has no 'id' column"):
        list_ids(tmp_path, "test")
