"""Judge a submission zip the way the Kaggle scorer will read it, before a submission is spent.

The scorer (docs/competition.md, "Submission") extracts the zip, collects ``**/*.tif`` recursively,
takes the id as the basename up to the first ``.``, reads each file with Pillow page by page,
stacks the pages on axis 0 and requires the exact shape of the label; any non-zero voxel is
surface. This module reproduces that view in memory, without extracting anything: every
entry is read through a size-capped stream (the zip's declared size is checked first, then
the bytes actually inflated), its TIFF header is inspected with tifffile before any pixel is
decoded, and the pixels are decoded both by Pillow (the scorer's reader) and by tifffile, which
must agree. A hostile zip can therefore neither write files, nor exhaust memory, nor hang.

No torch import, directly or indirectly: this runs on an image with numpy, tifffile, Pillow.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from vesukit._optional import has
from vesukit.data import (
    STDLIB_TIFF_COMPRESSIONS,
    VOLUME_SUFFIX,
    list_test_ids,
    read_volume_pillow,
    read_volume_shape,
    volume_path,
)
from vesukit.errors import UsageError, VesukitError

Shape = tuple[int, ...]

# Bytes an entry may inflate to: 4 bytes per voxel of its volume (room enough to report a
# float32 or RGB mask as such) plus headers. Anything beyond is refused unread as a zip bomb.
BYTES_PER_VOXEL_CAP = 4
HEADER_ALLOWANCE = 1 << 20
# Without a known shape (ids only), allow a 512^3 uint8 volume (competition volumes are at
# most 384^3).
DEFAULT_ENTRY_CAP = 512**3 + HEADER_ALLOWANCE
DEFAULT_DECODE_CAP = 512**3
# More entries than this (beyond the expected ids) is not a submission; stop listing.
MAX_EXTRA_ENTRIES = 10_000
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_FIX = ("Write each mask with vesukit's SubmissionWriter (or "
        "tifffile.imwrite(f'{id}.tif', mask_zyx.astype(np.uint8), compression='zlib')).")

# Warnings a valid submission may carry; --strict makes them errors.
WARNING_CODES = ("values_0_255", "in_subfolder", "empty_mask", "stored_zip", "ignored_entry",
                 "tifffile_cannot_decode", "source_shape_unknown")


@dataclass(frozen=True)
class Issue:
    """One finding. ``code`` is a stable machine name; ``message`` names the entry and the fix."""

    code: str
    message: str
    entry: str | None = None
    id: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FileInfo:
    """What the scorer would see in one ``<id>.tif`` entry."""

    id: str
    entry: str
    shape: list[int] | None = None          # Pillow page stack (the scorer's view)
    expected_shape: list[int] | None = None
    dtype: str | None = None
    values: list[int] | None = None         # distinct values (abridged when many)
    foreground_pct: float | None = None
    tiff_compression: str | None = None
    readers: list[str] = field(default_factory=list)
    verdict: str = "ok"                     # ok | warning | error

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ValidationReport:
    zip_path: str
    expected_ids: list[str]
    strict: bool = False
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    files: dict[str, FileInfo] = field(default_factory=dict)
    shapes_known: int = 0  # expected ids whose source shape was known and compared

    @property
    def valid(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {issue.code for issue in self.errors + self.warnings}

    def to_json(self) -> dict:
        return {
            "valid": self.valid,
            "zip": self.zip_path,
            "strict": self.strict,
            "expected": len(self.expected_ids),
            "shapes_known": self.shapes_known,
            "errors": [i.to_json() for i in self.errors],
            "warnings": [i.to_json() for i in self.warnings],
            "files": {k: v.to_json() for k, v in self.files.items()},
        }


# --------------------------------------------------------------------------- expectations


def expected_volumes(root: str | os.PathLike) -> tuple[list[str], dict[str, Shape | None]]:
    """Test ids of a competition root, with shapes from ``test_images/`` headers when present."""
    root = Path(root)
    ids = list_test_ids(root)
    shapes: dict[str, Shape | None] = {}
    for volume_id in ids:
        path = volume_path(root, volume_id, "test_images")
        try:
            shapes[volume_id] = read_volume_shape(path) if path.exists() else None
        except VesukitError:  # a damaged source volume is reported as "shape unknown"
            shapes[volume_id] = None
    return ids, shapes


# --------------------------------------------------------------------------- entry names


def scorer_id(name: str) -> str:
    """The id the scorer derives from an entry: its basename up to the first ``.``."""
    return name.rsplit("/", 1)[-1].split(".", 1)[0]


def _unsafe_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return (name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
            or ".." in parts)


def _is_scored(name: str) -> bool:
    return name.endswith(VOLUME_SUFFIX)  # case-sensitive, like the scorer's glob on Linux


def _looks_like_tiff(name: str) -> bool:
    return name.lower().endswith((".tif", ".tiff"))


# --------------------------------------------------------------------------- the check


def validate_zip(zip_path: str | os.PathLike, root: str | os.PathLike | None = None, *,
                 ids: Sequence[str] | None = None,
                 shapes: Mapping[str, Sequence[int] | None] | None = None,
                 strict: bool = False, workers: int | None = None) -> ValidationReport:
    """Validate ``zip_path`` against the test set of ``root`` (or the given ids / shapes).

    ``shapes`` (id -> (Z, Y, X)) implies the ids; ``ids`` alone checks everything but shapes
    (2D and multi-sample files are still caught). Returns a report; raises only on usage.
    """
    expected_shapes: dict[str, Shape | None]
    if shapes is not None:
        expected_shapes = {str(k): (tuple(int(s) for s in v) if v is not None else None)
                           for k, v in shapes.items()}
        if ids is not None and set(map(str, ids)) != set(expected_shapes):
            raise UsageError("validate_zip: ids and shapes name different volumes; pass one.")
        expected_ids = list(map(str, ids)) if ids is not None else list(expected_shapes)
    elif ids is not None:
        expected_ids = [str(i) for i in ids]
        expected_shapes = dict.fromkeys(expected_ids)
    elif root is not None:
        expected_ids, expected_shapes = expected_volumes(root)
    else:
        raise UsageError("validate_zip needs the competition root (--data), ids or shapes to "
                         "know which volumes the submission must hold.")

    report = ValidationReport(str(zip_path), expected_ids, strict=strict)
    with _quiet_readers():
        _check_zip(Path(zip_path), expected_ids, expected_shapes, report, workers)
    report.shapes_known = sum(1 for shape in expected_shapes.values() if shape is not None)
    images = Path(root) / "test_images" if root is not None and shapes is None else None
    for volume_id, shape in expected_shapes.items():
        if shape is None and images is not None and images.is_dir():
            report.warnings.append(Issue(
                "source_shape_unknown",
                f"{volume_id}: no readable test_images/{volume_id}.tif under {root}, so the "
                "mask's shape was not compared with its volume. Point --data at the full "
                "competition root to check shapes.", id=volume_id))
    if strict:
        report.errors.extend(report.warnings)
        report.warnings = []
    _set_verdicts(report)
    return report


@contextlib.contextmanager
def _quiet_readers():
    """Damaged files make tifffile log and Pillow warn; the report already says it all."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _check_zip(path: Path, expected_ids: list[str], expected_shapes: dict[str, Shape | None],
               report: ValidationReport, workers: int | None) -> None:
    """The whole check, in the scorer's order: open the zip, list its entries, match them to
    the test ids, then read every matched entry."""
    archive = _open_archive(path, report)
    if archive is None:
        return
    with archive:
        if not _within_entry_limit(archive, path, expected_ids, report):
            return
        listing = _list_entries(archive, path, set(expected_ids), report)
        _match_ids(listing, path, expected_ids, report)
        results = _read_entries(archive, listing.scored, set(expected_ids), expected_shapes,
                                workers)
    for info, issues in results:
        report.files[info.id] = info
        for issue in issues:
            (report.warnings if issue.code in WARNING_CODES else report.errors).append(issue)


