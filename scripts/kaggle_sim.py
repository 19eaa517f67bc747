"""Run the Kaggle notebook here, the way Kaggle runs it: `make kaggle-sim`.

1. An "image" environment: a fresh virtual environment (no pip of its own, no site packages)
   that sees only what the Kaggle image holds: torch, torchvision, timm, numpy, tifffile,
   Pillow, scipy, safetensors, huggingface-hub, pip and their own dependencies. They are not
   reinstalled: a .pth file points at a folder of symlinks to those packages in the
   interpreter running this script (so creating the image takes seconds, not a torch
   download). numpy is replaced by 2.0.2, the Kaggle pin, from a wheel downloaded once into the
   cache folder. Not there, as on Kaggle: segmentation-models-pytorch, imagecodecs, zarr,
   numcodecs, cc3d, numba, llvmlite, vesukit.
2. A fake /kaggle: input/competitions/<slug>/ (synthetic competition), input/vesukit-wheels/
   (the wheels dataset from `make wheels`), input/vesukit-teachers/ (tiny teachers), working/.
3. The notebook's code cells (from the generated .ipynb, not kernel.py) run with the network
   cut (`unshare -n`) in a private mount namespace where the fake tree is bind-mounted on
   /kaggle and /kaggle/input is read-only. Needs root and util-linux; when /kaggle does not
   exist, an empty /kaggle is made as the mount point and removed by the last of the
   simulations running at once. The network cut is checked inside the namespace from its
   interface list (only loopback), without sending anything.
4. Checks: the bootstrap installed from the wheels dataset, /kaggle/working/submission.zip
   exists and `vesukit validate` accepts it. Then the same again without the imagecodecs
   wheel: it must still succeed, through Pillow, with the warning shown.

    PYTHONPATH=src python scripts/kaggle_sim.py [--install-only] [--keep] [--work DIR] [--preflight]

``--install-only`` stops after the bootstrap cell and checks every import instead (useful
before `vesukit predict` exists, and quick).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import venv
from contextlib import contextmanager
from pathlib import Path

from vesukit import bootstrap
from vesukit.data import COMPETITION_SLUG
from vesukit.kaggle import missing_commands

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "kernel" / "vesukit-submission.ipynb"
KAGGLE_NUMPY = "2.0.2"
# What the Kaggle image has (and what they need is followed).
IMAGE_PACKAGES = ("torch", "torchvision", "timm", "numpy", "tifffile", "pillow", "scipy",
                  "safetensors", "huggingface-hub", "pyyaml", "tqdm", "packaging",
                  "typing-extensions", "pip")
# What it lacks: these must come from the wheels dataset.
NOT_IN_IMAGE = {"segmentation-models-pytorch", "imagecodecs", "zarr", "numcodecs", "donfig",
                "google-crc32c", "connected-components-3d", "numba", "llvmlite", "vesukit",
                "monai"}
IMPORTS_AFTER_BOOTSTRAP = ("vesukit", "segmentation_models_pytorch", "cc3d", "numba", "zarr")


class SimError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"kaggle-sim: {message}", flush=True)


# --------------------------------------------------------------------------- the image


def image_closure() -> list[importlib.metadata.Distribution]:
    """The image packages installed here, with their dependencies, minus NOT_IN_IMAGE."""
    target = bootstrap.Target.current()
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(IMAGE_PACKAGES)
    while todo:
        name = bootstrap.normalise(todo.pop())
        if name in seen or name in NOT_IN_IMAGE:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if name in IMAGE_PACKAGES:
                raise SimError(f"{name} is not installed in {sys.prefix}; the simulated image "
                               "is built from this interpreter's packages (`make venv`)") from None
            continue
        seen[name] = dist
        for requirement in dist.requires or []:
            text, _, marker = requirement.partition(";")
            if bootstrap.marker_applies(marker, target) is False or "extra" in marker:
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
            if match:
                todo.append(match.group(1))
    return list(seen.values())


def link_image_site(site: Path, dists, skip: set[str]) -> int:
    """Symlink each distribution's top-level files (packages, modules, .dist-info) into site."""
    site.mkdir(parents=True)
    count = 0
    for dist in dists:
        if bootstrap.normalise(dist.metadata["Name"]) in skip:
            continue
        for entry in sorted({f.parts[0] for f in dist.files or [] if f.parts}):
            if entry in ("..", "__pycache__") or entry.endswith(".pth"):
                continue
            source = Path(dist.locate_file(entry))
            if source.exists() and not (site / entry).exists():
                (site / entry).symlink_to(source)
                count += 1
    return count


