"""Building, loading and importing nnU-Net v2 teachers (torch; the spec and the folder
reading are torch-free in :mod:`vesukit.teachers.nnunet`).

Only classes of ``dynamic-network-architectures`` are built, and plans.json may name only
``torch.nn`` module classes for its conv/norm/dropout/non-linearity arguments: a plans file
cannot make vesukit import anything else.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import torch

from vesukit.data import atomic_write_bytes
from vesukit.teachers.base import TeacherError
from vesukit.teachers.checkpoint import LoadReport, load_weights, read_checkpoint_file
from vesukit.teachers.nnunet import (
    META_NAME,
    NnUNetPlan,
    NnUNetSpec,
    _read_json,
    fold_dir,
    read_plan,
)
from vesukit.teachers.spec import save_manifest

NETWORK_PACKAGE = "dynamic_network_architectures"


def network_class(name: str, who: str):
    """The class ``name`` from dynamic-network-architectures, and nothing outside it."""
    from vesukit._optional import require

    require(NETWORK_PACKAGE, "building nnU-Net v2 teachers", "dynamic-network-architectures")
    module_name, _, class_name = name.rpartition(".")
    candidates = [module_name] if module_name.startswith(NETWORK_PACKAGE + ".") else []
    if not module_name:       # a bare class name: look where nnU-Net looks
        candidates = [f"{NETWORK_PACKAGE}.architectures.{m}" for m in ("unet", "resnet", "vgg",
                                                                       "primus")]
    for candidate in candidates:
        try:
            module = importlib.import_module(candidate)
        except ImportError:
            continue
        cls = getattr(module, class_name, None)
        if isinstance(cls, type):
            return cls
    raise TeacherError(f"{who}: plans.json names the network class {name!r}, which is not in "
                       f"{NETWORK_PACKAGE}; vesukit builds nnU-Net networks only from that package "
                       "(custom architectures would mean running code named by a model file)")


def _torch_class(path: str, who: str):
    """``torch.nn.modules.conv.Conv3d``-style names of plans.json: torch.nn module classes only."""
    if not path.startswith("torch.nn."):
        raise TeacherError(f"{who}: plans.json asks to import {path!r}; only torch.nn classes "
                           "(conv, norm, dropout, non-linearity) are allowed there")
    node: Any = torch
    for part in path.split(".")[1:]:
        node = getattr(node, part, None)
        if node is None:
            break
    if not (isinstance(node, type) and issubclass(node, torch.nn.Module)):
        raise TeacherError(f"{who}: plans.json names {path!r}, which is not a torch.nn module class")
    return node


def build_network(plan: NnUNetPlan, who: str):
    """The fold network as nnU-Net builds it for inference (deep supervision off)."""
    cls = network_class(plan.network_class, who)
    kwargs = dict(plan.arch_kwargs)
    for key in plan.requires_import:
        if kwargs.get(key) is not None:
            kwargs[key] = _torch_class(kwargs[key], who)
    kwargs["deep_supervision"] = False
    try:
        return cls(input_channels=1, num_classes=plan.heads, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise TeacherError(f"{who}: cannot build {plan.network_class} from the plans' arch_kwargs "
                           f"({type(exc).__name__}: {exc})") from None


def read_fold(path: Path, who: str) -> tuple[dict, dict]:
    """(state dict, meta) of one fold. nnU-Net's .pth through the weights-only reader; the
    slim folder's safetensors with the meta file beside the folds."""
    raw = read_checkpoint_file(path)
    if path.suffix == ".safetensors":
        meta_path = path.parent.parent / META_NAME
        return raw, (_read_json(meta_path, who) if meta_path.is_file() else {})
    if not isinstance(raw, dict) or "network_weights" not in raw:
        keys = sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__
        raise TeacherError(f"{who}: {path} is not an nnU-Net v2 checkpoint (no 'network_weights'; "
                           f"found {keys})")
    init_args = raw.get("init_args") or {}
    axes = raw.get("inference_allowed_mirroring_axes")
    meta = {"trainer_name": raw.get("trainer_name"),
            "configuration": init_args.get("configuration"),
            "inference_allowed_mirroring_axes": None if axes is None else [int(a) for a in axes]}
    return dict(raw["network_weights"]), meta


