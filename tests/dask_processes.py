"""A Dask cluster as on many machines: `dask scheduler` and `dask worker ADDRESS` started as
separate processes (here on one machine), stopped by their process group on exit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def scheduler_and_workers(folder: Path, workers: int = 1):
    """Yields the scheduler's address once it listens; ``workers`` single-threaded workers
    are started against it (wait for them with ``Client.wait_for_workers``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    address_file = Path(folder) / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    started = [subprocess.Popen([*dask, "scheduler", "--port", "0", "--dashboard-address", ":0",
                                 "--scheduler-file", str(address_file)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)]
    try:
        deadline = time.time() + 120
        while not address_file.is_file() and time.time() < deadline:
            assert started[0].poll() is None, "dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(address_file.read_text())["address"]
        started.append(subprocess.Popen([*dask, "worker", address, "--nworkers", str(workers),
                                         "--nthreads", "1", "--no-dashboard"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True))
        yield address
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
