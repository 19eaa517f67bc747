"""Resolve numba once, through vesukit._optional, and hand out the compiled kernels."""

from __future__ import annotations

from types import ModuleType

_kernels: ModuleType | None = None


def kernels() -> ModuleType:
    """The :mod:`vesukit.metric._kernels` module; MissingDependencyError without numba."""
    global _kernels
    if _kernels is None:
        from vesukit._optional import require

        require("numba", "The local scorer (vesukit score)", "numba")
        from vesukit.metric import _kernels as module

        _kernels = module
    return _kernels
