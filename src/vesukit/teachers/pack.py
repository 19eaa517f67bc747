"""`vesukit teachers pack`: a teachers folder made into the Kaggle dataset the notebook reads.

The dataset holds slim weights (each checkpoint reduced to its state dict, as safetensors:
no optimizer state, no pickled objects), the manifest pointing at them, the calibration (rule,
post-processing chain, TTA) beside it, and ``dataset-metadata.json`` with the owner from
``$KAGGLE_USERNAME``, so ``kaggle datasets create -p DATASET_DIR`` is the only step left.
Teachers whose checkpoint is a folder (nnU-Net results, ``save_pretrained``) are copied whole.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from vesukit.errors import UsageError

CALIBRATION_NAME = "calibration.json"


def pack_teachers(source, out, calibration=None, half: bool = False) -> dict:
    """Write the dataset folder ``out``; returns a summary (files, bytes before and after)."""
    from safetensors.torch import save_file

    from vesukit.data import atomic_write_bytes
    from vesukit.decide import load_calibration
    from vesukit.kernelgen import KernelConfig
    from vesukit.teachers import load_manifest
    from vesukit.teachers.checkpoint import read_state_dict
    from vesukit.teachers.nnunet import META_NAME, NnUNetSpec
    from vesukit.teachers.spec import save_manifest

    manifest = load_manifest(source)
    out = Path(out)
    if out.resolve() == manifest.root.resolve():
        raise UsageError(f"--out {out}: must differ from the teachers folder it packs.")
    calibration_path = Path(calibration) if calibration else manifest.root / CALIBRATION_NAME
    decision = None
    if calibration or calibration_path.is_file():
        decision = load_calibration(calibration_path)   # validated before it ships
        check_fitted_on_these(decision, manifest, calibration_path)
    out.mkdir(parents=True, exist_ok=True)
    specs, rows = [], []
    for spec in manifest.teachers:
        path = manifest.checkpoint_path(spec)
        before = _size(path)
        if isinstance(spec, NnUNetSpec):
            if not (path / META_NAME).is_file():
                # A raw results folder holds pickled training checkpoints (optimizer state too).
                raise UsageError(
                    f"{path}: teacher '{spec.name}' is a raw nnU-Net results folder. Make it slim "
                    f"first: `vesukit teachers import-nnunet {path} --out DIR`, then pack DIR.")
            target = out / path.name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(path, target)  # already safetensors + json
            specs.append(dataclasses.replace(spec, model=path.name))
        elif path.is_dir():
            target = out / path.name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(path, target)
            specs.append(dataclasses.replace(spec, checkpoint=path.name))
        else:
            state, _ = read_state_dict(path, key=spec.checkpoint_key, spec=spec)
            slim = {}
            for key, tensor in state.items():
                tensor = tensor.detach().cpu()
                if half and tensor.is_floating_point():
                    tensor = tensor.half()
                slim[key] = tensor.contiguous().clone()
            target = out / f"{spec.name}.safetensors"
            save_file(slim, str(target))
            specs.append(dataclasses.replace(spec, checkpoint=target.name, checkpoint_key=None))
        rows.append({"teacher": spec.name, "from": str(path), "to": target.name,
                     "bytes_before": before, "bytes_after": _size(target)})
    save_manifest(out, specs)
    if decision is not None:
        if decision.fitted_on and decision.fitted_on.get("teachers"):
            # the slim copies are other files: record theirs, so predict on Kaggle sees a match
            from vesukit.run_settings import checkpoint_stamps

            packed = load_manifest(out)
            stamps = checkpoint_stamps(packed, list(decision.fitted_on["teachers"]))
            decision = dataclasses.replace(decision, fitted_on={
                **decision.fitted_on, "teachers": stamps, "packed_from": str(manifest.root)})
        atomic_write_bytes(out / CALIBRATION_NAME,
                           json.dumps(decision.to_json(), indent=1).encode())
    config = KernelConfig.from_env()
    metadata = {
        "title": config.teachers_slug,
        "id": f"{config.owner}/{config.teachers_slug}",
        "subtitle": "Teachers, manifest and calibration for the vesukit notebook",
        "description": "teachers.json with slim safetensors weights and calibration.json "
                       "(threshold rule, post-processing chain, TTA, fusion), written by "
                       "`vesukit teachers pack`.",
        "licenses": [{"name": "other"}],
    }
    atomic_write_bytes(out / "dataset-metadata.json",
                       (json.dumps(metadata, indent=2) + "\n").encode())
    return {"teachers": rows, "calibration": decision.describe() if decision else None,
            "dataset_id": metadata["id"], "out": str(out)}


def check_fitted_on_these(decision, manifest, where) -> None:
    """Refuse to ship a calibration fitted on other teachers (other names or checkpoints):
    its score would not hold for the teachers it travels with."""
    from vesukit.errors import VesukitError
    from vesukit.run_settings import active_teachers, checkpoint_stamps, compare_fitted

    if not decision.fitted_on or not decision.fitted_on.get("teachers"):
        return
    active, _, _ = active_teachers(manifest, decision, str(where))
    now = {"teachers": checkpoint_stamps(manifest, [s.name for s in active])}
    problems = compare_fitted({"teachers": decision.fitted_on["teachers"]}, now)
    if problems:
        raise VesukitError(
            f"{where}: fitted on other teachers than {manifest.root} ({'; '.join(problems)}). "
            f"Re-run `vesukit calibrate --teachers {manifest.root}` and pack that file, or pack "
            "the teachers it was fitted on.")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
