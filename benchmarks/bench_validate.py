"""Validation cost per 320^3 volume: vesukit's validator against the scorer's own reading.

Peer (what the Kaggle scorer does): extract the zip to a folder, glob ``**/*.tif``, read each
file with Pillow page by page and stack the pages. vesukit's validator does that same Pillow
read plus a tifffile read, the header checks and the value statistics, in memory. Both run in
this process on the same zip; the best of ``--repeat`` runs is reported.

    PYTHONPATH=src python -m benchmarks.bench_validate [--volumes 4] [--size 320] [--repeat 3]
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
import zipfile
from pathlib import Path

from vesukit.data import read_volume_pillow, write_volume
from vesukit.submission import SubmissionWriter, expected_volumes, validate_zip
from vesukit.synth import synth_volume


def scorer_read(zip_path: Path, shapes: dict) -> None:
    """The peer: extract, collect **/*.tif, Pillow page stacking, shape check."""
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(folder)
        for path in glob.glob(os.path.join(folder, "**", "*.tif"), recursive=True):
            volume_id = os.path.basename(path).split(".")[0]
            volume = read_volume_pillow(path)
            assert volume.shape == shapes[volume_id]


def best_of(repeat: int, fn) -> tuple[float, float]:
    """Best wall-clock and best process CPU seconds over ``repeat`` runs.

    CPU time is reported too because this machine is shared: wall time swings with the
    other jobs' load, CPU time much less.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, size = args.volumes, args.size
    shape = (size, size, size)

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        start = time.perf_counter()
        root = work / "root"
        (root / "test_images").mkdir(parents=True)
        masks = {}
        for k in range(n):  # one synthetic volume per id; its surface label is the mask
            volume_id = str(1000 + k)
            image, label = synth_volume(shape, k)
            write_volume(root / "test_images" / f"{volume_id}.tif", image, compression="lzw")
            masks[volume_id] = (label == 1).astype("uint8")  # ~5 % foreground
        (root / "test.csv").write_text("id,scroll_id\n" + "".join(f"{i},1\n" for i in masks))
        _, shapes = expected_volumes(root)
        print(f"setup: {n} test volumes {size}^3 in {time.perf_counter() - start:.1f} s")

        zip_path = work / "submission.zip"

        def write():
            with SubmissionWriter(zip_path, shapes) as writer:
                for volume_id, mask in masks.items():
                    writer.add(volume_id, mask)

        t_write = best_of(args.repeat, write)
        size_mb = zip_path.stat().st_size / 2**20

        def ours(workers):
            report = validate_zip(zip_path, root, workers=workers)
            assert report.valid, report.to_json()["errors"]

        t_header = best_of(args.repeat, lambda: expected_volumes(root))
        t_peer = best_of(args.repeat, lambda: scorer_read(zip_path, shapes))
        t_one = best_of(args.repeat, lambda: ours(1))
        t_two = best_of(args.repeat, lambda: ours(2))
        t_four = best_of(args.repeat, lambda: ours(4))

    print(f"cpu cores visible: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; "
          f"zip {size_mb:.1f} MiB for {n} volumes")
    print(f"{'step':52s} {'wall s/vol':>10s} {'cpu s/vol':>10s} {'wall vs peer':>12s}")
    rows = [
        ("SubmissionWriter.add (zlib TIFF into deflated zip)", t_write, False),
        ("source shapes from test_images headers", t_header, False),
        ("peer: extract + Pillow page stacking (scorer)", t_peer, True),
        ("vesukit validate, 1 thread (Pillow + tifffile)", t_one, True),
        ("vesukit validate, 2 threads", t_two, True),
        ("vesukit validate, 4 threads", t_four, True),
    ]
    for label, (wall, cpu), compare in rows:
        ratio = f"{wall / t_peer[0]:11.2f}x" if compare else ""
        print(f"{label:52s} {wall / n:10.3f} {cpu / n:10.3f} {ratio:>12s}")


if __name__ == "__main__":
    main()