def _open_archive(path: Path, report: ValidationReport) -> zipfile.ZipFile | None:
    """The zip, or None with the error that says why it cannot be one."""
    err = report.errors.append
    if not path.is_file():
        err(Issue("zip_not_found", f"{path}: no such file. The run did not write its zip: "
                  "check the notebook log for the error that stopped it, and write the zip "
                  "with SubmissionWriter so it appears only when complete.", entry=None))
        return None
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if head.startswith(b"PK"):
            err(Issue("corrupt_zip", f"{path}: is a damaged zip ({exc}); it was probably cut "
                      "off while being written. Write it again (SubmissionWriter renames the "
                      "zip into place only when it is complete)."))
        else:
            err(Issue("not_a_zip", f"{path}: is not a zip file (starts with {head!r}). The "
                      "submission must be a zip of <id>.tif files: zip them, e.g. with "
                      "SubmissionWriter or `zip -j submission.zip *.tif`."))
    except OSError as exc:
        err(Issue("corrupt_zip", f"{path}: cannot be read ({exc}). Write it again."))
    return None


def _within_entry_limit(archive: zipfile.ZipFile, path: Path, expected_ids: list[str],
                        report: ValidationReport) -> bool:
    count = len(archive.infolist())
    if count <= len(expected_ids) + MAX_EXTRA_ENTRIES:
        return True
    report.errors.append(Issue(
        "too_many_entries", f"{path}: holds {count} entries for {len(expected_ids)} test "
        "volumes; refusing to inspect it. Zip only the <id>.tif masks."))
    return False


