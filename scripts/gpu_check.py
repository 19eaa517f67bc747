"""The measurements behind scripts/gpu_check.sh; each writes one JSON file into OUT.

    python scripts/gpu_check.py OUT [--dry]

- fp16.json: an nnU-Net ResEnc-M teacher (random weights, nnU-Net's layout) over one volume,
  fp16 autocast vs fp32, max |dp| and seconds of each.
- nnunet.json: benchmarks/bench_nnunet.py - vesukit vs MONAI vs nnUNetPredictor, same model,
  volume and mirroring: seconds and max |dp|.
- seed9.json: the full seed9 ensemble run teacher by teacher over one volume as predict runs
  it (the ensemble mean kept on the device): peak device memory and seconds per teacher.

GPU sizes: 320^3 volumes, full-size teachers, ResEnc-M patch 128^3. ``--dry`` runs the same
steps on the CPU at tiny sizes (a narrow ResEnc-M, two tiny seed9 teachers, small volumes,
one thread, no mirroring) so that the test suite keeps the script from rotting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def check_fp16(out: Path, device: torch.device, size, patch, tta: str = "flip", widths=None) -> dict:
    import tempfile

    from benchmarks.bench_nnunet import make_full_resenc, sheet
    from vesukit.infer.nnunet import predict_nnunet
    from vesukit.infer.settings import DEFAULT_OVERLAP
    from vesukit.teachers.nnunet import NnUNetSpec
    from vesukit.teachers.nnunet_model import load_nnunet_teacher

    volume = sheet(size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_full_resenc(Path(tmp), patch=patch, widths=widths)
        spec = NnUNetSpec(name="resenc_m", model=str(folder))
        model = load_nnunet_teacher(spec, folder.parent, device)
        result: dict = {"device": str(device), "size": list(size), "patch": list(patch),
                        "tta": tta}
        maps = {}
        for name, autocast in (("fp32", False), ("fp16", True)):
            _sync(device)
            start = time.perf_counter()
            maps[name] = predict_nnunet(volume, model, spec, device=device, tta=tta, overlap=DEFAULT_OVERLAP,
                                        batch_size=None, progress=None, autocast=autocast).cpu().numpy()
            _sync(device)
            result[f"{name}_s"] = time.perf_counter() - start
    result["max_dp_fp16_vs_fp32"] = float(np.abs(maps["fp16"] - maps["fp32"]).max())
    result["mean_dp_fp16_vs_fp32"] = float(np.abs(maps["fp16"] - maps["fp32"]).mean())
    (out / "fp16.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def check_seed9(out: Path, device: torch.device, size, teacher_size: str,
                limit: int | None = None) -> dict:
    from vesukit.infer import predict_teacher
    from vesukit.synth import synth_volume
    from vesukit.teachers import build_model
    from vesukit.teachers.presets import preset_specs

    volume = synth_volume(tuple(size), seed=0)[0]
    rows = []
    _peak_reset(device)
    total = torch.zeros(tuple(size), dtype=torch.float32, device=device)
    for spec in preset_specs("seed9", teacher_size)[:limit]:
        model = build_model(spec).to(device).eval()
        _peak_reset(device)
        _sync(device)
        start = time.perf_counter()
        total += predict_teacher(volume, model, spec, device=device, tta="none") * spec.weight
        _sync(device)
        rows.append({"teacher": spec.name, "seconds": time.perf_counter() - start,
                     "peak_gib": _peak_gib(device)})
        del model
    peaks = [r["peak_gib"] for r in rows if r["peak_gib"] is not None]
    result = {"device": str(device), "size": list(size), "teachers": f"{teacher_size} ({len(rows)})",
              "rows": rows,
              "peak_gib": max(peaks) if peaks else None,
              "seconds": sum(r["seconds"] for r in rows)}
    (out / "seed9.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dry", action="store_true", help="CPU, tiny sizes (the test suite)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from benchmarks.bench_nnunet import main as bench_nnunet

    if args.dry:
        # Every step once, as small as it goes: one thread, no mirroring, two seed9 teachers.
        torch.set_num_threads(1)
        device, size, patch, teachers, limit = torch.device("cpu"), (16, 32, 24), (64, 64, 64), "tiny", 2
        bench = ["--device", "cpu", "--model", "zscore", "--size", "12", "20", "26", "--monai",
                 "--no-mirroring", "--threads", "1"]
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (run with --dry for the CPU check)", file=sys.stderr)
            return 1
        device, size, patch, teachers, limit = torch.device("cuda"), (320, 320, 320), (128, 128, 128), "full", None
        bench = ["--device", "cuda", "--model", "full", "--size", "320", "320", "320", "--monai"]
    tta, widths = ("none", (2, 4, 8, 16, 16, 16)) if args.dry else ("flip", None)
    for name, step in (("fp16", lambda: check_fp16(args.out, device, size, patch, tta, widths)),
                       ("nnunet", lambda: bench_nnunet(bench + ["--json", str(args.out / "nnunet.json")])),
                       ("seed9", lambda: check_seed9(args.out, device, size, teachers, limit))):
        start = time.perf_counter()
        result = step()
        print(f"gpu_check {name}: {time.perf_counter() - start:.1f} s "
              f"{json.dumps({k: v for k, v in result.items() if k != 'rows'})}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
