"""validate_zip: every way a zip fails the scorer gives its own error code, naming the entry."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
import tifffile
from submission_helpers import good_entries, mask_for, tiff_bytes, write_zip

from vesukit.data import encode_volume
from vesukit.submission import validate_zip
from vesukit.submission.validate import scorer_id


def codes(report, kind="errors"):
    return {issue.code for issue in getattr(report, kind)}


def first(expected):
    return next(iter(expected.items()))


def with_entry(expected, volume_id, data, name=None):
    """Good entries for every id, with ``volume_id``'s replaced by ``data`` under ``name``."""
    entries = good_entries(expected)
    del entries[f"{volume_id}.tif"]
    entries[name or f"{volume_id}.tif"] = data
    return entries


def check(tmp_path, root, entries, compression=zipfile.ZIP_DEFLATED, **kwargs):
    path = write_zip(tmp_path / "submission.zip", entries, compression)
    return validate_zip(path, root, **kwargs)


def assert_only_error(report, code, entry=None):
    assert not report.valid
    assert codes(report) == {code}, report.to_json()["errors"]
    if entry is not None:
        assert any(issue.entry == entry and entry in issue.message for issue in report.errors)


# --------------------------------------------------------------------------- zip level


def test_good_zip_is_valid(tmp_path, root, expected):
    report = check(tmp_path, root, good_entries(expected))
    assert report.valid and not report.warnings
    assert report.to_json()["valid"] is True
    volume_id, shape = first(expected)
    info = report.files[volume_id]
    assert info.shape == list(shape) and info.dtype == "uint8" and info.values == [0, 1]
    assert 0 < info.foreground_pct < 100 and info.verdict == "ok"


def test_missing_zip(tmp_path, root):
    report = validate_zip(tmp_path / "never-written.zip", root)
    assert_only_error(report, "zip_not_found")


def test_not_a_zip(tmp_path, root):
    path = tmp_path / "submission.zip"
    path.write_text("id,mask\n1,0\n")
    assert_only_error(validate_zip(path, root), "not_a_zip")


def test_zip_cut_short(tmp_path, root, expected):
    path = write_zip(tmp_path / "submission.zip", good_entries(expected))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert_only_error(validate_zip(path, root), "corrupt_zip")


def test_entry_with_bad_crc(tmp_path, root, expected):
    volume_id, _ = first(expected)
    path = write_zip(tmp_path / "submission.zip", good_entries(expected), zipfile.ZIP_STORED)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{volume_id}.tif")
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                   info.header_offset + 30])
    data_start = info.header_offset + 30 + name_len + extra_len
    raw[data_start + info.file_size - 3] ^= 0xFF  # inside the last strip
    path.write_bytes(bytes(raw))
    report = validate_zip(path, root)
    assert "corrupt_zip" in codes(report)
    assert any(i.entry == f"{volume_id}.tif" for i in report.errors if i.code == "corrupt_zip")


def test_no_tif_at_all(tmp_path, root):
    report = check(tmp_path, root, {"README.txt": b"masks are in the other zip"})
    assert "no_tif" in codes(report)
    assert "ignored_entry" in codes(report, "warnings")


@pytest.mark.parametrize("suffix", [".tiff", ".TIF"])
def test_id_only_under_another_extension(tmp_path, root, expected, suffix):
    volume_id, shape = first(expected)
    entries = with_entry(expected, volume_id, encode_volume(mask_for(shape)),
                         name=f"{volume_id}{suffix}")
    assert_only_error(check(tmp_path, root, entries), "wrong_extension", f"{volume_id}{suffix}")


def test_missing_id(tmp_path, root, expected):
    volume_id, _ = first(expected)
    entries = good_entries(expected)
    del entries[f"{volume_id}.tif"]
    report = check(tmp_path, root, entries)
    assert_only_error(report, "missing_id")
    assert report.errors[0].id == volume_id and volume_id in report.errors[0].message


def test_extra_id(tmp_path, root, expected):
    entries = good_entries(expected)
    entries["123456.tif"] = encode_volume(mask_for((6, 12, 10)))
    assert_only_error(check(tmp_path, root, entries), "extra_id", "123456.tif")


@pytest.mark.parametrize("where", ["subfolder", "same name"])
def test_same_id_twice(tmp_path, root, expected, where):
    volume_id, shape = first(expected)
    entries = list(good_entries(expected).items())
    second = f"copy/{volume_id}.tif" if where == "subfolder" else f"{volume_id}.tif"
    entries.append((second, encode_volume(mask_for(shape, 5))))
    with pytest.warns(UserWarning) if where == "same name" else _nothing():
        path = write_zip(tmp_path / "submission.zip", entries)
    report = validate_zip(path, root)
    assert_only_error(report, "duplicate_id", second)


