"""Seeded chaos runs of `vesukit predict`: `python scripts/chaos.py --plans 500 [--seed S]`.

Every other plan injects several random faults (exception type x stage x volume, see
vesukit.runtime.faults) into a predict run on a tiny synthetic root, then a --resume run with
more faults, and checks the promises: a valid zip holding every test id, exit code 0 or 3,
and a run.json naming each degraded volume and why. The plans between are scenarios, in turn:
a worker SIGKILLed at a random moment, a forward pass hanging past the budget, a teacher
failing on one random volume, odd test folders; each must end in exit 3, a valid zip, every
volume not faulted identical to a clean run's, the fault in run.json and a wall time within
the budget (vesukit.runtime.chaos). Exits 1 if any plan broke a promise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from vesukit.runtime.chaos import SCENARIOS, run_plans


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--kind", choices=SCENARIOS, default=None,
                        help="run only scenarios of this kind")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="start no plan after this long; the summary says how many ran")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vesukit-chaos-") as temp:
        folder = args.workdir or Path(temp)
        count, problems = run_plans(args.plans, args.seed, folder,
                                    log=lambda line: print(line, flush=True),
                                    max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                                    kind=args.kind)
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    print(f"chaos: {count} plans (seed {args.seed}) in {time.perf_counter() - start:.0f}s, "
          f"{len(problems)} broken promise(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
