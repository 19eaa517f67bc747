"""Offline install: vesukit's bootstrap against one plain `pip install --no-index` call.

Both install the same vendored wheels into fresh Kaggle-like environments (scripts/kaggle_sim.py
builds them) in the same run. The bootstrap does more (a pip call per wheel, deps first, and
an import check of each package in a fresh interpreter); this measures what that costs.

    PYTHONPATH=src python -m benchmarks.bench_bootstrap [--wheels wheels] [--repeat 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import kaggle_sim  # noqa: E402

PEER_PACKAGES = ("vesukit", "segmentation-models-pytorch", "connected-components-3d",
                 "imagecodecs", "zarr", "numcodecs", "donfig", "google-crc32c", "numba",
                 "llvmlite")
MODULES = ("vesukit", "segmentation_models_pytorch", "cc3d", "imagecodecs", "zarr", "numba")


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, default=REPO / "wheels")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    wheels = args.wheels.resolve()
    cache = REPO / "build" / "kaggle-sim-cache"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-bootstrap-") as tmp:
        for run in range(args.repeat):
            root = Path(tmp) / f"run{run}"
            times = {}
            for name in ("bootstrap", "pip", "pip+imports"):
                (root / name).mkdir(parents=True)
                python = str(kaggle_sim.make_image(root / name, cache))
                env = dict(kaggle_sim.clean_env(root / name),
                           VESUKIT_INPUT_BASE=str(root / "none"))
                if name == "bootstrap":
                    command = [python, str(wheels / "vesukit_bootstrap.py"), "--wheels",
                               str(wheels)]
                    times[name] = timed(command, env)
                else:
                    command = [python, "-m", "pip", "install", "--no-index", "--no-deps",
                               "--disable-pip-version-check", "--find-links", str(wheels),
                               *PEER_PACKAGES]
                    times[name] = timed(command, env)
                    if name == "pip+imports":
                        times[name] += sum(timed([python, "-c", f"import {m}"], env)
                                           for m in MODULES)
            rows.append(times)
            print(f"run {run}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()),
                  flush=True)
    best = {key: min(row[key] for row in rows) for key in rows[0]}
    print(f"best of {args.repeat}: bootstrap {best['bootstrap']:.1f} s, plain pip "
          f"{best['pip']:.1f} s (ratio {best['bootstrap'] / best['pip']:.2f}), plain pip + the "
          f"same import checks {best['pip+imports']:.1f} s "
          f"(ratio {best['bootstrap'] / best['pip+imports']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