def numpy_wheel(cache: Path) -> Path | None:
    """numpy 2.0.2 for this interpreter (downloaded once; None when this numpy already is)."""
    if importlib.metadata.version("numpy") == KAGGLE_NUMPY:
        return None
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(cache.glob(f"numpy-{KAGGLE_NUMPY}-{tag}-{tag}-*.whl"))
    if not found:
        log(f"downloading numpy {KAGGLE_NUMPY} (once) into {cache}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--disable-pip-version-check",
                        f"numpy=={KAGGLE_NUMPY}", "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"numpy-{KAGGLE_NUMPY}-{tag}-{tag}-*.whl"))
    if not found:
        raise SimError(f"no numpy {KAGGLE_NUMPY} wheel for {tag} in {cache}")
    return found[0]


def make_image(root: Path, cache: Path) -> Path:
    """The Kaggle-like environment; returns its python."""
    env = root / "image-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    python = env / "bin" / "python"
    with locked(cache):  # concurrent simulations share the download cache
        numpy = numpy_wheel(cache)
    dists = image_closure()
    count = link_image_site(root / "image-site", dists, {"numpy"} if numpy else set())
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "kaggle-image.pth").write_text(str(root / "image-site") + "\n")
    if numpy:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                        "--disable-pip-version-check", str(numpy)], check=True,
                       env=clean_env(root))
    versions = subprocess.run(
        [str(python), "-c", "import numpy, torch, timm, scipy, tifffile, PIL; "
         "print(numpy.__version__, torch.__version__, timm.__version__)"],
        capture_output=True, text=True, env=clean_env(root))
    if versions.returncode != 0:
        raise SimError(f"the simulated image cannot import its own packages:\n{versions.stderr}")
    absent = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print([m for m in "
         f"{list(IMPORTS_AFTER_BOOTSTRAP) + ['imagecodecs']} if u.find_spec(m)])"],
        capture_output=True, text=True, env=clean_env(root)).stdout.strip()
    if absent != "[]":
        raise SimError(f"the simulated image already has {absent}; it must not")
    log(f"image: {env} ({len(dists)} distributions linked as {count} entries; "
        f"numpy, torch, timm = {versions.stdout.strip()})")
    return python


def clean_env(root: Path) -> dict:
    """A Kaggle-like process environment: no pip configuration (this machine's points at local
    mirrors), no user site, no PYTHONPATH, no vesukit settings."""
    home = root / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "PIP_CONFIG_FILE": os.devnull, "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- /kaggle


def make_inputs(root: Path, wheels: Path, teachers: bool, drop: tuple[str, ...]) -> Path:
    kaggle = root / "kaggle"
    comp = kaggle / "input" / "competitions" / COMPETITION_SLUG
    comp.parent.mkdir(parents=True)
    vesukit_cli([sys.executable, "-m", "vesukit", "synth", str(comp), "--test", "2",
                 "--train", "1", "--shape", "32", "48", "40", "--shape", "40", "40", "40",
                 "--seed", "11"])
    dataset = kaggle / "input" / "vesukit-wheels"
    dataset.mkdir()
    for path in sorted(wheels.iterdir()):
        if not path.is_file() or any(path.name.startswith(name + "-") for name in drop):
            continue
        try:
            os.link(path, dataset / path.name)
        except OSError:
            shutil.copy2(path, dataset / path.name)
    if teachers:
        # the teachers dataset as `vesukit teachers pack` makes it, carrying a decision with a
        # post-processing chain and flip TTA: the notebook must apply both
        source = root / "teachers-source"
        vesukit_cli([sys.executable, "-m", "vesukit", "teachers", "init", str(source),
                     "--preset", "seed9", "--size", "tiny"])
        (source / "calibration.json").write_text(json.dumps(SIM_DECISION))
        vesukit_cli([sys.executable, "-m", "vesukit", "teachers", "pack", str(source),
                     "--out", str(kaggle / "input" / "vesukit-teachers")])
    (kaggle / "working").mkdir()
    return kaggle


