"""Skill lab: real (small) teachers trained from labels, and every score claim measured.

On `vesukit synth` data: three teachers of different architectures are trained from labels
with `vesukit train`, calibrated with `vesukit calibrate`, distilled into one student with
`vesukit distill` (each run as a user runs it); then every row is scored with the exact
local metric on held-back volumes no step has seen (a second synthetic root): an untrained
teacher, each teacher, the ensemble, + flip TTA, + the calibrated threshold rule,
+ post-processing, and the student. Compute per volume: FLOPs counted by
torch.utils.flop_counter on one held-back volume, and wall time (mean over the volumes).

    PYTHONPATH=src python -m benchmarks.skill_lab [--out build/skill-lab] [--size cpu|cuda]

Writes OUT/table.md and OUT/skill_lab.json, and skill_lab.json into the teachers' folder
(OUT/teachers) and the student's (OUT/student): the audit page of any `vesukit predict --audit`
run with those teachers shows the table. The lab ends with one such run (the student, with the
calibration, on the held-back root's test volume): OUT/audit/index.html.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {
    # volumes, counts, student/teacher sizes and training lengths; cpu fits well under an hour
    "cpu": {"shape": 48, "train": 6, "held": 6, "epochs": 6, "steps": 12, "batch": 8,
            "teacher_size": "small", "student_size": "tiny", "threads": 2},
    "smoke": {"shape": 32, "train": 3, "held": 2, "epochs": 1, "steps": 2, "batch": 2,
              "teacher_size": "tiny", "student_size": "tiny", "threads": 1},
    "cuda": {"shape": 160, "train": 12, "held": 4, "epochs": 20, "steps": 100, "batch": 16,
             "teacher_size": "small", "student_size": "tiny", "threads": 8},
}
# name, architecture, extra `vesukit train` arguments (the 3D teacher is tiny on the CPU: the
# small one took 11 min per epoch on 2 shared cores)
TEACHERS = (
    ("unet2d", "smp.Unet", []),
    ("fpn2d", "smp.FPN", ["--model-kwargs", '{"decoder_segmentation_channels": 32, '
                          '"decoder_pyramid_channels": 32}']),
    ("unet3d", "resenc_unet3d", ["--patch", "24"]),
)
TEACHER_SIZE = {"unet3d": {"cpu": "tiny"}}


def vesukit(*args: str, log: Path) -> None:
    """Run one vesukit command as a user does; its output goes to ``log``."""
    with open(log, "a") as handle:
        handle.write(f"\n$ vesukit {' '.join(args)}\n")
        handle.flush()
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "vesukit", *args], stdout=handle,
                               stderr=subprocess.STDOUT)
        handle.write(f"(exit {code}, {time.perf_counter() - started:.0f}s)\n")
    if code not in (0, 3):
        raise SystemExit(f"vesukit {args[0]} failed (exit {code}); see {log}")


def predict_maps(model, spec, volume, tta: str, device):
    from vesukit.infer import predict_teacher

    with torch.inference_mode():
        return predict_teacher(volume, model, spec, device=device, tta=tta).float().cpu()


def flops_of(model, spec, volume, tta: str, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        predict_maps(model, spec, volume, tta, device)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/skill-lab"))
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = SIZES[args.size]
    torch.set_num_threads(cfg["threads"])
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    started = time.perf_counter()

    from vesukit.data import read_volume, volume_path
    from vesukit.decide import Calibration, binarize, load_calibration
    from vesukit.decide.steps import apply_postprocess
    from vesukit.infer import EnsembleAccumulator
    from vesukit.metric import PreparedLabel
    from vesukit.synth import make_competition_root
    from vesukit.teachers import build_model, load_manifest, load_teacher, save_manifest

    shape = (cfg["shape"],) * 3
    root = out / "root"
    held_root = out / "held"
    if not (root / "train.csv").is_file():
        make_competition_root(root, n_test=1, n_train=cfg["train"], shapes=(shape,), seed=args.seed)
    if not (held_root / "train.csv").is_file():
        make_competition_root(held_root, n_test=1, n_train=cfg["held"], shapes=(shape,),
                              seed=args.seed + 1000)
    common = ["--epochs", str(cfg["epochs"]), "--steps-per-epoch", str(cfg["steps"]),
              "--batch-size", str(cfg["batch"]), "--device", args.device, "--seed", str(args.seed)]

    # 1. three teachers from labels, each its own folder; then one ensemble folder
    specs = []
    for name, arch, extra in TEACHERS:
        folder = out / "teachers" / name
        if not (folder / "teachers.json").is_file():
            vesukit("train", "--data", str(root), "--out", str(folder), "--arch", arch,
                    "--size", TEACHER_SIZE.get(name, {}).get(args.size, cfg["teacher_size"]),
                    "--name", name, *extra, *common, log=log)
        spec = load_manifest(folder).teachers[0]
        specs.append(spec.__class__(**{**spec.to_json(), "checkpoint": f"{name}/{spec.checkpoint}"}))
    ensemble_dir = out / "teachers"
    save_manifest(ensemble_dir, specs)

    # 2. calibration (threshold rule + post-processing) and the student, from the train root
    calibration_path = out / "calibration.json"
    if not calibration_path.is_file():
        vesukit("calibrate", "--data", str(root), "--teachers", str(ensemble_dir), "--out",
                str(calibration_path), "--device", args.device, "--tta", "flip", "--top-k", "1",
                "--rules", "fixed,foreground_fraction,uncertainty", "--fusion", log=log)
    student_dir = out / "student"
    if not (student_dir / "teachers.json").is_file():
        vesukit("distill", "--data", str(root), "--teachers", str(ensemble_dir), "--out",
                str(student_dir), "--cache", str(out / "calibration-cache"), "--tta", "flip",
                "--size", cfg["student_size"], *common, log=log)
    # the student as predict runs it: its own calibration, fitted on its own (flip TTA) maps;
    # one network has no disagreement, so calibrate never picks a rule or step that reads one
    student_calibration = out / "calibration-student.json"
    if not student_calibration.is_file():
        vesukit("calibrate", "--data", str(root), "--teachers", str(student_dir), "--out",
                str(student_calibration), "--device", args.device, "--tta", "flip", "--top-k", "1",
                "--rules", "fixed,foreground_fraction", "--cache", str(out / "student-cache"),
                log=log)
    calibration = load_calibration(calibration_path)
    own_calibration = load_calibration(student_calibration)

    # 3. every row on the held-back root
    manifest = load_manifest(ensemble_dir)
    models = {s.name: load_teacher(s, ensemble_dir, args.device) for s in manifest.teachers}
    student_spec = load_manifest(student_dir).teachers[0]
    student = load_teacher(student_spec, student_dir, args.device)
    torch.manual_seed(args.seed)
    untrained_spec = manifest.teachers[0]
    untrained = build_model(untrained_spec).eval()
    held_ids = sorted(p.stem for p in (held_root / "train_labels").glob("*.tif"))
    volumes = {i: read_volume(volume_path(held_root, i, "train_images")) for i in held_ids}
    labels = {i: PreparedLabel(read_volume(volume_path(held_root, i, "train_labels")), name=i)
              for i in held_ids}
    first = volumes[held_ids[0]]
    rows: dict[str, dict] = {}

    def row(name: str, masks: dict, flops: float, seconds: float, note: str = "") -> None:
        scores = [labels[i].score(masks[i]).score for i in held_ids]
        rows[name] = {"score": float(np.mean(scores)), "scores": scores, "gflops": flops / 1e9,
                      "seconds": seconds, "note": note}
        print(f"{name:38s} {np.mean(scores):.4f}  {flops / 1e9:9.2f} GFLOP  {seconds:6.2f}s",
              flush=True)

    default = Calibration()
    # per-teacher maps, timed per volume
    per_teacher: dict[tuple[str, str], dict] = {}
    for tta in ("none", "flip"):
        for name, model in [("untrained", untrained), *models.items(), ("student", student)]:
            spec = {"untrained": untrained_spec, "student": student_spec}.get(name) or manifest[name]
            if name == "untrained" and tta == "flip":
                continue
            maps, elapsed = {}, []
            for i in held_ids:
                t0 = time.perf_counter()
                maps[i] = predict_maps(model, spec, volumes[i], tta, args.device)
                elapsed.append(time.perf_counter() - t0)
            per_teacher[(name, tta)] = {"maps": maps, "seconds": float(np.mean(elapsed)),
                                        "flops": flops_of(model, spec, first, tta, args.device)}

    def decide(maps: dict, calib: Calibration) -> dict:
        """Masks from per-volume maps (one teacher's probability, or EnsembleMaps)."""
        masks = {}
        for i, ens in maps.items():
            if not hasattr(ens, "mean") or not hasattr(ens, "variance"):
                ens = _single(ens)
            mask = binarize(ens.mean, calib.rule(ens))
            masks[i] = apply_postprocess(mask, calib.postprocess, ens) if calib.postprocess else mask
        return masks

    def ensemble(tta: str, fusion=None) -> tuple[dict, float, float]:
        """The held-back ensemble maps as predict makes them: the manifest's probability mean,
        or ``fusion``'s mode and weights (a teacher it weighs 0 is not run)."""
        weights = {s.name: s.weight for s in manifest.teachers}
        if fusion is not None:
            weights, _ = fusion.teacher_weights(weights)
        used = [s for s in manifest.teachers if weights[s.name] > 0]
        out_maps = {}
        for i in held_ids:
            acc = EnsembleAccumulator(volumes[i].shape, mode=fusion.mode if fusion else "probability")
            for spec in used:
                acc.add(per_teacher[(spec.name, tta)]["maps"][i], weights[spec.name], spec.name)
            out_maps[i] = acc.result().to_numpy()
        flops = sum(per_teacher[(s.name, tta)]["flops"] for s in used)
        seconds = sum(per_teacher[(s.name, tta)]["seconds"] for s in used)
        return out_maps, flops, seconds

    t = per_teacher[("untrained", "none")]
    row(f"untrained {untrained_spec.arch}", decide(t["maps"], default), t["flops"], t["seconds"])
    for spec in manifest.teachers:
        t = per_teacher[(spec.name, "none")]
        row(f"teacher {spec.name} ({spec.arch})", decide(t["maps"], default), t["flops"],
            t["seconds"])
    ens, flops, seconds = ensemble("none")
    row("ensemble (3 teachers)", decide(ens, default), flops, seconds)
    for spec in manifest.teachers:  # each member with the ensemble's TTA: the fair comparison
        t = per_teacher[(spec.name, "flip")]
        row(f"teacher {spec.name} + flip TTA", decide(t["maps"], default), t["flops"], t["seconds"])
    ens, flops, seconds = ensemble("flip")
    row("ensemble + flip TTA", decide(ens, default), flops, seconds)
    rule_only = Calibration(calibration.rule, ())
    row("ensemble + flip TTA + calibration", decide(ens, rule_only),
        flops, seconds, calibration.rule.describe())
    chain = " -> ".join(s["step"] for s in calibration.postprocess) or "none chosen"
    row("ensemble + flip TTA + calibration + post-processing",
        decide(ens, calibration), flops, seconds, chain)
    if calibration.fusion is not None:  # what predict does with this calibration file
        ens, flops, seconds = ensemble("flip", calibration.fusion)
        row("ensemble + flip TTA + fitted fusion", decide(ens, default), flops, seconds,
            calibration.fusion.describe())
        row("ensemble + flip TTA + fitted fusion + calibration + post-processing",
            decide(ens, calibration), flops, seconds, chain)
    t = per_teacher[("student", "none")]
    row(f"student ({student_spec.arch}, {cfg['student_size']})", decide(t["maps"], default),
        t["flops"], t["seconds"])
    # as predict runs the student with its calibration: its TTA (flip), its rule and chain
    t = per_teacher[("student", own_calibration.tta or "none")]
    row(f"student + {own_calibration.tta or 'no'} TTA + its own calibration + post-processing",
        decide(t["maps"], own_calibration), t["flops"], t["seconds"],
        "fitted on the student's own maps: " + own_calibration.describe())
    row(f"student + {own_calibration.tta or 'no'} TTA + the ensemble's calibration + post-processing",
        decide(t["maps"], Calibration(calibration.rule, calibration.postprocess)), t["flops"],
        t["seconds"], "for comparison: the rule and chain fitted on the ensemble's maps")

    best_member = max(rows[k]["score"] for k in rows if k.startswith("teacher ") and "TTA" not in k)
    best_flip_member = max(rows[k]["score"] for k in rows if k.startswith("teacher ") and "flip TTA" in k)
    full = rows.get("ensemble + flip TTA + fitted fusion + calibration + post-processing",
                    rows["ensemble + flip TTA + calibration + post-processing"])
    student_row = next(rows[k] for k in rows if "its own calibration" in k)
    goals = {
        "trained_above_untrained": best_member - rows[f"untrained {untrained_spec.arch}"]["score"],
        "ensemble_minus_best_member": rows["ensemble (3 teachers)"]["score"] - best_member,
        "flip_ensemble_minus_best_flip_member": rows["ensemble + flip TTA"]["score"] - best_flip_member,
        "fitted_fusion_minus_best_flip_member": (
            rows["ensemble + flip TTA + fitted fusion"]["score"] - best_flip_member
            if "ensemble + flip TTA + fitted fusion" in rows else None),
        "student_share_of_ensemble_score": student_row["score"] / full["score"] if full["score"] else None,
        "student_share_of_ensemble_flops": student_row["gflops"] / full["gflops"],
    }
    result = {"size": args.size, "config": cfg, "held_back": held_ids, "rows": rows, "goals": goals,
              "calibration": calibration.to_json(), "seconds": time.perf_counter() - started,
              "command": "make skill-lab" + ("" if args.size == "cpu" else f" DEVICE={args.size}")}
    from vesukit.report import SKILL_LAB
    from vesukit.run_settings import checkpoint_stamps

    # beside the results, and in the teachers' and the student's folders, stamped with their
    # checkpoints: the audit page of a predict run with those very weights shows the table
    (out / SKILL_LAB).write_text(json.dumps(result, indent=1))
    for folder in (ensemble_dir, student_dir):
        folder_manifest = load_manifest(folder)
        stamps = checkpoint_stamps(folder_manifest, [s.name for s in folder_manifest.teachers])
        (folder / SKILL_LAB).write_text(json.dumps({**result, "checkpoints": stamps}, indent=1))
    vesukit("predict", "--data", str(held_root), "--teachers", str(student_dir), "--out",
            str(out / "audit-run" / "submission.zip"), "--workdir", str(out / "audit-run"),
            "--calibration", str(student_calibration), "--device", args.device, "--audit",
            str(out / "audit"), log=log)
    table = render_table(result)
    (out / "table.md").write_text(table)
    print(table)
    return 0


def _single(prob):
    from vesukit.maps import EnsembleMaps

    zeros = np.zeros(prob.shape, np.float32)
    return EnsembleMaps(mean=np.asarray(prob), variance=zeros, disagreement=zeros)


def render_table(result: dict) -> str:
    lines = ["| row | score (held-back mean) | GFLOP / volume | s / volume | note |",
             "|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['score']:.4f} | {r['gflops']:.2f} | {r['seconds']:.2f} | "
                     f"{r['note']} |")
    g = result["goals"]
    lines += ["", f"- trained teacher above untrained: {g['trained_above_untrained']:+.4f}",
              f"- ensemble minus its best member: {g['ensemble_minus_best_member']:+.4f}; with flip TTA on "
              f"both: {g['flip_ensemble_minus_best_flip_member']:+.4f}"
              + ("" if g.get("fitted_fusion_minus_best_flip_member") is None else
                 f"; fitted fusion + flip TTA: {g['fitted_fusion_minus_best_flip_member']:+.4f}"),
              f"- student / full ensemble score: {g['student_share_of_ensemble_score']:.3f}; "
              f"FLOPs: {g['student_share_of_ensemble_flops']:.3f}",
              f"- whole lab: {result['seconds'] / 60:.1f} min"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