@dataclass
class _Listing:
    """The zip's entries as the scorer sorts them."""

    scored: list[tuple[str, zipfile.ZipInfo]] = field(default_factory=list)  # (id, entry)
    first_entry: dict[str, str] = field(default_factory=dict)  # id -> the entry that gives it
    other_tiffs: dict[str, list[str]] = field(default_factory=dict)  # id -> .tiff/.TIF names


def _list_entries(archive: zipfile.ZipFile, path: Path, expected: set[str],
                  report: ValidationReport) -> _Listing:
    """Sort each entry: scored (``*.tif``), another TIFF spelling, or ignored; flag unsafe
    names, duplicates, subfolders, ids that are not test ids and stored (uncompressed) entries."""
    err, warn = report.errors.append, report.warnings.append
    listing = _Listing()
    stored = []
    for info in archive.infolist():
        name = info.filename
        if info.is_dir():
            continue
        if _unsafe_name(name):
            err(Issue("unsafe_path", f"{name}: entry name is absolute or climbs out with "
                      "'..'; the scorer's extraction must stay inside its folder. Zip the "
                      "masks with flat names (<id>.tif).", entry=name))
            continue
        if info.compress_type == zipfile.ZIP_STORED:
            stored.append(name)
        if not _is_scored(name):
            if _looks_like_tiff(name):
                listing.other_tiffs.setdefault(scorer_id(name), []).append(name)
            else:
                warn(Issue("ignored_entry", f"{name}: not a .tif, the scorer ignores it. "
                           "Leave only <id>.tif masks in the zip.", entry=name))
            continue
        volume_id = scorer_id(name)
        if volume_id in listing.first_entry:
            err(Issue("duplicate_id", f"{name}: id {volume_id!r} already comes from "
                      f"{listing.first_entry[volume_id]}; the scorer would see two masks for "
                      "one volume. Keep exactly one <id>.tif per test id.",
                      entry=name, id=volume_id))
            continue
        listing.first_entry[volume_id] = name
        if "/" in name:
            warn(Issue("in_subfolder", f"{name}: is inside a folder. The scorer searches "
                       "folders too, but flat names are safer: zip the masks with "
                       "`zip -j` or SubmissionWriter.", entry=name, id=volume_id))
        if volume_id not in expected:
            err(Issue("extra_id", f"{name}: id {volume_id!r} is not a test id. Remove it; "
                      "only the volumes of test.csv / test_images may be submitted.",
                      entry=name, id=volume_id))
        listing.scored.append((volume_id, info))
    if stored:
        count = "1 entry is" if len(stored) == 1 else f"{len(stored)} entries are"
        warn(Issue("stored_zip", f"{path}: {count} stored uncompressed (e.g. {stored[0]}); "
                   "the zip is larger than it needs to be. Use ZIP_DEFLATED "
                   "(SubmissionWriter does).", entry=stored[0]))
    return listing