SIM_DECISION = {"threshold": {"rule": "fixed", "threshold": 0.45}, "tta": "flip",
                "postprocess": [{"step": "zero_border", "width": 1},
                                {"step": "remove_small", "min_voxels": 20},
                                {"step": "sheet_close", "radius": 2, "thin": 1.5},
                                {"step": "fill_holes"}]}


def vesukit_cli(command: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SimError(f"{' '.join(command[2:5])} failed:\n{result.stderr.strip()}")


def notebook_code(root: Path, install_only: bool, modules: tuple[str, ...]) -> Path:
    """The generated notebook's code cells, as one script (what Kaggle executes)."""
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    code = ["".join(c["source"]) for c in cells]
    if install_only:
        code = code[:1] + [
            "import importlib\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print('kaggle-sim: imports after bootstrap: ok', flush=True)\n"]
    script = root / "notebook_code.py"
    script.write_text("\n\n".join(code) + "\n")
    return script


# Run inside the namespace before the notebook: the network is cut when the only interface in
# this network namespace is the loopback. /proc/self/net/dev lists the interfaces of the
# reader's own namespace (unlike /sys/class/net, which shows the namespace sysfs was mounted in).
NETWORK_CUT_CHECK = """
import sys
with open('/proc/self/net/dev') as f:
    names = [line.split(':')[0].strip() for line in f.readlines()[2:]]
others = [n for n in names if n != 'lo']
if others:
    sys.exit(f'the network is not cut (interfaces besides lo: {others}): not a fair simulation')
"""


def run_offline(root: Path, kaggle: Path, python: Path, script: Path) -> subprocess.CompletedProcess:
    """Run the script with no network, the fake tree on /kaggle, /kaggle/input read-only."""
    if shutil.which("unshare") is None:
        raise SimError("`unshare` (util-linux) is needed to cut the network")
    inner = (
        "set -e\n"
        f"mount --bind {kaggle} /kaggle\n"
        "mount --bind /kaggle/input /kaggle/input\n"
        "mount -o remount,bind,ro /kaggle/input\n"
        "cd /kaggle/working\n"
        # Prove the cut before running anything, without sending a packet or naming a host.
        f"{python} -c {shlex.quote(NETWORK_CUT_CHECK)}\n"
        f"exec {python} {script}\n"
    )
    return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private",
                           "sh", "-c", inner],
                          capture_output=True, text=True, env=clean_env(root))


# --------------------------------------------------------------------------- scenarios


