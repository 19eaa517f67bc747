"""`vesukit score PRED --labels DIR`: the leaderboard metric, locally and exactly."""

from __future__ import annotations

import argparse
import json

from vesukit.commands._arguments import check_workers

DESCRIPTION = """
Score a submission zip or a folder of <id>.tif predictions against 0/1/2 labels: TopoScore (Betti
matching per octant), surface Dice @2 and VOI, combined as on the leaderboard. Needs numba (pip
install vesukit[metric])."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score", help="score predictions against labels with the exact leaderboard metric", description=DESCRIPTION)
    parser.add_argument("pred", help="submission.zip or folder of <id>.tif predictions")
    parser.add_argument("--labels", required=True, metavar="DIR",
                        help="folder of <id>.tif labels (0 background, 1 surface, 2 ignored)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads for octant blocks (default: all cores)")
    parser.set_defaults(handler=run)


def _row(volume_id: str, r: dict) -> str:
    counts = " ".join(f"{'/'.join(str(x) for x in r['topo_counts'][d])}" for d in "012")
    return (f"{volume_id:<24} {r['score']:>8.5f} {r['toposcore']:>8.5f} {counts:<26} "
            f"{r['surface_dice']:>8.5f} {r['voi_score']:>8.5f}")


def run(args: argparse.Namespace) -> int:
    from vesukit.metric.io import iter_scores

    check_workers(args.workers)
    volumes = {}
    for volume_id, result in iter_scores(args.pred, args.labels, workers=args.workers):
        volumes[volume_id] = result.to_json()
        if not args.json:
            if len(volumes) == 1:  # after the inputs were checked
                print(f"{'id':<24} {'score':>8} {'topo':>8} {'m/p/g dim0 dim1 dim2':<26} "
                      f"{'sdice':>8} {'voi':>8}")
            print(_row(volume_id, volumes[volume_id]), flush=True)
    mean = sum(v["score"] for v in volumes.values()) / len(volumes)
    if args.json:
        print(json.dumps({"mean": mean, "volumes": volumes}, indent=2))
    else:
        print(f"{'mean':<24} {mean:>8.5f}   ({len(volumes)} volumes)")
    return 0