def _match_ids(listing: _Listing, path: Path, expected_ids: list[str],
               report: ValidationReport) -> None:
    """Every test id needs its ``<id>.tif``: say which are missing or misnamed."""
    err = report.errors.append
    if not listing.scored:
        err(Issue("no_tif", f"{path}: holds no *.tif entry, so the scorer finds no mask "
                  "at all. Write one <id>.tif (lower-case .tif) per test id."))
    for volume_id in expected_ids:
        if volume_id in listing.first_entry:
            continue
        if volume_id in listing.other_tiffs:
            names = listing.other_tiffs[volume_id]
            err(Issue("wrong_extension", f"{names[0]}: the mask for {volume_id!r} is named "
                      f"with another extension; the scorer reads only '*.tif' and skips "
                      f"it. Rename it to {volume_id}{VOLUME_SUFFIX}.",
                      entry=names[0], id=volume_id))
        elif listing.scored:
            err(Issue("missing_id", f"{volume_id}{VOLUME_SUFFIX}: no mask for test id "
                      f"{volume_id!r} in {path.name}. Every test id needs one; check the "
                      "prediction log for this volume.", id=volume_id))


def _read_entries(archive: zipfile.ZipFile, scored: list[tuple[str, zipfile.ZipInfo]],
                  expected: set[str], expected_shapes: dict[str, Shape | None],
                  workers: int | None) -> list[tuple[FileInfo, list[Issue]]]:
    """Decode every entry of a test id (threads: strip decoding releases the GIL). Extra ids
    are already errors: they are listed, not decoded."""
    results = [(FileInfo(volume_id, info.filename, verdict="error"), [])
               for volume_id, info in scored if volume_id not in expected]
    jobs = [(volume_id, info, expected_shapes.get(volume_id))
            for volume_id, info in scored if volume_id in expected]
    n_workers = workers or default_workers()
    if n_workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            results += pool.map(lambda job: _check_entry(archive, *job), jobs)
    else:
        results += [_check_entry(archive, *job) for job in jobs]
    return results


