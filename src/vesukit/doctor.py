"""Environment diagnosis behind `vesukit doctor` (returns data; the command prints it)."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

from vesukit import __version__
from vesukit.data import _looks_like_root
from vesukit.data import input_base as data_input_base

# Distribution name -> what it is for.
PACKAGES = (
    "numpy", "tifffile", "pillow", "scipy",                       # core
    "torch", "torchvision", "timm", "segmentation-models-pytorch", "safetensors",  # inference
    "numba", "imagecodecs", "zarr", "connected-components-3d",   # scorer, codecs, optional
)


def diagnose(input_base: str | None = None) -> dict:
    base = data_input_base(input_base)
    return {
        "python": sys.version.split()[0],
        "vesukit": __version__,
        "torch": _torch_info(),
        "packages": {name: _version(name) for name in PACKAGES},
        "wheel_folders": [str(p) for p in _wheel_folders(base)],
        "competition_roots": [str(p) for p in _competition_roots(base)],
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_info() -> dict:
    """torch's version, CUDA build, GPUs and CPU threads; {} without torch. The one place
    vesukit gathers these (`vesukit doctor` and every run record)."""
    try:
        import torch
    except ImportError:
        return {}
    info = {"version": torch.__version__, "cuda": torch.version.cuda, "devices": [],
            "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["devices"].append({"index": index, "name": props.name,
                                    "memory_gb": props.total_memory / 2**30})
    return info


def environment_summary(devices: list[str]) -> dict:
    """The environment facts a run record keeps: versions, the devices used, GPUs, CPU."""
    import numpy as np

    torch_info = _torch_info()
    info = {
        "vesukit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_info.get("version"),
        "devices": list(devices),
    }
    if torch_info.get("devices"):
        info["gpus"] = [gpu["name"] for gpu in torch_info["devices"]]
    info["cpu"] = platform.processor() or platform.machine()
    info["cpu_threads"] = torch_info.get("cpu_threads")
    return info


def _wheel_folders(base: Path) -> list[Path]:
    candidates = [Path.cwd() / "wheels"]
    if base.is_dir():
        candidates += sorted({p.parent for p in base.glob("**/*.whl")})
    return [c for c in candidates if c.is_dir() and any(c.glob("*.whl"))]


def _competition_roots(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    found = []
    for pattern in ("*", "*/*", "*/*/*"):
        found += [p for p in sorted(base.glob(pattern)) if p.is_dir() and _looks_like_root(p)]
    return found
