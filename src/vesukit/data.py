"""Volume I/O and competition-root discovery.

Volumes are uint8 arrays shaped (Z, Y, X), stored as multipage TIFFs with one page per Z
slice, the way the competition ships them and the way the scorer reads them (Pillow, page by
page, stacked on axis 0). Competition volumes are LZW-compressed: tifffile decodes LZW only
with imagecodecs, which the Kaggle image lacks, so :func:`read_volume` falls back to Pillow,
which decodes LZW natively.
"""

from __future__ import annotations

import csv
import io
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile

from vesukit._optional import has
from vesukit.bootstrap import INPUT_BASE_ENV, KAGGLE_INPUT
from vesukit.errors import CompetitionRootError, VolumeError

COMPETITION_SLUG = "vesuvius-challenge-surface-detection"
# The folder Kaggle mounts datasets and competitions under (bootstrap.py, which must stay
# stdlib-only and load by path, holds the one definition).
DEFAULT_INPUT_BASE = KAGGLE_INPUT
VOLUME_SUFFIX = ".tif"
ZARR_SUFFIX = ".zarr"  # a test volume may also be <id>.zarr (a zarr array), beside or instead of the TIFF

# Compressions tifffile decodes with the standard library alone; any other (LZW above all)
# needs imagecodecs, or Pillow.
# TIFF compressions tifffile decodes without imagecodecs: none, adobe deflate (zlib), deflate.
STDLIB_TIFF_COMPRESSIONS = frozenset({1, 8, 32946})

_FIX_WRITE = "write it with vesukit.data.write_volume (or tifffile.imwrite(path, volume_zyx))"


# --------------------------------------------------------------------------- reading


def read_volume(path: str | os.PathLike) -> np.ndarray:
    """Read a multipage TIFF as a uint8 (Z, Y, X) array.

    Raises :class:`VolumeError` naming the file for a missing file, a 2D image, RGB or
    multi-sample pages, non-uint8 samples, pages of different shapes, and truncated or
    corrupt data.
    """
    path = Path(path)
    if path.suffix == ZARR_SUFFIX and path.is_dir():
        return np.ascontiguousarray(_open_zarr_volume(path)[:], dtype=np.uint8)
    if not path.is_file():
        raise VolumeError(
            f"{path}: no such file. Check the path; test volumes live in "
            f"<competition root>/test_images/<id>{VOLUME_SUFFIX}."
        )
    try:
        with tifffile.TiffFile(path) as tif:
            n_pages, page_shape, compression = _check_pages(path, tif)
            if compression not in STDLIB_TIFF_COMPRESSIONS and not has("imagecodecs"):
                volume = _read_pages_with_pillow(path)
            else:
                volume = tif.asarray(key=range(n_pages))
    except VolumeError:
        raise
    except Exception as exc:  # tifffile and Pillow raise many types for damaged files
        raise VolumeError(
            f"{path}: cannot be decoded as a TIFF volume ({type(exc).__name__}: {exc}). "
            "The file is truncated or corrupt: copy it again, or re-write it."
        ) from exc
    volume = np.asarray(volume)
    expected = (n_pages, *page_shape)
    if volume.shape != expected:
        raise VolumeError(
            f"{path}: decoded to shape {volume.shape}, expected {expected} from its pages. "
            "The file is truncated or corrupt: copy it again, or re-write it."
        )
    return np.ascontiguousarray(volume, dtype=np.uint8)


