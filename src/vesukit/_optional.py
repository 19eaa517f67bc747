"""The one place where optional dependencies are resolved.

Each helper returns the module or ``None``; callers pick the real fallback. Tests switch a
package off with :func:`disable` (the environment variable ``VESUKIT_DISABLE`` does the same
for subprocesses, e.g. ``VESUKIT_DISABLE=imagecodecs``), which simulates the Kaggle image
where imagecodecs, zarr, cc3d and segmentation-models-pytorch are absent.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

_disabled: set[str] = set()


def _env_disabled() -> set[str]:
    raw = os.environ.get("VESUKIT_DISABLE", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def disable(*names: str) -> None:
    """Treat ``names`` as not installed from now on (for tests and fallbacks)."""
    _disabled.update(names)


def enable(*names: str) -> None:
    """Undo :func:`disable`."""
    _disabled.difference_update(names)


def optional_import(name: str) -> ModuleType | None:
    """Import ``name`` if it is installed and not disabled, else return ``None``."""
    if name in _disabled or name in _env_disabled():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def has(name: str) -> bool:
    return optional_import(name) is not None


def require(name: str, purpose: str, pip_name: str | None = None) -> ModuleType:
    """Import ``name`` or raise a :class:`MissingDependencyError` that says how to get it."""
    module = optional_import(name)
    if module is None:
        from vesukit.errors import MissingDependencyError

        pip_name = pip_name or name
        raise MissingDependencyError(
            f"{purpose} needs the package '{pip_name}', which is not installed. "
            f"Install it (`pip install {pip_name}`, or offline: "
            f"`pip install --no-index --find-links <wheels dir> {pip_name}`)."
        )
    return module