def scenario(name: str, work: Path, cache: Path, wheels: Path, install_only: bool,
             drop: tuple[str, ...]) -> None:
    root = work / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    log(f"[{name}] building the image and /kaggle" + (f" (without {', '.join(drop)})"
                                                       if drop else ""))
    python = make_image(root, cache)
    kaggle = make_inputs(root, wheels, teachers=not install_only, drop=drop)
    modules = IMPORTS_AFTER_BOOTSTRAP + (() if "imagecodecs" in drop else ("imagecodecs",))
    script = notebook_code(root, install_only, modules)
    log(f"[{name}] running the notebook with the network cut")
    result = run_offline(root, kaggle, python, script)
    (root / "notebook.log").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    if result.returncode != 0:
        hint = ""
        if "no `predict` command yet" in result.stderr:
            hint = (" — the install phase worked; `vesukit predict` does not exist in this "
                    "checkout yet (try --install-only)")
        raise SimError(f"[{name}] the notebook failed (exit {result.returncode}){hint}; "
                       f"log: {root / 'notebook.log'}")
    if "package" not in result.stdout or "installed" not in result.stdout:
        raise SimError(f"[{name}] the bootstrap table is missing from the notebook's output")
    for dist in drop:
        if f"optional package {dist} unavailable" not in result.stderr:
            raise SimError(f"[{name}] no warning about the missing {dist}")
    if install_only:
        if "imports after bootstrap: ok" not in result.stdout:
            raise SimError(f"[{name}] the imports after the bootstrap did not all succeed")
        log(f"[{name}] ok: installed offline from the wheels dataset, every import works")
        return
    log_text = result.stdout + result.stderr
    if "TTA applied: flip (calibration)" not in log_text or "sheet_close(radius=2" not in log_text:
        raise SimError(f"[{name}] the notebook's log does not show the packed decision (chain "
                       f"and flip TTA) being applied; log: {root / 'notebook.log'}")
    log(f"[{name}] the notebook applied the packed decision: chain and flip TTA")
    zip_path = kaggle / "working" / "submission.zip"
    if not zip_path.is_file():
        raise SimError(f"[{name}] /kaggle/working/submission.zip was not written")
    comp = kaggle / "input" / "competitions" / COMPETITION_SLUG
    vesukit_cli([sys.executable, "-m", "vesukit", "validate", str(zip_path), "--data", str(comp)])
    log(f"[{name}] ok: {zip_path} written offline and valid")


# --------------------------------------------------------------------------- CPython 3.12

# The Kaggle image's Python is 3.12; torch for it is not here, so this scenario installs the
# cp312 wheels into a 3.12 environment holding numpy 2.0.2 and the small packages the image
# has, and exercises each compiled package for real (all offline).
CP312_IMAGE = (f"numpy=={KAGGLE_NUMPY}", "pyyaml", "packaging", "typing-extensions",
               "tifffile", "pillow", "scipy")
CP312_CHECK = """
import numpy as np, imagecodecs, cc3d, zarr, numba, safetensors.numpy, vesukit
assert np.__version__ == %r, np.__version__
volume = (np.arange(4 * 16 * 16) %% 251).astype(np.uint8).reshape(4, 16, 16)
assert (imagecodecs.lzw_decode(imagecodecs.lzw_encode(volume.tobytes())) == volume.tobytes())
blobs = np.zeros(volume.shape, dtype=bool)
blobs[0, :2, :2] = blobs[3, 10:, 10:] = True
assert cc3d.connected_components(blobs).max() == 2
@numba.njit
def total(a):
    return a.sum()
assert total(volume) == volume.sum()
array = zarr.create_array(store=zarr.storage.MemoryStore(), shape=volume.shape,
                          chunks=(2, 8, 8), dtype="u1")
array[:] = volume
assert (array[:] == volume).all()
assert (safetensors.numpy.load(safetensors.numpy.save({"v": volume}))["v"] == volume).all()
print("kaggle-sim: cp312 wheels work:", np.__version__, imagecodecs.__version__,
      numba.__version__, zarr.__version__)
""" % KAGGLE_NUMPY


def find_python312() -> Path | None:
    pyenv = sorted(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
                   .glob("versions/3.12*/bin/python3.12"))
    for candidate in [shutil.which("python3.12"), *reversed(pyenv)]:
        if candidate and subprocess.run(
                [candidate, "-c", "import sys, venv; assert sys.version_info[:2] == (3, 12)"],
                capture_output=True).returncode == 0:
            return Path(candidate)
    return None


