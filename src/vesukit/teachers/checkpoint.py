"""Loading the weights people actually save, without ever running code from a model file.

Accepted: ``.safetensors``; ``torch.save`` files (``.pt``/``.pth``/``.ckpt``/``.bin``) holding
a state dict or a dict wrapping one (``state_dict``, ``model``, ``model_state_dict``, EMA
copies, Lightning checkpoints), with key prefixes from DDP (``module.``), Lightning
(``model.``) and ``torch.compile`` (``_orig_mod.``) in any combination; and smp
``save_pretrained`` folders (``config.json`` + ``model.safetensors``). Files are read with
safetensors or ``torch.load(weights_only=True)`` only: anything that needs pickled code is
refused with an explanation.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vesukit.teachers.spec import TeacherError, TeacherSpec

if TYPE_CHECKING:
    import torch

# Where wrapped checkpoints keep the weights, in order of preference. Plain weights win over
# an EMA copy when both are present; choose the EMA with TeacherSpec.checkpoint_key.
PLAIN_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights",
              "module")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict", "model_ema_state_dict",
            "ema_model", "shadow")
# Prefixes training wrappers add to every key; stripped (repeatedly, any order) when that
# makes the keys fit the model better.
KNOWN_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "network.", "ema_model.",
                  "model_ema.", "ema.", "shadow.")
SMP_CONFIG = "config.json"
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")


@dataclass
class LoadReport:
    """How a checkpoint was matched to a model (what :func:`load_weights` found)."""

    source: str
    location: str = "top level"            # where in the file the weights were
    stripped: tuple[str, ...] = ()           # prefixes removed from the keys
    dropped: list[str] = field(default_factory=list)     # entries outside the prefix
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)  # other weight sets in the file
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, max_keys: int = 6) -> str:
        lines = [f"weights from {self.source} ({self.location}"
                 + (f", prefix {' + '.join(repr(p) for p in self.stripped)} removed"
                    if self.stripped else "") + f"): {self.loaded} tensors match"]
        for title, keys in (("missing from the checkpoint", self.missing),
                            ("unexpected in the checkpoint", self.unexpected)):
            if keys:
                lines.append(f"  {len(keys)} {title}: {_grouped(keys, max_keys)}")
        if self.mismatched:
            lines.append(f"  {len(self.mismatched)} with a different shape "
                         "(key: checkpoint vs model):")
            for key, got, want in self.mismatched[:max_keys]:
                lines.append(f"    {key}: {list(got)} vs {list(want)}")
            if len(self.mismatched) > max_keys:
                lines.append(f"    ... and {len(self.mismatched) - max_keys} more")
        if self.dropped:
            lines.append(f"  {len(self.dropped)} entries outside the model's prefix ignored: "
                         f"{_grouped(self.dropped, max_keys)}")
        if self.alternatives:
            lines.append("  other weight sets in this file: "
                         + ", ".join(repr(a) for a in self.alternatives)
                         + " (pick one with the teacher's checkpoint_key)")
        return "\n".join(lines)


def _grouped(keys: list[str], max_keys: int) -> str:
    """'encoder.layer1 (12 keys), decoder.blocks.0.conv1.weight, ...' - short but specific."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        groups.setdefault(".".join(parts[:2]) if len(parts) > 2 else key, []).append(key)
    shown = []
    for prefix, members in list(groups.items())[:max_keys]:
        shown.append(members[0] if len(members) == 1 else f"{prefix}.* ({len(members)} keys)")
    if len(groups) > max_keys:
        shown.append(f"... {len(groups) - max_keys} more groups")
    return ", ".join(shown)