def test_scorer_id_is_basename_up_to_first_dot():
    assert scorer_id("a/b/123.tif") == "123"
    assert scorer_id("123.pred.tif") == "123"


@pytest.mark.parametrize("name", ["/abs/{id}.tif", "../{id}.tif", "sub/../../{id}.tif"])
def test_unsafe_entry_names_are_refused_and_nothing_is_written(tmp_path, root, expected, name):
    volume_id, shape = first(expected)
    entries = good_entries(expected)
    entries[name.format(id=volume_id)] = encode_volume(mask_for(shape))
    (tmp_path / "work").mkdir()
    path = write_zip(tmp_path / "work" / "submission.zip", entries)
    before = sorted(p for p in tmp_path.rglob("*"))
    report = validate_zip(path, root)
    assert "unsafe_path" in codes(report)
    assert any(i.entry == name.format(id=volume_id) for i in report.errors)
    assert sorted(p for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- TIFF level


def test_not_a_tiff(tmp_path, root, expected):
    volume_id, shape = first(expected)
    entries = with_entry(expected, volume_id, np.zeros(shape, np.uint8).tobytes())
    assert_only_error(check(tmp_path, root, entries), "not_tiff", f"{volume_id}.tif")


@pytest.mark.parametrize("cut", [1, 40, 0.5])
def test_truncated_tiff(tmp_path, root, expected, cut):
    volume_id, shape = first(expected)
    data = encode_volume(mask_for(shape))
    cut = int(len(data) * cut) if isinstance(cut, float) else cut
    entries = with_entry(expected, volume_id, data[:-cut])
    assert_only_error(check(tmp_path, root, entries), "truncated_tiff", f"{volume_id}.tif")


def shape_cases(shape):
    z, y, x = shape
    mask = mask_for(shape)
    return {
        "2D": (tiff_bytes(mask[0]), "single 2D page"),
        "transposed": (tiff_bytes(np.ascontiguousarray(mask.transpose(2, 1, 0))),
                       "transposition"),
        "page short": (tiff_bytes(mask[:-1]), "1 page(s) short"),
        "RGB": (tiff_bytes(np.repeat(mask[..., None], 3, axis=3), photometric="rgb"),
                "3 samples per pixel"),
        "extra samples": (tiff_bytes(np.stack([mask, mask], axis=3), extrasamples=[0]),
                          "2 samples per pixel"),
    }


@pytest.mark.parametrize("case", ["2D", "transposed", "page short", "RGB", "extra samples"])
def test_shape_mismatch(tmp_path, root, expected, case):
    volume_id, shape = first(expected)
    data, phrase = shape_cases(shape)[case]
    report = check(tmp_path, root, with_entry(expected, volume_id, data))
    assert_only_error(report, "shape_mismatch", f"{volume_id}.tif")
    assert phrase in report.errors[0].message


def test_2d_is_caught_even_without_shapes(tmp_path, expected):
    volume_id, shape = first(expected)
    data, _ = shape_cases(shape)["2D"]
    path = write_zip(tmp_path / "s.zip", with_entry(expected, volume_id, data))
    assert_only_error(validate_zip(path, ids=list(expected)), "shape_mismatch")


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.bool_])
def test_not_uint8(tmp_path, root, expected, dtype):
    volume_id, shape = first(expected)
    entries = with_entry(expected, volume_id, tiff_bytes(mask_for(shape).astype(dtype)))
    assert_only_error(check(tmp_path, root, entries), "not_uint8", f"{volume_id}.tif")


def test_values_outside_0_1(tmp_path, root, expected):
    volume_id, shape = first(expected)
    mask = mask_for(shape)
    mask[0, 0, :3] = [2, 7, 128]
    report = check(tmp_path, root, with_entry(expected, volume_id, encode_volume(mask)))
    assert_only_error(report, "bad_values", f"{volume_id}.tif")
    assert report.files[volume_id].values == [0, 1, 2, 7, 128]


def test_readers_disagree(tmp_path, root, expected):
    # WhiteIsZero: Pillow (the scorer) inverts the values, tifffile returns them raw.
    volume_id, shape = first(expected)
    entries = with_entry(expected, volume_id, tiff_bytes(mask_for(shape),
                                                         photometric="miniswhite"))
    report = check(tmp_path, root, entries)
    assert "reader_mismatch" in codes(report)
    assert "bad_values" in codes(report)  # what the scorer would actually see: 254/255


# --------------------------------------------------------------------------- hostile zips


def test_zip_bomb_is_refused_before_decompressing(tmp_path, root, expected, monkeypatch):
    volume_id, _ = first(expected)
    bomb = f"{volume_id}.tif"
    entries = with_entry(expected, volume_id, b"II*\x00" + bytes(20 << 20))
    path = write_zip(tmp_path / "submission.zip", entries)
    assert path.stat().st_size < 1 << 20
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    report = validate_zip(path, root)
    assert_only_error(report, "zip_bomb", bomb)
    assert bomb not in opened and len(opened) == len(expected) - 1