def scenario_cp312(work: Path, cache: Path, wheels: Path, python312: Path) -> None:
    root = work / "cp312"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    log(f"[cp312] {python312}: environment with {', '.join(CP312_IMAGE)}")
    image_wheels = cache / "cp312"
    cached = {bootstrap.normalise(p.name.split("-")[0]) for p in image_wheels.glob("*.whl")}
    pins = [p for p in CP312_IMAGE
            if bootstrap.normalise(re.split(r"[=<>]", p)[0]) not in cached]
    if pins:  # downloaded once; later runs need no network before the cut
        with locked(cache):
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--only-binary=:all:", "--disable-pip-version-check", "--python-version",
                            "3.12", "--platform", "manylinux2014_x86_64", "--platform",
                            "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64", "-d",
                            str(image_wheels), *pins], check=True, capture_output=True)
    env = root / "venv"
    subprocess.run([str(python312), "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--disable-pip-version-check", *map(str, sorted(image_wheels.glob("*.whl")))],
                   check=True, env=clean_env(root))
    check = root / "check.py"
    check.write_text(CP312_CHECK)
    requirements = ["--require", "vesukit", "--require", "safetensors>=0.4",
                    "--optional", "imagecodecs", "--optional", "connected-components-3d:cc3d",
                    "--optional", "zarr>=3", "--optional", "numba>=0.60"]
    inner = (f"set -e\ncd {root}\n{python} {wheels / 'vesukit_bootstrap.py'} --wheels {wheels} "
             + " ".join(f"'{r}'" for r in requirements) + f"\n{python} {check}\n")
    environ = dict(clean_env(root), VESUKIT_INPUT_BASE=str(root / "no-input"))
    result = subprocess.run(["unshare", "--net", "sh", "-c", inner], capture_output=True,
                            text=True, env=environ)
    (root / "bootstrap.log").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    print(result.stdout, end="")
    if result.returncode != 0 or "WARNING" in result.stderr:
        print(result.stderr, end="", file=sys.stderr)
        raise SimError(f"[cp312] the cp312 wheels did not all install and work; "
                       f"log: {root / 'bootstrap.log'}")
    log("[cp312] ok: every cp312 wheel installed offline and works with numpy "
        f"{KAGGLE_NUMPY}")


# --------------------------------------------------------------------------- the host side

KAGGLE = Path("/kaggle")
# Serialises the creation and removal of the shared /kaggle mount point; each running
# simulation holds a shared lock on USERS_LOCK, so the last one out removes what a simulation made.
GUARD_LOCK = Path(tempfile.gettempdir()) / "vesukit-kaggle-sim.guard"
USERS_LOCK = Path(tempfile.gettempdir()) / "vesukit-kaggle-sim.users"
MADE_MARK = Path(tempfile.gettempdir()) / "vesukit-kaggle-sim.made-mountpoint"


