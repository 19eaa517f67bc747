"""The one place a `--device` value becomes a torch device."""

from __future__ import annotations

from vesukit.errors import UsageError


def resolve_device(name: str):
    """``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` checked."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise UsageError(f"--device {name}: use auto, cpu, cuda or cuda:N.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here. Use --device cpu or auto.")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name}: not a torch device ({exc}).") from exc
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible.")
    return device
