"""Stream masks into ``submission.zip`` as they arrive, and never leave a half-written one.

Each mask becomes one flat ``<id>.tif`` entry (multipage uint8, zlib pages) of a deflated zip.
Nothing is kept on disk but the zip itself, which lives under a temporary name next to the
final path and is renamed only by :meth:`SubmissionWriter.finish`, after the full id list has
been cross-checked. No torch import here: the writer runs wherever numpy and tifffile do.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile

from vesukit.data import VOLUME_SUFFIX, encode_volume
from vesukit.errors import VesukitError

ZIP_DATE_TIME = (2020, 1, 1, 0, 0, 0)


class SubmissionError(VesukitError):
    """A submission zip cannot be written or is not valid."""


Shape = tuple[int, int, int]


class SubmissionWriter:
    """Write ``<id>.tif`` masks into a deflated zip at ``path``, atomically.

    ``expected``: the test ids, as a mapping id -> (Z, Y, X) shape when the shapes are known
    (then every mask's shape is checked) or a sequence of ids. Use as a context manager: an
    exception inside the block (or a failed :meth:`finish` at its end) removes the temporary
    zip, so no partial ``path`` ever exists and an older ``path`` is left as it was.
    """

    def __init__(self, path: str | os.PathLike,
                 expected: Mapping[str, Sequence[int]] | Sequence[str],
                 compression: str | None = "zlib") -> None:
        self.path = Path(path)
        if isinstance(expected, Mapping):
            self.shapes: dict[str, Shape | None] = {
                str(k): (tuple(int(s) for s in v) if v is not None else None)
                for k, v in expected.items()}
        else:
            if isinstance(expected, str):
                raise TypeError("expected must be a sequence of ids or a mapping id -> shape, "
                                "not a single string")
            self.shapes = {str(k): None for k in expected}
        if not self.shapes:
            raise SubmissionError(f"{self.path}: no test ids given; a submission needs at "
                                  "least one volume.")
        self.compression = compression
        # Hidden, clearly named, same folder as the target so the final rename is atomic.
        self.temp_path = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self._written: list[str] = []
        self._lock = threading.Lock()
        self._zip: zipfile.ZipFile | None = None
        self._state = "new"  # new -> open -> finished | aborted

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SubmissionWriter:
        self._open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            try:
                self.finish()
            except BaseException:
                self.abort()
                raise

    def _open(self) -> None:
        if self._state == "open":
            return
        if self._state != "new":
            raise SubmissionError(f"{self.path}: this writer is already {self._state}; "
                                  "create a new SubmissionWriter.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_partials()
        self._zip = zipfile.ZipFile(self.temp_path, "w", compression=zipfile.ZIP_DEFLATED)
        self._state = "open"

    def _remove_stale_partials(self) -> None:
        """Delete partial zips for this path left by writers that were killed (kill -9)."""
        for partial in self.path.parent.glob(f".{self.path.name}.partial-*"):
            pid = partial.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
                partial.unlink(missing_ok=True)

    @property
    def written(self) -> tuple[str, ...]:
        """Ids added so far, in order."""
        return tuple(self._written)

    @property
    def missing(self) -> list[str]:
        done = set(self._written)
        return [i for i in self.shapes if i not in done]

    # ------------------------------------------------------------------ writing
    def add(self, volume_id: str, mask: np.ndarray) -> None:
        """Encode ``mask`` (uint8 or bool, (Z, Y, X), values 0/1) as ``<id>.tif`` in the zip."""
        volume_id = str(volume_id)
        mask = self._checked_mask(volume_id, mask)
        data = encode_volume(mask, self.compression)  # outside the lock: encoding is the cost
        self._write_entry(volume_id, data)

    def add_encoded(self, volume_id: str, tiff: bytes) -> None:
        """Add a mask already encoded as TIFF bytes (e.g. kept in a workdir for resume).

        The page headers are checked against the expected shape and dtype; the values are
        not decoded (the validator does that on the finished zip).
        """
        volume_id = str(volume_id)
        self.check_encoded(volume_id, tiff)
        self._write_entry(volume_id, tiff)

    def check_encoded(self, volume_id: str, tiff: bytes) -> None:
        """Raise :class:`SubmissionError` unless ``tiff`` is a uint8 mask of the expected
        shape for ``volume_id`` (headers only); adds nothing."""
        volume_id = str(volume_id)
        self._check_id(volume_id)
        expected = self.shapes[volume_id]
        try:
            with tifffile.TiffFile(io.BytesIO(tiff)) as tif:
                pages = tif.pages
                shape = (len(pages), *pages.first.shape)
                dtype = pages.first.dtype
        except Exception as exc:  # noqa: BLE001 - any parse failure means unusable bytes
            raise SubmissionError(f"{self.path}: mask for {volume_id!r} is not a readable "
                                  f"TIFF ({exc}). Encode it with vesukit.data.encode_volume.") from exc
        if dtype != np.uint8 or (expected is not None and shape != expected):
            raise SubmissionError(
                f"{self.path}: mask for {volume_id!r} is a {dtype} TIFF of shape {shape}; the "
                f"source volume needs uint8 {expected}.")

    def _write_entry(self, volume_id: str, data: bytes) -> None:
        with self._lock:
            if self._state == "new":
                self._open()
            if self._state != "open":
                raise SubmissionError(f"{self.path}: cannot add {volume_id!r}, the writer is "
                                      f"already {self._state}.")
            if volume_id in self._written:  # checked again under the lock (threads)
                raise SubmissionError(self._twice_message(volume_id))
            # A fixed timestamp: the same masks always give the same zip bytes, so a resumed
            # or multi-worker run can be compared with an uninterrupted one byte for byte.
            info = zipfile.ZipInfo(f"{volume_id}{VOLUME_SUFFIX}", date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            self._zip.writestr(info, data)
            self._written.append(volume_id)

    def _twice_message(self, volume_id: str) -> str:
        return (f"{self.path}: {volume_id!r} was already added; each test id gets exactly one "
                "mask. Check the loop over test ids for repeats.")

    def _check_id(self, volume_id: str) -> None:
        if volume_id not in self.shapes:
            raise SubmissionError(
                f"{self.path}: {volume_id!r} is not a test id ({len(self.shapes)} expected, "
                f"e.g. {', '.join(list(self.shapes)[:3])}). Only test volumes may be submitted; "
                "check that the ids come from test.csv / test_images.")
        if volume_id in self._written:
            raise SubmissionError(self._twice_message(volume_id))

    def _checked_mask(self, volume_id: str, mask: np.ndarray) -> np.ndarray:
        where = f"{self.path}: mask for {volume_id!r}"
        self._check_id(volume_id)
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            mask = mask.view(np.uint8)
        if mask.dtype != np.uint8:
            raise SubmissionError(
                f"{where} has dtype {mask.dtype}; it must be uint8 or bool. Threshold the "
                "probabilities and cast: (prob >= t).astype(np.uint8).")
        expected = self.shapes[volume_id]
        if mask.ndim != 3 or (expected is not None and mask.shape != expected):
            want = "x".join(map(str, expected)) if expected else "(Z, Y, X)"
            raise SubmissionError(
                f"{where} has shape {mask.shape}; the source volume is {want}. The scorer "
                "needs the exact same (Z, Y, X) shape: do not crop, pad or transpose it.")
        if mask.size and mask.max() > 1:
            raise SubmissionError(
                f"{where} holds values up to {int(mask.max())}; masks must be 0/1. "
                "Use (mask > 0).astype(np.uint8).")
        return np.ascontiguousarray(mask)

    # ------------------------------------------------------------------ ending
    def finish(self) -> Path:
        """Check every expected id was written, close the zip and rename it into place."""
        with self._lock:
            if self._state == "finished":
                return self.path
            if self._state == "new":
                self._open()
            if self._state != "open":
                raise SubmissionError(f"{self.path}: cannot finish, the writer was "
                                      f"{self._state}.")
            missing = self.missing
            if missing:
                raise SubmissionError(
                    f"{self.path}: {len(missing)} of {len(self.shapes)} test id(s) have no mask "
                    f"yet: {_preview(missing)}. Add them before finish(); the zip stays at "
                    f"{self.temp_path} until then.")
            self._zip.close()
            # Cross-check what actually landed in the archive, not only our bookkeeping.
            with zipfile.ZipFile(self.temp_path) as archive:
                names = archive.namelist()
            want = sorted(f"{i}{VOLUME_SUFFIX}" for i in self.shapes)
            if sorted(names) != want:
                raise SubmissionError(
                    f"{self.temp_path}: holds {len(names)} entries, expected {len(want)} "
                    f"(<id>.tif for each test id). The archive was modified while writing; "
                    "write it again.")
            with open(self.temp_path, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(self.temp_path, self.path)
            self._state = "finished"
            return self.path

    def abort(self) -> None:
        """Drop the temporary zip; the final path is left untouched."""
        with self._lock:
            if self._zip is not None:
                try:
                    self._zip.close()
                except Exception:  # closing a zip after a failure must not mask that failure
                    pass
            if self._state != "finished":
                self._state = "aborted"
                self.temp_path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _preview(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
