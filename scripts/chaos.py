"""Seeded chaos runs of `vesukit predict`: `python scripts/chaos.py --plans 500 [--seed S]`.

Each plan injects several random faults (exception type x stage x volume, see
vesukit.runtime.faults) into a predict run on a tiny synthetic root, then a --resume run with
more faults, and checks the promises: a valid zip holding every test id, exit code 0 or 3,
and a run.json naming each degraded volume and why. Exits 1 if any plan broke one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from vesukit.runtime.chaos import run_plans


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vesukit-chaos-") as temp:
        folder = args.workdir or Path(temp)
        count, problems = run_plans(args.plans, args.seed, folder,
                                    log=lambda line: print(line, flush=True))
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    print(f"chaos: {count} plans (seed {args.seed}) in {time.perf_counter() - start:.0f}s, "
          f"{len(problems)} broken promise(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