def _is_state_dict(obj: Any) -> bool:
    import torch

    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _numpy_data_globals() -> list:
    """numpy scalars, dtypes and arrays that training scripts leave beside the weights
    (``"best_dice": np.float64(0.61)``). Their pickles rebuild plain data and any object
    inside still goes through the weights-only unpickler, so they are allowed."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:                                   # numpy < 2
        from numpy.core import multiarray
    allowed: list = [np.dtype, np.ndarray]
    for name in ("scalar", "_reconstruct"):
        obj = getattr(multiarray, name)
        allowed += [(obj, f"numpy.core.multiarray.{name}"),
                    (obj, f"numpy._core.multiarray.{name}")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def _read_torch_file(path: Path) -> Any:
    import contextlib

    import torch

    safe = getattr(torch.serialization, "safe_globals", None)
    context = safe(_numpy_data_globals()) if safe else contextlib.nullcontext()
    try:
        with context:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n")
        culprit = next((line.strip() for line in detail if "GLOBAL" in line
                        or "Unsupported" in line), detail[0].strip())
        raise TeacherError(
            f"{path}: refused: this checkpoint contains pickled Python objects that need "
            f"code to rebuild ({culprit}). vesukit loads weights only "
            "(torch.load(weights_only=True) or safetensors) and never runs code from a model "
            "file. Where the model was trained, save just the tensors: "
            "`torch.save(model.state_dict(), 'teacher.pth')` or "
            "`safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors')`.") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):   # older torch
            raise TeacherError(f"{path}: refused: this checkpoint contains pickled Python "
                               "objects that need code to rebuild; vesukit never runs code "
                               "from a model file. Save `model.state_dict()` (torch.save) or "
                               f"use safetensors. ({str(exc).splitlines()[0]})") from None
        raise TeacherError(f"{path}: cannot read as a torch checkpoint ({type(exc).__name__}: "
                           f"{exc}); is the file complete?") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from vesukit._optional import require

    require("safetensors", "reading .safetensors checkpoints")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise TeacherError(f"{path}: cannot read as safetensors ({exc}); is the file "
                           "complete?") from None


def _read_folder(path: Path, spec: TeacherSpec | None) -> tuple[Any, str]:
    config = path / SMP_CONFIG
    if config.is_file() and spec is not None:
        _check_smp_config(config, spec)
    for name in FOLDER_WEIGHTS:
        weights = path / name
        if weights.is_file():
            return read_checkpoint_file(weights), str(weights)
    raise TeacherError(f"{path}: a checkpoint folder must hold one of "
                       f"{', '.join(FOLDER_WEIGHTS)} (as smp's save_pretrained writes), "
                       f"found: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'}")


def _check_smp_config(config: Path, spec: TeacherSpec) -> None:
    """smp's save_pretrained records the class and encoder; they must agree with the spec."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"{config}: unreadable smp config ({exc})") from None
    cls = data.get("_model_class")
    if cls is not None and spec.arch.startswith("smp.") and f"smp.{cls}" != spec.arch:
        raise TeacherError(f"teacher '{spec.name}': field 'arch': the manifest says "
                           f"{spec.arch!r} but {config} was saved from smp.{cls}")
    encoder = data.get("encoder_name")
    if encoder is not None and spec.encoder is not None and encoder != spec.encoder:
        raise TeacherError(f"teacher '{spec.name}': field 'encoder': the manifest says "
                           f"{spec.encoder!r} but {config} has encoder_name {encoder!r}")
    for key, want in (("in_channels", spec.in_channels), ("classes", spec.out_channels)):
        if key in data and data[key] != want:
            field_name = "context" if key == "in_channels" else "out_channels"
            raise TeacherError(f"teacher '{spec.name}': field '{field_name}': the manifest "
                               f"implies {key}={want} but {config} has {key}={data[key]}")


