"""Teacher loading: vesukit's load_teacher against the hand-written peer in the same run.

The peer is what a notebook usually does: build the network, read the file it knows the
format of (safetensors or torch.load(weights_only=True)), strip the prefix it knows about and
call load_state_dict(strict=True). vesukit finds the format, wrapper and prefixes itself and
checks every key, but skips the random initialisation a strict load would overwrite; this
measures both. Also times one forward per teacher.

    PYTHONPATH=src python -m benchmarks.bench_teacher_loading [--size tiny|full] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmarks.timing import best_of
from vesukit.teachers import build_model, load_manifest, load_teacher, write_preset
from vesukit.teachers.check import dummy_batch
from vesukit.teachers.checkpoint import read_state_dict


def peer_load(spec, root: Path) -> torch.nn.Module:
    """Hand-written loader for exactly the forms the seed9 preset uses."""
    path = root / spec.checkpoint
    model = build_model(spec)
    if path.is_dir():
        state = load_file(str(path / "model.safetensors"))
    elif path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = raw.get("state_dict") or raw.get("model_state_dict") or raw
        for prefix in ("module.", "model."):
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--folder", help="existing seed9 folder (default: write one)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp)
        if not args.folder:
            write_preset(folder, "seed9", args.size)
        manifest = load_manifest(folder)
        print(f"seed9 {args.size}, torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads, best of {args.repeat}")
        print(f"{'teacher':24s} {'vesukit load':>12s} {'peer load':>10s} {'ratio':>6s} "
              f"{'forward':>8s}")
        ratios = []
        load_teacher(manifest.teachers[0], folder)          # untimed: imports, first calls
        for spec in manifest.teachers:
            read_state_dict(folder / spec.checkpoint)       # untimed: warm the file cache
            ours = best_of(args.repeat, lambda spec=spec: load_teacher(spec, folder))
            peer = best_of(args.repeat, lambda spec=spec: peer_load(spec, folder))
            model, x = load_teacher(spec, folder), dummy_batch(spec)
            with torch.inference_mode():
                model(x)
                forward = best_of(args.repeat, lambda model=model, x=x: model(x))
            ratios.append(ours / peer)
            print(f"{spec.name:24s} {ours:11.3f}s {peer:9.3f}s {ours / peer:6.2f} "
                  f"{forward:7.3f}s")
        print(f"geometric-mean load ratio vesukit/peer: "
              f"{statistics.geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    main()