def default_workers() -> int:
    """Threads for reading entries: half the cores, at most 2.

    Pillow parses each TIFF page in Python under the GIL; only the strip decoding runs in
    parallel, so more threads do not pay (docs/benchmarks.md, "Validation").
    """
    return max(1, min(2, (os.cpu_count() or 1) // 2))


def _entry_cap(shape: Shape | None) -> int:
    """Bytes an entry may inflate to before it is refused as a zip bomb."""
    if shape is None:
        return DEFAULT_ENTRY_CAP
    return BYTES_PER_VOXEL_CAP * int(np.prod(shape)) + HEADER_ALLOWANCE


def _decode_cap(shape: Shape | None) -> int:
    """Pixel bytes a uint8 TIFF may decode to (twice the volume: a padded mask is described)."""
    return DEFAULT_DECODE_CAP if shape is None else 2 * int(np.prod(shape))


class _EntryFindings:
    """The findings of one entry; ``add`` prefixes the entry name, as every message does."""

    def __init__(self, volume_id: str, name: str, expected: Shape | None):
        self.volume_id, self.name, self.expected = volume_id, name, expected
        self.info = FileInfo(volume_id, name, expected_shape=list(expected) if expected else None)
        self.issues: list[Issue] = []

    def add(self, code: str, message: str) -> None:
        self.issues.append(Issue(code, f"{self.name}: {message}", entry=self.name,
                                 id=self.volume_id))

    def result(self) -> tuple[FileInfo, list[Issue]]:
        return self.info, self.issues


def _check_entry(archive: zipfile.ZipFile, volume_id: str, zinfo: zipfile.ZipInfo,
                 expected: Shape | None) -> tuple[FileInfo, list[Issue]]:
    """One entry in three steps, each stopping at the first finding that makes the next
    meaningless: inflate it (bounded), read its TIFF header, decode and compare the readers."""
    found = _EntryFindings(volume_id, zinfo.filename, expected)
    data = _inflate_entry(archive, zinfo, found)
    if data is None:
        return found.result()
    header = _check_tiff_structure(data, found)
    if header is None or found.issues:
        return found.result()
    _decode_and_compare(data, header, found)
    return found.result()


def _inflate_entry(archive: zipfile.ZipFile, zinfo: zipfile.ZipInfo,
                   found: _EntryFindings) -> bytes | None:
    """The entry's bytes: the declared size first, then the bytes really inflated (headers can
    lie), so a zip bomb is refused without being inflated."""
    expected = found.expected
    cap = _entry_cap(expected)
    need = (f"a uint8 volume of shape {'x'.join(map(str, expected))} needs about "
            f"{int(np.prod(expected)):,} bytes" if expected else "no volume is that large")
    if zinfo.file_size > cap:
        found.add("zip_bomb", f"declares {zinfo.file_size:,} bytes uncompressed, far beyond "
                  f"the {cap:,} allowed ({need}); refused without decompressing it. Write "
                  "uint8 masks of the source shape.")
        return None
    try:
        with archive.open(zinfo) as stream:
            data = stream.read(cap + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
        found.add("corrupt_zip", f"cannot be decompressed ({type(exc).__name__}: {exc}); "
                  "the zip is damaged. Write it again.")
        return None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted / exotic compression
        found.add("corrupt_zip", f"cannot be read ({exc}). Write an unencrypted zip with "
                  "deflate compression.")
        return None
    if len(data) > cap:
        found.add("zip_bomb", f"inflates beyond {cap:,} bytes although its header says "
                  f"{zinfo.file_size:,}; refused. Write the zip again with SubmissionWriter.")
        return None
    return data


def _read_or_report(read: Callable[[bytes], Any], data: bytes, found: _EntryFindings, failure: str) -> Any:
    """``read(data)``; or None, with a ``truncated_tiff`` finding: ``failure`` says what could
    not be read, its ``{error}`` the exception."""
    try:
        return read(data)
    except Exception as exc:
        found.add("truncated_tiff", failure.format(error=f"{type(exc).__name__}: {exc}")
                  + f"; the file is truncated or corrupt. {_FIX}")
        return None


def _check_tiff_structure(data: bytes, found: _EntryFindings) -> dict | None:
    """The TIFF header, from headers only. Pixels are decoded later only for a single-sample
    uint8 page stack of bounded size, so a header promising gigapixels costs nothing."""
    expected, info = found.expected, found.info
    if not data.startswith(_TIFF_MAGICS):
        found.add("not_tiff", f"is not a TIFF file (starts with {data[:4]!r}); {_FIX}")
        return None
    header = _read_or_report(_tiff_header, data, found, "has a damaged TIFF structure ({error})")
    if header is None:
        return None
    info.tiff_compression = header["compression"]
    info.shape, info.dtype = list(header["shape"]), header["dtype"]
    if header["mixed_pages"]:
        found.add("shape_mismatch", f"its pages have different shapes or types "
                  f"({header['mixed_pages']}); Pillow cannot stack them into one volume. {_FIX}")
        return None
    # For a single-sample stack the header's (pages, Y, X) is exactly what Pillow will stack.
    structural = _shape_problem(header["shape"], expected, header, decoded=False)
    too_big = (header["dtype"] == "uint8" and header["spp"] == 1
               and header["decoded_bytes"] > _decode_cap(expected))
    if header["dtype"] != "uint8":
        found.add("not_uint8", f"holds {header['dtype']} values; masks must be uint8. Cast with "
                  "(mask > 0).astype(np.uint8) before writing.")
    undecodable = (header["dtype"] != "uint8" or header["spp"] != 1
                   or header["imagedepth"] != 1 or too_big)
    if structural and undecodable:
        found.add("shape_mismatch", f"{structural} (Read from the TIFF header; pixels not "
                  "decoded.)")
    elif too_big:
        found.add("zip_bomb", f"its TIFF header declares shape {header['shape']} "
                  f"({header['decoded_bytes']:,} bytes decoded), more than any volume; not "
                  f"decoded. {_FIX}")
    return header


def _decode_and_compare(data: bytes, header: dict, found: _EntryFindings) -> None:
    """The pixels through the scorer's reader (Pillow) and through tifffile, which must agree;
    then the shape against the source volume and the values."""
    info = found.info
    pillow = _read_or_report(read_volume_pillow, data, found,
                             "Pillow, the scorer's reader, cannot decode it ({error})")
    if pillow is None:
        return
    info.readers.append("pillow")
    info.shape, info.dtype = list(pillow.shape), str(pillow.dtype)

    other = None
    if header["compression_code"] in STDLIB_TIFF_COMPRESSIONS or has("imagecodecs"):
        other = _read_or_report(_read_tifffile, data, found,
                                "tifffile cannot decode it ({error}) although Pillow can")
        if other is not None:
            info.readers.append("tifffile")
    else:
        found.add("tifffile_cannot_decode", f"{header['compression']} pages cannot be decoded "
                  "by tifffile without imagecodecs, so only Pillow read it. Write zlib pages "
                  "(SubmissionWriter does) to have both readers check it.")

    if other is not None and (other.shape != pillow.shape or not np.array_equal(other, pillow)):
        where = (f"shapes {pillow.shape} (Pillow) vs {other.shape} (tifffile)"
                 if other.shape != pillow.shape else
                 f"{int(np.count_nonzero(other != pillow)):,} voxels differ")
        found.add("reader_mismatch", f"Pillow (the scorer's reader) and tifffile disagree "
                  f"({where}); the file is malformed. {_FIX}")
    shape_problem = _shape_problem(pillow.shape, found.expected, header, decoded=True)
    if shape_problem:
        found.add("shape_mismatch", shape_problem)
    if pillow.dtype != np.uint8:
        found.add("not_uint8", f"Pillow reads it as {pillow.dtype}; masks must be uint8. "
                  "Cast with (mask > 0).astype(np.uint8) before writing.")
        return
    _check_values(pillow, info, found.add)


def _tiff_header(data: bytes) -> dict:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = tif.pages
        n = len(pages)
        if n == 0:
            raise ValueError("no pages")
        first = pages.first
        kinds = set()
        decoded = 0
        spp = 1
        for index in range(n):
            page = pages[index]
            shape = tuple(page.shape)
            dtype = np.dtype(page.dtype) if page.dtype is not None else np.dtype(np.uint8)
            kinds.add((shape, str(dtype)))
            decoded += int(np.prod(shape)) * dtype.itemsize
            spp = max(spp, int(getattr(page, "samplesperpixel", 1)))
        compression = first.compression
        return {
            "pages": n,
            "page_shape": tuple(first.shape),
            "shape": (n, *first.shape),
            "dtype": str(first.dtype),
            "spp": spp,
            "imagedepth": int(getattr(first, "imagedepth", 1)),
            "compression_code": int(compression),
            "compression": getattr(compression, "name", str(compression)).lower(),
            "decoded_bytes": decoded,
            "mixed_pages": ", ".join(f"{s} {d}" for s, d in sorted(kinds)[:3])
            if len(kinds) > 1 else "",
        }


def _read_tifffile(data: bytes) -> np.ndarray:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        n = len(tif.pages)
        array = tif.asarray(key=range(n))
        return array.reshape((n, *tif.pages.first.shape))


def _shape_problem(found: Shape, expected: Shape | None, header: dict, decoded: bool) -> str:
    """Why the page stack is not the source volume's shape ('' when it is).

    ``found`` is Pillow's page stack when ``decoded``, else the shape the TIFF header declares.
    """
    found = tuple(found)
    want = f"the source volume's {tuple(expected)}" if expected else "a (Z, Y, X) volume"
    if header["spp"] != 1 or len(found) == 4:
        return (f"pages have {header['spp']} samples per pixel (RGB or extra samples): the "
                f"file holds shape {header['shape']}, while {want} needs one grey sample per "
                "voxel. Write the mask as a 3D (Z, Y, X) uint8 array, no channel axis.")
    if header["imagedepth"] != 1:
        return (f"is one tiled 3D block of depth {header['imagedepth']}, which Pillow does not "
                f"stack into {want}. {_FIX} (one page per Z slice).")
    if header["pages"] == 1 and (expected is None or expected[0] != 1):
        return (f"is a single 2D page of shape {header['page_shape']}, so the scorer reads "
                f"{found}, not {want}. Write the whole (Z, Y, X) mask as a multipage TIFF, "
                "one page per Z slice.")
    if expected is None or found == tuple(expected):
        return ""
    if len(found) == 3 and sorted(found) == sorted(expected):
        return (f"has shape {found}, a transposition of {want}. Write the mask in (Z, Y, X) "
                "order, the order the source volume was read in; do not transpose it.")
    if len(found) == 3 and found[1:] == tuple(expected[1:]):
        diff = expected[0] - found[0]
        what = f"{diff} page(s) short" if diff > 0 else f"{-diff} page(s) too many"
        return (f"has {found[0]} pages, {what} of {want}. Write every Z slice of the volume "
                "(the mask must not be cropped or padded).")
    return (f"has shape {found}, not {want}. The mask must have exactly the shape of its "
            "test volume: do not crop, pad, resample or transpose it.")


def _check_values(volume: np.ndarray, info: FileInfo, issue) -> None:
    total = volume.size
    nonzero = int(np.count_nonzero(volume))
    top = int(volume.max()) if total else 0
    info.foreground_pct = round(100.0 * nonzero / total, 3) if total else 0.0
    if top <= 1:
        info.values = [0, 1] if 0 < nonzero < total else ([1] if nonzero else [0])
    else:
        ones = int(np.count_nonzero(volume == 1))
        highs = int(np.count_nonzero(volume == 255))
        if ones == 0 and highs == nonzero:
            info.values = [0, 255] if nonzero < total else [255]
            issue("values_0_255", "holds values 0/255; the scorer counts any non-zero voxel "
                  "as surface, so it scores, but 0/1 is the format asked for: write "
                  "(mask > 0).astype(np.uint8).")
        else:
            extra = [int(v) for v in np.flatnonzero(
                np.bincount(volume[volume > 1].ravel(), minlength=256))]
            info.values = ([0] if nonzero < total else []) + ([1] if ones else []) + extra[:16]
            issue("bad_values", f"holds values {extra[:8]}{' ...' if len(extra) > 8 else ''} "
                  "besides 0/1; the scorer counts every non-zero voxel as surface, so these "
                  "(probabilities? labels?) would all be scored as foreground. Threshold and "
                  "write (prob >= t).astype(np.uint8).")
    if nonzero == 0:
        issue("empty_mask", "is empty (no foreground voxel); the volume scores near 0. "
              "Check the threshold and the model's output for this volume.")


def _set_verdicts(report: ValidationReport) -> None:
    for level, issues in (("warning", report.warnings), ("error", report.errors)):
        for issue in issues:
            info = report.files.get(issue.id) if issue.id else None
            if info is not None and (info.entry == issue.entry or issue.entry is None):
                info.verdict = level


# --------------------------------------------------------------------------- presentation


def format_report(report: ValidationReport) -> str:
    """A human table (id, shape, dtype, values, foreground %, verdict) and the findings."""
    rows = [("id", "shape", "dtype", "values", "fg %", "verdict")]
    for volume_id in sorted(report.files):
        f = report.files[volume_id]
        rows.append((
            volume_id,
            "x".join(map(str, f.shape)) if f.shape else "-",
            f.dtype or "-",
            ",".join(map(str, f.values)) if f.values is not None else "-",
            f"{f.foreground_pct:.2f}" if f.foreground_pct is not None else "-",
            f.verdict,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for label, issues in (("ERROR", report.errors), ("warning", report.warnings)):
        for issue in issues:
            lines.append(f"{label} [{issue.code}] {issue.message}")
    if report.expected_ids and not report.shapes_known:
        lines.append("note: no test_images/ to read source shapes from, so shapes were not "
                     "compared (2D and multi-channel files are still caught)")
    n_ok = sum(1 for f in report.files.values()
               if f.verdict != "error" and f.id in set(report.expected_ids))
    verdict = "VALID" if report.valid else "INVALID"
    lines.append(f"{verdict}: {report.zip_path} — {n_ok}/{len(report.expected_ids)} test "
                 f"volumes readable as the scorer reads them, {len(report.errors)} error(s), "
                 f"{len(report.warnings)} warning(s)" + (" (strict)" if report.strict else ""))
    return "\n".join(lines)