def read_checkpoint_file(path: str | Path) -> Any:
    """The raw content of one checkpoint file (safetensors or weights-only torch)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path}: checkpoint file not found")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if head[:2] == b"PK" or head[:1] == b"\x80":          # zip (torch >= 1.6) or legacy
        return _read_torch_file(path)
    # Unknown extension: safetensors files start with an 8-byte little-endian header size.
    if len(head) == 8 and 0 < int.from_bytes(head, "little") < (100 << 20):
        return _read_safetensors(path)
    return _read_torch_file(path)


def extract_state_dict(obj: Any, key: str | None = None, *,
                       source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str,
                                                            list[str]]:
    """Find the tensors inside a loaded checkpoint.

    Returns (state dict, where it was found, other weight sets present). ``key`` is a dotted
    path (e.g. ``"state_dict_ema"`` or ``"checkpoint.model"``) that overrides the search.
    """
    if key is not None:
        node = obj
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                have = sorted(node)[:12] if isinstance(node, Mapping) else type(node).__name__
                raise TeacherError(f"{source}: checkpoint_key {key!r}: no entry {part!r} "
                                   f"(found: {have})")
            node = node[part]
        state, where, _ = extract_state_dict(node, source=source)
        return state, key + ("" if where == "top level" else f".{where}"), []
    if _is_state_dict(obj):
        return dict(obj), "top level", []
    if not isinstance(obj, Mapping):
        raise TeacherError(f"{source}: holds a {type(obj).__name__}, not a dict of tensors")
    found = [k for k in PLAIN_KEYS + EMA_KEYS if k in obj and _holds_weights(obj[k])]
    if not found:
        keys = ", ".join(repr(k) for k in list(obj)[:12])
        raise TeacherError(f"{source}: no weights found: top-level entries are {keys}. "
                           f"Expected a state dict or one wrapped in one of "
                           f"{', '.join(PLAIN_KEYS + EMA_KEYS)}; name the entry with the "
                           "teacher's checkpoint_key")
    state, where, _ = extract_state_dict(obj[found[0]], source=source)
    return state, found[0] + ("" if where == "top level" else f".{where}"), found[1:]


def _holds_weights(obj: Any) -> bool:
    if _is_state_dict(obj):
        return True
    return isinstance(obj, Mapping) and any(
        k in obj and _holds_weights(obj[k]) for k in PLAIN_KEYS + EMA_KEYS)


def strip_prefixes(state: dict[str, Any], expected: set[str], max_depth: int = 4
                   ) -> tuple[dict[str, Any], tuple[str, ...], list[str]]:
    """Remove wrapper prefixes (any chain of up to ``max_depth`` of them, e.g. ``module.`` +
    ``_orig_mod.``) so that the most keys fit ``expected``; fewer removals win ties.

    Returns (state dict, prefixes removed in order, keys dropped because they lay outside
    the prefix - e.g. a Lightning module's loss buffers or an EMA counter)."""
    def fit(candidate: dict[str, Any]) -> int:
        return sum(k in expected for k in candidate)

    best = (fit(state), state, (), [])
    frontier = [(state, (), [])]
    for _ in range(max_depth):
        next_frontier = []
        for current, chain, dropped in frontier:
            for prefix in KNOWN_PREFIXES:
                inside = {k[len(prefix):]: v for k, v in current.items()
                          if k.startswith(prefix)}
                if not inside:
                    continue
                entry = (inside, chain + (prefix,),
                         dropped + [k for k in current if not k.startswith(prefix)])
                next_frontier.append(entry)
                if fit(inside) > best[0]:
                    best = (fit(inside), *entry)
        frontier = next_frontier
    _, state, chain, dropped = best
    return state, chain, dropped


def read_state_dict(path: str | Path, *, key: str | None = None,
                    spec: TeacherSpec | None = None) -> tuple[dict[str, torch.Tensor],
                                                              LoadReport]:
    """Read a checkpoint file or folder into a plain state dict (prefixes not yet removed)."""
    path = Path(path)
    if path.is_dir():
        raw, source = _read_folder(path, spec)
    else:
        raw, source = read_checkpoint_file(path), str(path)
    state, where, alternatives = extract_state_dict(raw, key, source=source)
    return state, LoadReport(source=source, location=where, alternatives=alternatives)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], report: LoadReport,
                 *, strict: bool = True, who: str = "model") -> LoadReport:
    """Copy ``state`` into ``model``. Strict: every parameter and buffer present with the
    right shape and nothing extra, else a :class:`TeacherError` with a readable summary.
    Not strict: whatever matches is loaded, the rest is reported (and warned about)."""
    import torch

    target = model.state_dict()
    state, report.stripped, report.dropped = strip_prefixes(state, set(target))
    # BatchNorm's batch counter does not affect inference; old checkpoints lack it.
    report.missing = [k for k in target if k not in state
                      and not k.endswith("num_batches_tracked")]
    report.unexpected = [k for k in state if k not in target]
    report.mismatched = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in state.items()
                         if k in target and tuple(v.shape) != tuple(target[k].shape)]
    usable = {k: v for k, v in state.items()
              if k in target and tuple(v.shape) == tuple(target[k].shape)}
    report.loaded = len(usable)
    if not report.ok:
        message = f"{who}: checkpoint does not fit the architecture\n{report.summary()}"
        hint = _hint(report)
        if hint:
            message += f"\n  hint: {hint}"
        if strict:
            raise TeacherError(message)
        warnings.warn(message, stacklevel=2)
    with torch.no_grad():
        model.load_state_dict(usable, strict=False)
    return report


def _hint(report: LoadReport) -> str:
    if report.loaded == 0:
        return ("nothing matched: the checkpoint is probably from another architecture or "
                "encoder; check the teacher's arch, encoder and model_kwargs")
    for key, got, want in report.mismatched:
        if len(got) == 4 and len(want) == 4 and got[0] == want[0] and got[1] != want[1]:
            return (f"the first mismatch ({key}) differs in input channels: the checkpoint "
                    f"was trained on {got[1]} channels, the spec gives {want[1]}; for 2.5d "
                    "teachers in_channels = context")
        if len(got) >= 1 and got[0] != want[0] and key.split(".")[0] in (
                "segmentation_head", "head", "classifier"):
            return (f"{key}: the checkpoint emits {got[0]} channels, the spec says "
                    f"out_channels={want[0]}")
    return ""


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights as safetensors (atomically)."""
    from safetensors.torch import save as save_bytes

    from vesukit.data import atomic_write_bytes

    path = Path(path)
    state = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save_bytes(state))
    return path