@contextmanager
def locked(path: Path, exclusive: bool = True):
    """flock on a file or a folder (folders are locked through a read-only descriptor)."""
    fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def kaggle_mountpoint():
    """An empty /kaggle to bind the fake tree on inside each run's private namespace.

    The mount itself is private to each run, but the directory is shared by every concurrent
    simulation on this machine: it is made when missing, and removed by the last simulation to
    finish, and only if a simulation made it (one run's clean-up never pulls it from under
    another's feet)."""
    users = None
    with locked(GUARD_LOCK):
        if not KAGGLE.exists():
            KAGGLE.mkdir()
            MADE_MARK.touch()
        elif any(KAGGLE.iterdir()):
            raise SimError("/kaggle exists and is not empty (a real Kaggle machine?); "
                           "the simulation will not run over it")
        users = os.open(USERS_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
        fcntl.flock(users, fcntl.LOCK_SH)
    try:
        yield KAGGLE
    finally:
        with locked(GUARD_LOCK):
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            os.close(users)
            if last and MADE_MARK.exists():
                try:
                    KAGGLE.rmdir()
                except OSError:
                    pass
                MADE_MARK.unlink(missing_ok=True)


def snapshot_wheels(wheels: Path, local: Path, work: Path) -> Path:
    """The wheels dataset as this simulation installs from it: the upload folder plus the
    local cp311-only wheels (this simulation's interpreter is 3.11; Kaggle's is 3.12), with one
    SHA256SUMS listing both. Hard links taken under build_wheels.sh's lock, so a concurrent
    `make wheels` cannot change the set a running simulation installs from."""
    snapshot = work / "wheels-snapshot"
    snapshot.mkdir(parents=True)
    sums = []
    with locked(wheels, exclusive=False):
        for folder in (wheels, local):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name == "SHA256SUMS":
                    sums.append(path.read_text())
                elif path.is_file() and not path.name.startswith(".") \
                        and not (snapshot / path.name).exists():
                    try:
                        os.link(path, snapshot / path.name)
                    except OSError:
                        shutil.copy2(path, snapshot / path.name)
    if sums:
        (snapshot / "SHA256SUMS").write_text("".join(sums))
    return snapshot


def preflight() -> list[str]:
    """Why the simulation cannot run on this machine (empty when it can)."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("it needs root (a private mount namespace and bind mounts on /kaggle)")
    if shutil.which("unshare") is None:
        reasons.append("it needs util-linux `unshare` to cut the network")
    if KAGGLE.exists() and KAGGLE.is_dir() and any(KAGGLE.iterdir()):
        reasons.append("/kaggle exists and is not empty (a real Kaggle machine?)")
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, default=REPO / "wheels")
    parser.add_argument("--local-wheels", type=Path, default=REPO / "build" / "wheels-cp311",
                        help="the cp311-only wheels `make wheels` keeps out of the upload")
    parser.add_argument("--work", type=Path, default=None,
                        help="where to build (default: a temporary folder, removed after)")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "kaggle-sim-cache")
    parser.add_argument("--install-only", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--python312", type=Path, default=find_python312(),
                        help="a CPython 3.12 for the cp312-wheel scenario (default: found on "
                             "PATH or in pyenv; skipped when none)")
    parser.add_argument("--preflight", action="store_true",
                        help="only say whether this machine can run the simulation: exit 0, or "
                             "exit 3 with the reasons on one line")
    args = parser.parse_args(argv)
    reasons = preflight()
    if args.preflight:
        if reasons:
            print("; ".join(reasons))
            return 3
        return 0
    if reasons:
        print(f"kaggle-sim: cannot run here: {'; '.join(reasons)}. Run it as root: "
              "`sudo make kaggle-sim`", file=sys.stderr)
        return 1
    if not any(args.wheels.glob("vesukit-*.whl")) or \
            not (args.wheels / "vesukit_bootstrap.py").is_file():
        print(f"kaggle-sim: {args.wheels} holds no vesukit wheel or vesukit_bootstrap.py; "
              "run `make wheels` first", file=sys.stderr)
        return 1
    missing = [] if args.install_only else missing_commands("teachers", "predict", "validate")
    if missing:
        print(f"kaggle-sim: this checkout's vesukit has no `{'`, `'.join(missing)}` command yet, "
              "so the notebook cannot predict; `--install-only` checks the offline install alone",
              file=sys.stderr)
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="kaggle-sim-"))
    args.cache.mkdir(parents=True, exist_ok=True)
    try:
        wheels = snapshot_wheels(args.wheels, args.local_wheels, work)
        with kaggle_mountpoint():
            scenario("with-imagecodecs", work, args.cache, wheels, args.install_only, ())
            scenario("without-imagecodecs", work, args.cache, wheels, args.install_only,
                     ("imagecodecs",))
        if args.python312:
            scenario_cp312(work, args.cache, wheels, args.python312)
        else:
            log("[cp312] skipped: no CPython 3.12 here (pass --python312)")
    except (SimError, subprocess.CalledProcessError, PermissionError) as exc:
        print(f"kaggle-sim: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    log("passed: every scenario")
    return 0


if __name__ == "__main__":
    sys.exit(main())