def test_zip_header_that_lies_about_size(tmp_path, root, expected):
    volume_id, _ = first(expected)
    name = f"{volume_id}.tif"
    path = write_zip(tmp_path / "submission.zip",
                     with_entry(expected, volume_id, b"II*\x00" + bytes(20 << 20)))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, info.header_offset + 22, 1000)   # local header
    offset = raw.find(b"PK\x01\x02")
    while offset != -1:  # patch the central directory record of that entry
        n = struct.unpack_from("<H", raw, offset + 28)[0]
        if raw[offset + 46: offset + 46 + n].decode() == name:
            struct.pack_into("<I", raw, offset + 24, 1000)
        offset = raw.find(b"PK\x01\x02", offset + 4)
    path.write_bytes(bytes(raw))
    report = validate_zip(path, root)
    assert not report.valid
    # zipfile stops inflating at the declared size, so the stream ends early and fails CRC.
    assert_only_error(report, "corrupt_zip", name)


def test_circular_page_chain_does_not_hang(tmp_path, root, expected):
    volume_id, shape = first(expected)
    data = bytearray(encode_volume(mask_for(shape)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        first_ifd, last = tif.pages.first.offset, tif.pages[-1]
    n_tags = struct.unpack_from("<H", data, last.offset)[0]
    struct.pack_into("<I", data, last.offset + 2 + 12 * n_tags, first_ifd)  # last -> first
    report = check(tmp_path, root, with_entry(expected, volume_id, bytes(data)))
    assert not report.valid
    assert all(issue.entry == f"{volume_id}.tif" for issue in report.errors)


def test_shapes_unknown_without_test_images(tmp_path, root, expected):
    csv_only = tmp_path / "csv_only"
    csv_only.mkdir()
    (csv_only / "test.csv").write_text((root / "test.csv").read_text())
    path = write_zip(tmp_path / "s.zip", good_entries(expected))
    report = validate_zip(path, csv_only, strict=True)
    assert report.valid and report.shapes_known == 0
    assert report.files[first(expected)[0]].expected_shape is None


def test_tiff_header_promising_gigapixels_is_not_decoded(tmp_path, root, expected):
    volume_id, shape = first(expected)
    data = bytearray(encode_volume(mask_for(shape)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        for page in tif.pages:
            for code in (256, 257):  # ImageWidth, ImageLength
                tag = page.tags[code]
                fmt = "<I" if tag.dtype == 4 else "<H"
                struct.pack_into(fmt, data, tag.valueoffset, 60000)
    report = check(tmp_path, root, with_entry(expected, volume_id, bytes(data)))
    assert_only_error(report, "shape_mismatch", f"{volume_id}.tif")
    assert "not decoded" in report.errors[0].message


# --------------------------------------------------------------------------- warnings


def warning_case(expected, case):
    volume_id, shape = first(expected)
    entries = good_entries(expected)
    compression = zipfile.ZIP_DEFLATED
    if case == "values_0_255":
        entries[f"{volume_id}.tif"] = encode_volume(mask_for(shape) * 255)
    elif case == "in_subfolder":
        entries = {f"masks/{k}": v for k, v in entries.items()}
    elif case == "empty_mask":
        entries[f"{volume_id}.tif"] = encode_volume(np.zeros(shape, np.uint8))
    elif case == "stored_zip":
        compression = zipfile.ZIP_STORED
    return entries, compression


@pytest.mark.parametrize("case", ["values_0_255", "in_subfolder", "empty_mask", "stored_zip"])
def test_warning_passes_unless_strict(tmp_path, root, expected, case):
    entries, compression = warning_case(expected, case)
    lenient = check(tmp_path, root, entries, compression)
    assert lenient.valid, lenient.to_json()["errors"]
    assert codes(lenient, "warnings") == {case}
    strict = check(tmp_path, root, entries, compression, strict=True)
    assert not strict.valid and codes(strict) == {case} and not strict.warnings
    assert all(i.entry and i.entry in i.message for i in strict.errors)


def test_every_message_names_its_entry(tmp_path, root, expected):
    volume_id, shape = first(expected)
    entries = with_entry(expected, volume_id, tiff_bytes(mask_for(shape)[0]))
    entries["999.tif"] = b"junk"
    report = check(tmp_path, root, entries)
    assert codes(report) == {"shape_mismatch", "extra_id"}  # extras are not decoded
    for issue in report.errors:
        assert issue.entry and issue.message.startswith(issue.entry)
    assert report.files[volume_id].verdict == "error"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