def _check_pages(path: Path, tif: tifffile.TiffFile) -> tuple[int, tuple[int, int], int]:
    """Check every page is one uint8 grey (Y, X) plane of one common shape."""
    pages = tif.pages
    n_pages = len(pages)
    if n_pages == 0:
        raise VolumeError(f"{path}: the TIFF has no pages. The file is corrupt: re-write it.")
    # tifffile (and Pillow) silently stop at a broken page chain, which would turn a cut file
    # into a shorter volume; check that the chain ends properly and the data is all there.
    file_size = tif.filehandle.size
    if _next_ifd_offset(tif, pages[n_pages - 1].offset) != 0:
        raise VolumeError(
            f"{path}: the page chain breaks after page {n_pages - 1} (file of {file_size} "
            "bytes). The file is truncated or corrupt: copy it again, or re-write it."
        )
    first = pages.first
    for index in range(n_pages):
        page = pages[index]
        spp = getattr(page, "samplesperpixel", 1)
        if spp != 1:
            raise VolumeError(
                f"{path}: page {index} has {spp} samples per pixel (RGB or extra channels); "
                "a volume needs one grey uint8 sample per voxel. Keep one channel "
                f"(e.g. volume[..., 0]) and {_FIX_WRITE}."
            )
        if page.dtype != np.uint8:
            raise VolumeError(
                f"{path}: page {index} holds {page.dtype} samples; volumes and masks must be "
                "uint8. Convert (e.g. mask.astype(np.uint8)) and " + _FIX_WRITE + "."
            )
        if getattr(page, "imagedepth", 1) != 1:
            raise VolumeError(
                f"{path}: page {index} is a tiled 3D block (image depth "
                f"{page.imagedepth}), which Pillow cannot stack. {_FIX_WRITE[0].upper()}"
                f"{_FIX_WRITE[1:]} so that each Z slice is one page."
            )
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts)]
        if ends and max(ends) > file_size:
            raise VolumeError(
                f"{path}: page {index} needs bytes up to {max(ends)} but the file has "
                f"{file_size}. The file is truncated or corrupt: copy it again, or re-write it."
            )
        if page.shape != first.shape:
            raise VolumeError(
                f"{path}: page {index} has shape {page.shape} but page 0 has {first.shape}; "
                f"all Z slices must share one (Y, X) shape. Re-write the volume."
            )
    if len(first.shape) == 2 and 0 in first.shape:
        raise VolumeError(
            f"{path}: pages of shape {first.shape} have a zero-size dimension; a volume needs "
            f"at least one voxel along Z, Y and X. {_FIX_WRITE[0].upper()}{_FIX_WRITE[1:]}."
        )
    if len(first.shape) != 2:
        raise VolumeError(
            f"{path}: pages have shape {first.shape}, expected (Y, X) grey planes. "
            f"{_FIX_WRITE[0].upper()}{_FIX_WRITE[1:]}."
        )
    if n_pages == 1:
        raise VolumeError(
            f"{path}: holds a single 2D page of shape {first.shape}, not a (Z, Y, X) volume. "
            "The scorer stacks pages on axis 0, so a volume needs one page per Z slice: "
            f"{_FIX_WRITE} with a 3D array."
        )
    return n_pages, tuple(first.shape), int(first.compression)


def read_volume_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """The (Z, Y, X) shape of a volume TIFF from its page headers, without decoding it.

    Runs the same checks as :func:`read_volume` except decoding the data.
    """
    path = Path(path)
    if path.suffix == ZARR_SUFFIX and path.is_dir():
        return tuple(int(n) for n in _open_zarr_volume(path).shape)
    if not path.is_file():
        raise VolumeError(f"{path}: no such file. Check the path.")
    try:
        with tifffile.TiffFile(path) as tif:
            n_pages, page_shape, _ = _check_pages(path, tif)
    except VolumeError:
        raise
    except Exception as exc:
        raise VolumeError(
            f"{path}: cannot be read as a TIFF ({type(exc).__name__}: {exc}). The file is "
            "truncated or corrupt: copy it again, or re-write it."
        ) from exc
    return (n_pages, *page_shape)


def zarr_array_name(path: str | os.PathLike, level: int = 0, needed_for: str = "reading zarr") -> str:
    """Where the array of the zarr folder ``path`` is: ``""`` when the folder is an array, else
    the path of an OME-Zarr image's resolution ``level`` (from its ``multiscales`` metadata)."""
    from vesukit._optional import require
    from vesukit.errors import UsageError

    zarr = require("zarr", needed_for)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise VolumeError(f"{path}: not a zarr store ({type(exc).__name__}: {exc}).") from exc
    if hasattr(node, "shape"):
        return ""
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise VolumeError(f"{path}: a zarr group without OME 'multiscales' metadata; point at its array "
                          f"(e.g. {path}/0).")
    datasets = multiscales[0]["datasets"]
    if not 0 <= level < len(datasets):
        raise UsageError(f"--level {level}: {path} has levels 0..{len(datasets) - 1}.")
    return datasets[level]["path"]


