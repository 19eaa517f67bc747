"""SubmissionWriter: streamed, flat, deflated, atomic; refuses what the scorer would reject."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import tifffile
from submission_helpers import mask_for

from vesukit.data import read_volume_pillow
from vesukit.submission import SubmissionError, SubmissionWriter, validate_zip


def test_written_zip_validates_clean_and_reads_identically(tmp_path, root, expected):
    out = tmp_path / "submission.zip"
    masks = {i: mask_for(s, n) for n, (i, s) in enumerate(expected.items())}
    masks[next(iter(masks))] = masks[next(iter(masks))].astype(bool)  # bool is accepted
    with SubmissionWriter(out, expected) as writer:
        for volume_id, mask in masks.items():
            writer.add(volume_id, mask)
            assert not out.exists()  # only the temporary zip exists while writing
        assert writer.written == tuple(expected)
    assert out.is_file() and not writer.temp_path.exists()

    report = validate_zip(out, root, strict=True)
    assert report.valid, report.to_json()
    assert report.errors == [] and report.warnings == []
    assert sorted(report.files) == sorted(expected)
    assert all(f.readers == ["pillow", "tifffile"] for f in report.files.values())

    with zipfile.ZipFile(out) as archive:
        infos = archive.infolist()
        assert sorted(i.filename for i in infos) == sorted(f"{i}.tif" for i in expected)
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
        for volume_id, mask in masks.items():
            data = archive.read(f"{volume_id}.tif")
            via_pillow = read_volume_pillow(data)
            via_tifffile = tifffile.imread(io.BytesIO(data))
            assert via_pillow.dtype == via_tifffile.dtype == np.uint8
            np.testing.assert_array_equal(via_pillow, via_tifffile)
            np.testing.assert_array_equal(via_pillow, mask.astype(np.uint8))
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                assert len(tif.pages) == mask.shape[0]
                assert tif.pages.first.compression == 8  # zlib (adobe deflate)


def test_ids_only_expectation(tmp_path, expected):
    out = tmp_path / "s.zip"
    writer = SubmissionWriter(out, list(expected))
    for n, (volume_id, shape) in enumerate(expected.items()):
        writer.add(volume_id, mask_for(shape, n))
    assert writer.finish() == out
    assert validate_zip(out, ids=list(expected)).valid


@pytest.mark.parametrize("case", ["twice", "unknown id", "wrong shape", "float", "2d", "255"])
def test_refuses_bad_masks(tmp_path, expected, case):
    first, shape = next(iter(expected.items()))
    writer = SubmissionWriter(tmp_path / "s.zip", expected)
    good = mask_for(shape)
    bad = {
        "unknown id": ("not-a-test-id", good),
        "wrong shape": (first, good.transpose(2, 1, 0)),
        "float": (first, good.astype(np.float32)),
        "2d": (first, good[0]),
        "255": (first, good * 255),
    }
    if case == "twice":
        writer.add(first, good)
        volume_id, mask = first, good
    else:
        volume_id, mask = bad[case]
    with pytest.raises(SubmissionError) as info:
        writer.add(volume_id, mask)
    assert volume_id in str(info.value)
    writer.abort()
    assert not (tmp_path / "s.zip").exists() and not writer.temp_path.exists()


def test_finish_refuses_missing_ids_and_leaves_no_final_zip(tmp_path, expected):
    out = tmp_path / "s.zip"
    ids = list(expected)
    writer = SubmissionWriter(out, expected)
    writer.add(ids[0], mask_for(expected[ids[0]]))
    with pytest.raises(SubmissionError) as info:
        writer.finish()
    assert ids[1] in str(info.value) and ids[2] in str(info.value)
    assert not out.exists() and writer.temp_path.exists()
    assert writer.missing == ids[1:]
    for volume_id in ids[1:]:  # finishing later works
        writer.add(volume_id, mask_for(expected[volume_id]))
    writer.finish()
    assert out.exists() and not writer.temp_path.exists()


def test_exception_inside_block_leaves_nothing(tmp_path, expected):
    out = tmp_path / "s.zip"
    first = next(iter(expected))
    with pytest.raises(RuntimeError):
        with SubmissionWriter(out, expected) as writer:
            writer.add(first, mask_for(expected[first]))
            assert writer.temp_path.exists()
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_failed_run_keeps_previous_zip(tmp_path, expected):
    out = tmp_path / "s.zip"
    out.write_bytes(b"previous")
    with pytest.raises(SubmissionError):
        with SubmissionWriter(out, expected) as writer:  # exits normally -> finish() -> missing
            first = next(iter(expected))
            writer.add(first, mask_for(expected[first]))
    assert out.read_bytes() == b"previous"
    assert not writer.temp_path.exists()
