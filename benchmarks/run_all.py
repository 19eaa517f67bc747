"""Every benchmark in turn, each with its peer in the same run: `make bench`.

Each benchmark runs as its own process (``python -m benchmarks.<name>``, default arguments) so
one's memory and threads do not colour the next one's figures; its output goes to the terminal
and to ``build/bench/<name>.txt``. Copy the figures you keep into docs/benchmarks.md together
with the command that made them.

    PYTHONPATH=src python -m benchmarks.run_all [--only NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def benchmark_names() -> list[str]:
    """Every ``benchmarks/bench_*.py`` module, in name order."""
    return sorted(path.stem for path in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=benchmark_names(),
                        help="run only these benchmarks")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    failed = []
    for name in args.only or benchmark_names():
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=REPO, env=env,
                                capture_output=True, text=True)
        report = result.stdout + (f"\n--- stderr ---\n{result.stderr}" if result.stderr else "")
        (args.out / f"{name}.txt").write_text(report)
        print(result.stdout, end="", flush=True)
        took = time.perf_counter() - started
        if result.returncode != 0:
            failed.append(name)
            print(f"{name}: FAILED (exit {result.returncode}, {took:.0f} s); "
                  f"see {args.out / (name + '.txt')}", file=sys.stderr)
        else:
            print(f"{name}: done in {took:.0f} s", flush=True)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