def _load_fold(path: Path, plan: NnUNetPlan, who: str):
    state, meta = read_fold(path, who)
    if meta.get("configuration") not in (None, plan.configuration):
        raise TeacherError(f"{who}: {path} was trained as configuration "
                           f"{meta['configuration']!r}, the folder says {plan.configuration!r}")
    network = build_network(plan, who)
    load_weights(network, state, LoadReport(source=str(path), location="network_weights"),
                 who=f"{who} ({path})")
    return network, meta


class NnUNetFolds(torch.nn.Module):
    """The folds of one nnU-Net model. Forward returns their mean logits; logits blend
    linearly, so one sliding window over this equals nnU-Net's per-fold windows averaged."""

    def __init__(self, networks, plan: NnUNetPlan, mirror_axes: tuple[int, ...], meta: dict):
        super().__init__()
        self.folds = torch.nn.ModuleList(networks)
        self.plan = plan
        self.mirror_axes = mirror_axes
        self.meta = meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.folds[0](x)
        for network in self.folds[1:]:
            out = out + network(x)
        return out / len(self.folds) if len(self.folds) > 1 else out


def load_nnunet_teacher(spec: NnUNetSpec, root: str | Path,
                        device: str | torch.device = "cpu") -> NnUNetFolds:
    """The folds of ``spec`` on ``device`` in eval mode; ``.plan`` and ``.mirror_axes`` tell
    the inference how nnU-Net would run them."""
    who = f"teacher '{spec.name}'"
    plan = read_plan(spec, root)
    networks, metas = [], []
    for path in plan.weights:
        network, meta = _load_fold(path, plan, who)
        networks.append(network)
        metas.append(meta)
    axes = metas[0].get("inference_allowed_mirroring_axes")
    mirror_axes = tuple(range(3)) if axes is None else tuple(int(a) for a in axes)
    model = NnUNetFolds(networks, plan, mirror_axes, metas[0])
    return model.to(device).eval()


# -- import-nnunet ------------------------------------------------------------------------------
def import_nnunet(results: str | Path, out: str | Path, *, folds=None, checkpoint: str = "final",
                  name: str | None = None) -> tuple[Path, NnUNetSpec]:
    """Write a slim teacher folder from an nnU-Net results folder: ``out/teachers.json`` and
    ``out/<name>/`` with plans.json, dataset.json, :data:`META_NAME` and
    ``fold_<f>/checkpoint_<checkpoint>.safetensors``. Every fold is loaded into its network
    first, so a folder that would not run is not written. Returns (manifest path, spec)."""
    from safetensors.torch import save as save_bytes

    results = Path(results).resolve()
    out = Path(out)
    if folds is None:
        folds = sorted((p.name[len("fold_"):] for p in results.glob("fold_*")
                        if (p / f"checkpoint_{checkpoint}.pth").is_file()),
                       key=lambda f: (f == "all", int(f) if f.isdigit() else 0))
        folds = [int(f) if f.isdigit() else f for f in folds]
        if not folds:
            raise TeacherError(f"{results}: no fold_<f>/checkpoint_{checkpoint}.pth here; is this "
                               "an nnU-Net results folder (<Trainer>__<Plans>__<configuration>)?")
    name = name or _default_name(results)
    source = NnUNetSpec(name=name, model=str(results), folds=tuple(folds), checkpoint=checkpoint)
    model = load_nnunet_teacher(source, results.parent)
    target = out / name
    (target).mkdir(parents=True, exist_ok=True)
    for fname in ("plans.json", "dataset.json"):
        atomic_write_bytes(target / fname, (results / fname).read_bytes())
    meta = dict(model.meta, configuration=model.plan.configuration,
                inference_allowed_mirroring_axes=list(model.mirror_axes), source=str(results))
    atomic_write_bytes(target / META_NAME, (json.dumps(meta, indent=2) + "\n").encode())
    for fold, network in zip(source.folds, model.folds):
        state = {k: v.detach().contiguous().cpu().clone() for k, v in network.state_dict().items()}
        (target / fold_dir(fold)).mkdir(exist_ok=True)
        atomic_write_bytes(target / fold_dir(fold) / f"checkpoint_{checkpoint}.safetensors",
                           save_bytes(state))
    spec = NnUNetSpec(name=name, model=name, folds=source.folds, checkpoint=checkpoint)
    read_plan(spec, out)                          # the slim folder reads back
    return save_manifest(out, [spec]), spec


def _default_name(results: Path) -> str:
    trainer, _, rest = results.name.partition("__")
    dataset = results.parent.name
    raw = f"{dataset}_{rest.replace('__', '_')}" if rest else results.name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw).strip("_.-") or "nnunet"