def _open_zarr_volume(path: Path):
    """The zarr array at ``path`` (an ``<id>.zarr`` folder), checked to be uint8 (Z, Y, X)."""
    from vesukit._optional import require

    zarr = require("zarr", f"reading {path}")
    try:
        array = zarr.open_array(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not an array
        raise VolumeError(f"{path}: not a readable zarr array ({type(exc).__name__}: {exc}). "
                          "A .zarr test volume must be one uint8 (Z, Y, X) array.") from exc
    if len(array.shape) != 3 or str(array.dtype) != "uint8":
        raise VolumeError(f"{path}: zarr array of shape {tuple(array.shape)} and dtype {array.dtype}; "
                          "a test volume must be uint8 (Z, Y, X).")
    if 0 in tuple(array.shape):
        raise VolumeError(f"{path}: zarr array of shape {tuple(array.shape)} has a zero-size dimension; "
                          "a test volume needs at least one voxel along Z, Y and X. Re-write it.")
    return array


def _next_ifd_offset(tif: tifffile.TiffFile, ifd_offset: int) -> int:
    """The 'next page' pointer stored at the end of the IFD at ``ifd_offset`` (0 = last)."""
    fmt = tif.tiff
    handle = tif.filehandle
    handle.seek(ifd_offset)
    raw_count = handle.read(fmt.tagnosize)
    if len(raw_count) != fmt.tagnosize:
        return -1
    (count,) = struct.unpack(fmt.tagnoformat, raw_count)
    handle.seek(ifd_offset + fmt.tagnosize + count * fmt.tagsize)
    raw_next = handle.read(fmt.offsetsize)
    if len(raw_next) != fmt.offsetsize:
        return -1
    return struct.unpack(fmt.offsetformat, raw_next)[0]


def read_volume_pillow(source: str | os.PathLike | bytes | BinaryIO) -> np.ndarray:
    """Read a TIFF exactly as the official scorer does: Pillow, page by page, stacked on axis 0.

    Returns whatever that reader produces (2D pages stack to 3D, RGB pages to 4D, any dtype),
    so callers can compare it with what the source volume needs.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    return _read_pages_with_pillow(source)


def _read_pages_with_pillow(source) -> np.ndarray:
    from PIL import Image

    with Image.open(source) as image:
        planes = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            planes.append(np.array(image))
    return np.stack(planes, axis=0)


# --------------------------------------------------------------------------- writing


def encode_volume(volume: np.ndarray, compression: str | None = "zlib") -> bytes:
    """Encode a uint8 (Z, Y, X) array as multipage TIFF bytes (one page per Z slice).

    ``compression``: ``"zlib"`` (default; needs no imagecodecs), ``"lzw"`` (imagecodecs, or
    Pillow when it is absent) or ``None``.
    """
    volume = _checked_for_writing(volume)
    buffer = io.BytesIO()
    if compression == "lzw" and not has("imagecodecs"):
        _write_lzw_with_pillow(buffer, volume)
    else:
        tifffile.imwrite(
            buffer,
            volume,
            photometric="minisblack",
            compression=compression,
            metadata=None,
        )
    return buffer.getvalue()


def write_volume(
    path: str | os.PathLike, volume: np.ndarray, compression: str | None = "zlib"
) -> Path:
    """Write a uint8 (Z, Y, X) volume or mask as a multipage TIFF, atomically.

    The file appears under its final name only once it is complete, so a crash never leaves
    a half-written TIFF behind.
    """
    path = Path(path)
    data = encode_volume(volume, compression)
    atomic_write_bytes(path, data)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _checked_for_writing(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise VolumeError(
            f"cannot write a volume of shape {volume.shape}: it must be 3D (Z, Y, X). "
            "A 2D mask would be read by the scorer as a single slice."
        )
    if volume.dtype == np.bool_:
        volume = volume.view(np.uint8)
    if volume.dtype != np.uint8:
        raise VolumeError(
            f"cannot write a volume of dtype {volume.dtype}: it must be uint8. "
            "Threshold probabilities first and cast with .astype(np.uint8)."
        )
    return np.ascontiguousarray(volume)


def _write_lzw_with_pillow(handle: BinaryIO, volume: np.ndarray) -> None:
    from PIL import Image

    pages = [Image.fromarray(plane) for plane in volume]
    pages[0].save(handle, format="TIFF", save_all=True, append_images=pages[1:],
                  compression="tiff_lzw")


# --------------------------------------------------------------------------- discovery


def input_base(base: str | os.PathLike | None = None) -> Path:
    """Where inputs are discovered: ``base``, else ``$VESUKIT_INPUT_BASE``, else ``/kaggle/input``."""
    return Path(base or os.environ.get(INPUT_BASE_ENV) or DEFAULT_INPUT_BASE)


def find_competition_root(
    path: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
    slug: str = COMPETITION_SLUG,
) -> Path:
    """Return the competition root: ``path`` when given, else the first match under ``base``.

    ``base`` defaults to ``$VESUKIT_INPUT_BASE`` or ``/kaggle/input``. Both Kaggle mount
    layouts (``<base>/<slug>`` and ``<base>/competitions/<slug>``) are tried first, then
    dataset copies (``<base>/datasets/<owner>/<slug>``), then any folder up to three levels
    down that looks like a root (holds ``test.csv`` or ``test_images/``).
    """
    if path is not None:
        root = Path(path)
        if not root.is_dir():
            raise CompetitionRootError(
                f"{root}: not a directory. Pass the competition folder that holds "
                "test.csv and test_images/."
            )
        if not _looks_like_root(root):
            raise CompetitionRootError(
                f"{root}: holds neither test.csv nor test_images/. Pass the competition folder "
                "itself (the one with train.csv, test.csv, train_images/, test_images/)."
            )
        return root

    base = input_base(base)
    patterns = [slug, f"competitions/{slug}", f"datasets/*/{slug}", "*", "*/*", "*/*/*"]
    seen: list[Path] = []
    for pattern in patterns:
        for candidate in sorted(base.glob(pattern)):
            if candidate in seen or not candidate.is_dir():
                continue
            seen.append(candidate)
            if _looks_like_root(candidate):
                return candidate
    raise CompetitionRootError(
        f"no competition root found under {base} (looked for {slug}/, competitions/{slug}/ "
        "and any folder holding test.csv or test_images/). On Kaggle, add the competition as "
        "an input of the notebook; elsewhere pass --data <folder with test.csv, test_images/>."
    )


def _looks_like_root(folder: Path) -> bool:
    return (folder / "test.csv").is_file() or (folder / "test_images").is_dir()


def list_test_ids(root: str | os.PathLike) -> list[str]:
    """The test ids a submission must hold: see :func:`read_test_ids`."""
    return read_test_ids(root)[0]


def read_test_ids(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(the test ids the scorer expects, a warning per oddity of the test folder).

    The scorer reads ``test.csv``, so with one its ids are the submission's, in its order:
    an id listed twice counts once (a warning), and a volume in ``test_images/`` without a
    row is ignored (a warning). A row without a volume stays: predict gives it a flagged
    fallback mask. Without ``test.csv``, the volumes of ``test_images/`` are the ids.
    """
    root = Path(root)
    csv_path, image_dir = root / "test.csv", root / "test_images"
    if not csv_path.is_file():
        return list_ids(root, "test"), []
    rows = read_csv_ids(csv_path, allow_duplicates=True)
    ids = list(dict.fromkeys(rows))
    notes = []
    duplicates = sorted({i for i in rows if rows.count(i) > 1})
    if duplicates:
        notes.append(f"{csv_path}: ids listed twice, kept once: {_preview(duplicates)}")
    if not ids:
        raise CompetitionRootError(f"{csv_path}: lists no test volumes. Point --data at a root "
                                   "with at least one.")
    images = image_ids_in(image_dir) if image_dir.is_dir() else []
    without_row = [i for i in images if i not in set(ids)]
    if without_row:
        notes.append(f"{len(without_row)} volume(s) in {image_dir} have no row in {csv_path} "
                     f"and are ignored (the scorer reads the csv): {_preview(without_row)}")
    return ids, notes


def list_ids(root: str | os.PathLike, split: str = "test") -> list[str]:
    """Volume ids of a split (``test`` or ``train``) from ``<split>.csv`` and ``<split>_images/``.

    With both present they must name the same volumes; with one present it is used alone.
    The csv order is kept (it is the order Kaggle lists); otherwise ids are sorted.
    """
    root = Path(root)
    csv_path = root / f"{split}.csv"
    image_dir = root / f"{split}_images"
    csv_ids = read_csv_ids(csv_path) if csv_path.is_file() else None
    image_ids = image_ids_in(image_dir) if image_dir.is_dir() else None

    if csv_ids is None and image_ids is None:
        raise CompetitionRootError(
            f"{root}: has neither {split}.csv nor {split}_images/. Point --data at the "
            "competition root."
        )
    if csv_ids is not None and image_ids is not None:
        without_image = [i for i in csv_ids if i not in set(image_ids)]
        without_row = [i for i in image_ids if i not in set(csv_ids)]
        problems = []
        if without_image:
            problems.append(
                f"{len(without_image)} row(s) of {csv_path} have no {split}_images/<id>.tif: "
                + _preview(without_image)
            )
        if without_row:
            problems.append(
                f"{len(without_row)} image(s) in {image_dir} have no row in {csv_path}: "
                + _preview(without_row)
            )
        if problems:
            raise CompetitionRootError(
                "; ".join(problems)
                + ". The csv and the image folder must list the same volumes: restore the "
                "missing files or fix the csv."
            )
    ids = csv_ids if csv_ids is not None else image_ids
    if not ids:
        where = csv_path if csv_ids is not None else image_dir
        raise CompetitionRootError(
            f"{where}: lists no {split} volumes. Point --data at a root with at least one."
        )
    return list(ids)


def read_csv_ids(csv_path: Path, allow_duplicates: bool = False) -> list[str]:
    """The ``id`` column of a competition csv, as strings, in file order."""
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "id" not in reader.fieldnames:
            raise CompetitionRootError(
                f"{csv_path}: has no 'id' column (columns: {reader.fieldnames}). "
                "Competition csv files start with the header 'id,scroll_id'."
            )
        ids = [row["id"].strip() for row in reader if row.get("id", "").strip()]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates and not allow_duplicates:
        raise CompetitionRootError(f"{csv_path}: ids listed twice: {_preview(duplicates)}.")
    return ids


def image_ids_in(folder: Path) -> list[str]:
    """Ids of the ``<id>.tif`` volumes (and ``<id>.zarr`` arrays) in a folder, sorted."""
    tiffs = {p.name[: -len(VOLUME_SUFFIX)] for p in folder.glob(f"*{VOLUME_SUFFIX}") if p.is_file()}
    zarrs = {p.name[: -len(ZARR_SUFFIX)] for p in folder.glob(f"*{ZARR_SUFFIX}") if p.is_dir()}
    return sorted(tiffs | zarrs)


def volume_path(root: str | os.PathLike, volume_id: str, kind: str = "test_images") -> Path:
    """``<root>/<kind>/<id>.tif``; ``kind`` is test_images, train_images or train_labels.

    Without that TIFF, an ``<id>.zarr`` array beside it is the volume (the TIFF wins when both exist).
    """
    tiff = Path(root) / kind / f"{volume_id}{VOLUME_SUFFIX}"
    zarr_path = tiff.with_suffix(ZARR_SUFFIX)
    return zarr_path if not tiff.exists() and zarr_path.is_dir() else tiff


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
