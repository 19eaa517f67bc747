"""Fault injection, the test hook behind the resilience and chaos tests.

``$VESUKIT_FAULTS`` lists faults separated by ``;``, each ``STAGE:KIND[:VOLUME[:TIMES]]``:

- ``STAGE``: where predict calls :func:`inject` (see :data:`STAGES`);
- ``KIND``: an exception type from :data:`KINDS` (raised with a message saying it was
  injected), or ``sleepS`` to wait S seconds there (a slow teacher, for the time budget);
- ``VOLUME``: a test id, or ``*`` (default) for every volume (and the stages that have none);
- ``TIMES``: how often it fires in this process (default 1; ``0``: every time).

Example: ``VESUKIT_FAULTS="read:OSError:vol2;postprocess:MemoryError:*:0"``. Unset, the hook
costs one environment lookup per call. Worker processes inherit the variable and count on
their own. Never set it for a real run.
"""

from __future__ import annotations

import os
import threading
import time

ENV = "VESUKIT_FAULTS"
STAGES = (
    "load",         # loading one teacher
    "warmup",       # one teacher's warm-up forward pass
    "read",         # reading a test volume
    "teacher",      # one teacher's prediction of a volume (each retry calls it again)
    "ensemble",     # averaging the teachers' maps
    "threshold",    # the calibrated threshold rule
    "postprocess",  # the post-processing chain
    "audit",        # the --audit record and preview
    "encode",       # encoding a mask as TIFF bytes
    "save",         # writing mask + state to the workdir
    "fallback",     # making a fallback mask
    "assemble",     # adding a saved mask to the zip
    "resume",       # reading a finished volume's state on --resume
)


def _cuda_error(message: str) -> Exception:
    import torch

    return torch.cuda.OutOfMemoryError(message)


KINDS = {
    "RuntimeError": RuntimeError,
    "MemoryError": MemoryError,
    "OSError": OSError,
    "ValueError": ValueError,
    "KeyError": KeyError,
    "ZeroDivisionError": ZeroDivisionError,
    "CudaOOM": _cuda_error,   # torch.cuda.OutOfMemoryError, what a GPU raises when full
}

_lock = threading.Lock()
_fired: dict[tuple[str, int], int] = {}


def parse(text: str) -> list[tuple[str, str, str, int]]:
    """``[(stage, kind, volume, times)]``; raises ValueError naming a bad entry."""
    faults = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        fields = entry.split(":")
        if len(fields) < 2 or len(fields) > 4:
            raise ValueError(f"${ENV}: {entry!r} is not STAGE:KIND[:VOLUME[:TIMES]]")
        stage, kind = fields[0], fields[1]
        volume = fields[2] if len(fields) > 2 and fields[2] else "*"
        times = int(fields[3]) if len(fields) > 3 else 1
        if stage not in STAGES:
            raise ValueError(f"${ENV}: stage {stage!r} is not one of {', '.join(STAGES)}")
        if kind not in KINDS and not kind.startswith("sleep"):
            raise ValueError(f"${ENV}: kind {kind!r} is not one of {', '.join(KINDS)} or sleepS")
        faults.append((stage, kind, volume, times))
    return faults


def inject(stage: str, volume: str | None = None) -> None:
    """Raise (or sleep) here if ``$VESUKIT_FAULTS`` asks for it."""
    text = os.environ.get(ENV)
    if not text:
        return
    for index, (f_stage, kind, f_volume, times) in enumerate(parse(text)):
        if f_stage != stage or (f_volume != "*" and f_volume != volume):
            continue
        with _lock:
            key = (text, index)
            if times and _fired.get(key, 0) >= times:
                continue
            _fired[key] = _fired.get(key, 0) + 1
        if kind.startswith("sleep"):
            time.sleep(float(kind[len("sleep"):]))
            continue
        where = f" (volume '{volume}')" if volume else ""
        raise KINDS[kind](f"injected {kind} at stage '{stage}'{where}")


def reset() -> None:
    """Forget how often each fault fired (tests that reuse one plan in one process)."""
    with _lock:
        _fired.clear()
