"""Resumable training state without pickled code: weights and optimizer tensors in
safetensors, everything else (step, stage, early-stopping history, RNG states) in JSON.

A checkpoint folder holds ``model.safetensors`` (the latest weights), ``best.safetensors``
(the best held-back score so far), ``optimizer.safetensors`` (the optimizer's per-parameter
tensors and torch's RNG state) and ``state.json``; each file is written atomically and
``state.json`` last, so a kill at any moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vesukit.data import atomic_write_bytes
from vesukit.train import TrainError

STATE = "state.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and JSON metadata."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(folder: Path, model, optimizer, state: dict[str, Any],
                        best_state: dict[str, torch.Tensor] | None) -> None:
    from safetensors.torch import save as save_bytes

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / "model.safetensors", save_bytes(weights))
    if best_state is not None:
        atomic_write_bytes(folder / "best.safetensors", save_bytes(best_state))
    tensors, meta = optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    atomic_write_bytes(folder / "optimizer.safetensors", save_bytes(tensors))
    state = dict(state, optimizer=meta)
    atomic_write_bytes(folder / STATE, json.dumps(state, indent=1).encode())


def load_training_state(folder: Path) -> tuple[dict, dict, dict | None, dict]:
    """(state, model weights, best weights or None, optimizer tensors) of a checkpoint."""
    from safetensors.torch import load_file

    path = folder / STATE
    try:
        state = json.loads(path.read_text())
        weights = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        best = (load_file(str(folder / "best.safetensors"))
                if (folder / "best.safetensors").is_file() else None)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise TrainError(f"{folder}: cannot read the training checkpoint ({exc}); remove the "
                         "folder to start over") from None
    return state, weights, best, tensors
