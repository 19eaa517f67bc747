"""Offline install of vesukit and its dependencies from vendored wheels. Standard library only.

This runs first in the Kaggle notebook, before anything is installed (internet is off there),
so it imports nothing outside the standard library and nothing from vesukit: the notebook
loads this file by path (build_wheels.sh copies it into the wheels dataset as
``vesukit_bootstrap.py``).

For each requirement: skip it when an importable, compatible version is already present;
otherwise pick a wheel from the candidate folders (vesukit's wheels dataset first: the
folder this file was loaded from when it holds ``requirements.lock``; then
``--wheels``/``wheel_dirs``, ``$VESUKIT_WHEELS``, ``./wheels``, then every folder under
``/kaggle/input`` that holds ``.whl`` files). With a lock, only what it pins is installed:
the pinned version, with a sha256 the lock lists (vesukit's own wheel: the one in the
dataset's ``SHA256SUMS``); a wheel of another version or hash, in any folder, is skipped with
a warning naming both. Every choice honours the wheel's tags and its ``Requires-Python``.
Add the wheels it depends on that are missing, install them deps-first with
``pip install --no-index --no-deps`` (so pip never touches the image's CUDA torch or numpy),
and verify each import in a fresh interpreter. Optional packages that cannot be had give a
warning naming the fallback; a required one raises :class:`BootstrapError` listing every
folder searched and every wheel found there with its tags.

    python vesukit_bootstrap.py                      # the default requirement set
    python vesukit_bootstrap.py --wheels DIR --require 'name>=1.0:module' --optional 'x'
    python vesukit_bootstrap.py check-tags DIR --python 3.11 --python 3.12 --lock LOCK
"""

from __future__ import annotations

import argparse
import dataclasses
import email.parser
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

WHEELS_ENV = "VESUKIT_WHEELS"
INPUT_BASE_ENV = "VESUKIT_INPUT_BASE"
KAGGLE_INPUT = "/kaggle/input"
LOCK_NAME = "requirements.lock"   # the wheels dataset's pins (copied there by build_wheels.sh)
SUMS_NAME = "SHA256SUMS"          # sha256 of every file of the dataset, vesukit's wheel included

# What the old manylinux names promise, as glibc versions (PEP 600).
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


class BootstrapError(RuntimeError):
    """A required package could not be installed; the message says where we looked."""


# --------------------------------------------------------------------------- requirements


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A distribution to have, the module that proves it works, and what happens without it."""

    dist: str
    module: str
    spec: str = ""
    optional: bool = False
    fallback: str = ""

    @classmethod
    def parse(cls, text: str, optional: bool = False) -> Requirement:
        """``name[spec][:module]``, e.g. ``numba>=0.60`` or ``connected-components-3d:cc3d``."""
        text, _, module = text.partition(":")
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", text)
        if not match:
            raise ValueError(f"not a requirement: {text!r}")
        dist, spec = match.group(1), match.group(2).strip()
        return cls(dist, module.strip() or dist.replace("-", "_"), spec, optional)


DEFAULT_REQUIREMENTS = (
    Requirement("vesukit", "vesukit"),
    Requirement("safetensors", "safetensors", ">=0.4"),
    Requirement("segmentation-models-pytorch", "segmentation_models_pytorch", ">=0.4"),
    Requirement("connected-components-3d", "cc3d", optional=True,
                fallback="post-processing labels components with scipy.ndimage (slower)"),
    Requirement("imagecodecs", "imagecodecs", optional=True,
                fallback="Pillow decodes the LZW test volumes"),
    Requirement("zarr", "zarr", ">=3", optional=True,
                fallback="TIFF volumes only; zarr input is unavailable"),
    Requirement("numba", "numba", ">=0.60", optional=True,
                fallback="the local scorer and the fill_tunnels and first_place steps are unavailable; the per-sheet "
                         "post-processing steps run their slower numpy form"),
    Requirement("scikit-image", "skimage", optional=True,
                fallback="the ninth_place step and preset are unavailable (the Kaggle image has scikit-image)"),
    Requirement("threadpoolctl", "threadpoolctl", optional=True,
                fallback="the second_place step's sheet fits run with BLAS on every thread (slower)"),
    Requirement("dynamic-network-architectures", "dynamic_network_architectures", ">=0.4",
                optional=True, fallback="nnU-Net v2 teachers cannot be built"),
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- versions

_VERSION = re.compile(
    r"^v?(\d+(?:\.\d+)*)"
    r"(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?"
    r"(?:[-_.]?(post|rev|r)[-_.]?(\d*))?"
    r"(?:[-_.]?(dev)[-_.]?(\d*))?"
    r"(?:\+[a-z0-9.]+)?$",
    re.IGNORECASE,
)
_PRE_RANK = {"a": 1, "alpha": 1, "b": 2, "beta": 2, "c": 3, "rc": 3, "pre": 3, "preview": 3}


def version_key(version: str) -> tuple:
    """A sort key that orders versions as PEP 440 does (enough of it for pinned wheels)."""
    match = _VERSION.match(version.strip())
    if not match:
        raise ValueError(f"not a version: {version!r}")
    release = [int(part) for part in match.group(1).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre_tag, pre_n, post_tag, post_n, dev_tag, dev_n = match.groups()[1:]
    if pre_tag:
        pre = (_PRE_RANK[pre_tag.lower()], int(pre_n or 0))
    elif dev_tag and not post_tag:
        pre = (0, 0)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (4, 0)  # a final release
    post = int(post_n or 0) if post_tag else -1
    dev = (0, int(dev_n or 0)) if dev_tag else (1, 0)
    return (tuple(release), pre, post, dev)


def _release(version: str) -> list[int]:
    return [int(part) for part in re.match(r"v?(\d+(?:\.\d+)*)", version.strip()).group(1).split(".")]


def satisfies(version: str, spec: str) -> bool:
    """Whether ``version`` meets every clause of ``spec`` (``>=1.24,<2.3``, ``==0.44.*``, ...)."""
    for clause in spec.split(","):
        clause = clause.strip()
        if not clause:
            continue
        match = re.match(r"(~=|===|==|!=|<=|>=|<|>)\s*(\S+)$", clause)
        if not match:
            raise ValueError(f"not a version specifier: {clause!r}")
        op, target = match.groups()
        if op in ("==", "!=") and target.endswith(".*"):
            prefix = _release(target[:-2])
            have = _release(version) + [0] * len(prefix)
            equal = have[: len(prefix)] == prefix
            ok = equal if op == "==" else not equal
        elif op == "~=":
            prefix = _release(target)[:-1]
            ok = version_key(version) >= version_key(target) and \
                (_release(version) + [0] * len(prefix))[: len(prefix)] == prefix
        elif op == "===":
            ok = version == target
        else:
            have, want = version_key(version), version_key(target)
            ok = {"==": have == want, "!=": have != want, "<=": have <= want,
                  ">=": have >= want, "<": have < want, ">": have > want}[op]
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------- markers


def _marker_environment(target: Target) -> dict[str, str]:
    return {
        "python_version": f"{target.python[0]}.{target.python[1]}",
        "python_full_version": f"{target.python[0]}.{target.python[1]}.0",
        "sys_platform": "linux" if target.glibc else sys.platform,
        "platform_system": "Linux" if target.glibc else platform.system(),
        "platform_machine": target.arch,
        "os_name": "posix" if target.glibc else os.name,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def marker_applies(marker: str, target: Target) -> bool | None:
    """Evaluate a simple environment marker; ``None`` when it is beyond this small evaluator
    (parentheses, ``extra``), so callers treat the requirement as conditional."""
    marker = marker.strip()
    if not marker:
        return True
    if "(" in marker or "extra" in marker:
        return None
    env = _marker_environment(target)
    any_true = False
    for alternative in re.split(r"\s+or\s+", marker):
        all_true = True
        for atom in re.split(r"\s+and\s+", alternative):
            match = re.match(r"""\s*(\w+)\s*(==|!=|<=|>=|<|>|not in|in)\s*["']([^"']*)["']\s*$""", atom)
            if not match or match.group(1) not in env:
                return None
            var, op, value = match.groups()
            have = env[var]
            if var.startswith("python"):
                result = satisfies(have, f"{op}{value}") if op not in ("in", "not in") else None
            else:
                result = {"==": have == value, "!=": have != value, "in": have in value,
                          "not in": have not in value}.get(op)
            if result is None:
                return None
            all_true = all_true and result
        any_true = any_true or all_true
    return any_true


# --------------------------------------------------------------------------- tags


@dataclasses.dataclass(frozen=True)
class Target:
    """An interpreter wheels are judged against: CPython version, glibc (None: not Linux)."""

    python: tuple[int, int]
    glibc: tuple[int, int] | None = None
    arch: str = "x86_64"

    @classmethod
    def current(cls) -> Target:
        libc, version = platform.libc_ver()
        glibc = None
        if libc == "glibc" and version:
            glibc = tuple(int(part) for part in version.split(".")[:2])
        return cls(tuple(sys.version_info[:2]), glibc, platform.machine().lower())

    def describe(self) -> str:
        libc = f"manylinux glibc {self.glibc[0]}.{self.glibc[1]}" if self.glibc else "non-Linux"
        return f"CPython {self.python[0]}.{self.python[1]}, {libc}, {self.arch}"

    def supports(self, tag: tuple[str, str, str]) -> bool:
        interpreter, abi, plat = tag
        major, minor = self.python
        match = re.match(r"(cp|py)(\d)(\d*)$", interpreter)
        if not match:
            return False
        kind, tag_major, tag_minor = match.group(1), int(match.group(2)), match.group(3)
        if tag_major != major:
            return False
        if abi == "none":
            # pyXY and cpXY without an ABI install on that version and (py) later ones.
            ok_python = not tag_minor or (int(tag_minor) == minor if kind == "cp"
                                          else int(tag_minor) <= minor)
        elif abi == "abi3":
            ok_python = kind == "cp" and (not tag_minor or int(tag_minor) <= minor)
        else:
            ok_python = kind == "cp" and abi == f"cp{major}{minor}" and tag_minor == str(minor)
        return ok_python and self._supports_platform(plat)

    def _supports_platform(self, plat: str) -> bool:
        if plat == "any":
            return True
        if self.glibc is None:
            return False
        if plat == f"linux_{self.arch}":
            return True
        match = re.match(r"(manylinux\d+)_(\w+)$", plat)
        if match and match.group(1) in _LEGACY_MANYLINUX:
            return match.group(2) == self.arch and _LEGACY_MANYLINUX[match.group(1)] <= self.glibc
        match = re.match(r"manylinux_(\d+)_(\d+)_(\w+)$", plat)
        if match:
            return match.group(3) == self.arch and \
                (int(match.group(1)), int(match.group(2))) <= self.glibc
        return False


# --------------------------------------------------------------------------- wheels

_WHEEL_NAME = re.compile(
    r"^(?P<dist>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?"
    r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


@dataclasses.dataclass(frozen=True)
class Wheel:
    path: Path
    dist: str  # normalised
    version: str
    tags: tuple[tuple[str, str, str], ...]
    tag_text: str  # as in the file name, e.g. cp312-cp312-manylinux2014_x86_64

    @classmethod
    def from_path(cls, path: Path) -> Wheel | None:
        match = _WHEEL_NAME.match(path.name)
        if not match:
            return None
        tags = tuple(
            (py, abi, plat)
            for py in match.group("py").split(".")
            for abi in match.group("abi").split(".")
            for plat in match.group("plat").split(".")
        )
        text = "-".join(match.group(key) for key in ("py", "abi", "plat"))
        return cls(path, normalise(match.group("dist")), match.group("version"), tags, text)

    def fits(self, target: Target) -> bool:
        return any(target.supports(tag) for tag in self.tags)

    def _metadata(self):
        with zipfile.ZipFile(self.path) as archive:
            names = [n for n in archive.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not names:
                return None
            return email.parser.Parser().parsestr(archive.read(names[0]).decode("utf-8"))

    def requires_python(self) -> str:
        try:
            metadata = self._metadata()
        except (OSError, zipfile.BadZipFile, UnicodeDecodeError):
            return ""
        return (metadata.get("Requires-Python") or "").strip() if metadata else ""

    def python_ok(self, target: Target) -> bool:
        """Whether ``Requires-Python`` admits the target (pip would refuse the wheel otherwise)."""
        spec = self.requires_python()
        micro = sys.version_info.micro if tuple(sys.version_info[:2]) == target.python else 0
        try:
            return not spec or satisfies(f"{target.python[0]}.{target.python[1]}.{micro}", spec)
        except ValueError:
            return True  # a specifier this small parser cannot read: let pip judge

    def sha256(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def requires(self, target: Target) -> list[tuple[str, str]]:
        """Unconditional dependencies (and those whose marker holds on ``target``)."""
        metadata = self._metadata()
        if metadata is None:
            return []
        found = []
        for line in metadata.get_all("Requires-Dist") or []:
            text, _, marker = line.partition(";")
            if marker_applies(marker, target) is not True:
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?([^)]*)\)?",
                             text)
            if match:
                found.append((normalise(match.group(1)), match.group(2).strip()))
        return found


def home_dir() -> Path | None:
    """vesukit's wheels dataset: the folder this file was loaded from, when it holds the lock
    (the notebook loads ``vesukit_bootstrap.py`` from there)."""
    here = Path(__file__).resolve().parent
    return here if (here / LOCK_NAME).is_file() else None


def candidate_dirs(
    explicit: list[str | os.PathLike] | None = None,
    input_base: str | os.PathLike | None = None,
) -> list[Path]:
    """Folders to search, in order: vesukit's wheels dataset (:func:`home_dir`), explicit,
    ``$VESUKIT_WHEELS``, ``./wheels``, then every folder under the input base
    (``/kaggle/input``) that holds ``.whl`` files."""
    home = home_dir()
    folders = ([home] if home else []) + [Path(p) for p in explicit or []]
    folders += [Path(p) for p in os.environ.get(WHEELS_ENV, "").split(os.pathsep) if p]
    folders.append(Path.cwd() / "wheels")
    base = Path(input_base or os.environ.get(INPUT_BASE_ENV, KAGGLE_INPUT))
    if base.is_dir():
        for parent, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames.sort()
            if any(name.endswith(".whl") for name in filenames):
                folders.append(Path(parent))
    unique: list[Path] = []
    for folder in folders:
        resolved = folder.resolve() if folder.exists() else folder
        if resolved not in unique:
            unique.append(resolved)
    return unique


def scan(folders: list[Path]) -> dict[Path, list[Wheel]]:
    """Every wheel in each folder (compatible or not: the error message lists them all)."""
    found: dict[Path, list[Wheel]] = {}
    for folder in folders:
        wheels = [Wheel.from_path(p) for p in sorted(folder.glob("*.whl"))] if folder.is_dir() else []
        found[folder] = [w for w in wheels if w is not None]
    return found


# --------------------------------------------------------------------------- plan and install


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the closing table: what was used, which version, from where."""

    dist: str
    action: str  # present | installed | missing | failed
    version: str = ""
    source: str = ""
    optional: bool = False
    note: str = ""


@dataclasses.dataclass
class Report:
    target: Target
    folders: dict[Path, list[Wheel]]
    rows: list[Row] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    install_order: list[str] = dataclasses.field(default_factory=list)
    lock: Path | None = None                       # the pins every install must match
    pins: dict = dataclasses.field(default_factory=dict)   # dist -> (version, {sha256})
    sums: dict = dataclasses.field(default_factory=dict)   # file name -> sha256 (SHA256SUMS)
    skipped: set = dataclasses.field(default_factory=set)  # wheels already warned about

    def use_lock(self, lock: Path) -> None:
        self.lock = lock
        self.pins = read_lock(lock)
        self.sums = read_sums(lock.parent / SUMS_NAME)

    @property
    def ok(self) -> bool:
        return not self.errors

    def table(self) -> str:
        width = max([len(r.dist) for r in self.rows] + [7])
        lines = [f"{'package':{width}}  {'status':10}  {'version':12}  from"]
        for row in self.rows:
            status = row.action + ("*" if row.optional and row.action != "present" else "")
            source = row.source + (f"  ({row.note})" if row.note else "")
            lines.append(f"{row.dist:{width}}  {status:10}  {row.version:12}  {source}")
        if any(row.optional and row.action != "present" for row in self.rows):
            lines.append("* optional: vesukit works without it (see the warnings)")
        return "\n".join(lines)

    def error_text(self) -> str:
        lines = ["vesukit bootstrap: cannot install " + "; ".join(self.errors) + ".",
                 f"This interpreter: {self.target.describe()} ({sys.executable}).",
                 "Folders searched, in order:"]
        for folder, wheels in self.folders.items():
            state = "not found" if not folder.is_dir() else f"{len(wheels)} wheel(s)"
            lines.append(f"  {folder}  [{state}]")
            for wheel in wheels:
                fit = "" if wheel.fits(self.target) else "  <- tags do not fit this interpreter"
                lines.append(f"      {wheel.path.name}  tags {wheel.tag_text}{fit}")
        lines.append(
            "What to do: attach the vesukit wheels dataset (built by `make wheels`, uploaded "
            "with `kaggle datasets create -p wheels`) as an input of the notebook, or point "
            f"${WHEELS_ENV} (or --wheels) at a folder holding wheels for this interpreter.")
        return "\n".join(lines)


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _present(req: Requirement) -> str | None:
    """The installed version when it meets the spec and its module can be found."""
    version = installed_version(req.dist)
    if version is None or not satisfies(version, req.spec):
        return None
    try:
        return version if importlib.util.find_spec(req.module) is not None else None
    except (ImportError, ValueError):
        return None


def _pick(dist: str, spec: str, report: Report) -> Wheel | None:
    """The wheel to install for ``dist``: fitting tags and ``Requires-Python``, meeting ``spec``.

    With a lock: the pinned version with a listed sha256 (vesukit's own wheel: its sha256 in
    ``SHA256SUMS``); the earliest folder wins (vesukit's wheels dataset comes first). Without
    one: the highest version; on a tie, the earliest folder.
    """
    name = normalise(dist)
    candidates = []
    for wheels in report.folders.values():
        for wheel in wheels:
            if wheel.dist != name or not wheel.fits(report.target):
                continue
            try:
                if not satisfies(wheel.version, spec):
                    continue
                version_key(wheel.version)
            except ValueError:
                continue
            if not wheel.python_ok(report.target):
                _skip(report, wheel, f"it requires Python {wheel.requires_python()}")
                continue
            candidates.append(wheel)
    if report.lock is not None:
        allowed = [w for w in candidates if _locked(w, report)]  # every refusal is warned
        return allowed[0] if allowed else None
    best: Wheel | None = None
    for wheel in candidates:
        if best is None or version_key(wheel.version) > version_key(best.version):
            best = wheel
    return best


def _locked(wheel: Wheel, report: Report) -> bool:
    """Whether the lock allows ``wheel``; warns (once per wheel) naming both when not."""
    lock = report.lock.name
    if wheel.dist in report.pins:
        version, hashes = report.pins[wheel.dist]
        if version_key(wheel.version) != version_key(version):
            _skip(report, wheel, f"{lock} pins {wheel.dist}=={version}")
            return False
        digest = wheel.sha256()
        if hashes and digest not in hashes:
            _skip(report, wheel, f"its sha256 {digest[:12]}... is not one {lock} lists for "
                                 f"{wheel.dist}=={version}")
            return False
        return True
    listed = report.sums.get(wheel.path.name)
    if listed is None:
        _skip(report, wheel, f"{wheel.dist} is not pinned in {lock} nor listed in "
                             f"{report.lock.parent / SUMS_NAME}")
        return False
    digest = wheel.sha256()
    if digest != listed:
        _skip(report, wheel, f"its sha256 {digest[:12]}... differs from the one in "
                             f"{report.lock.parent / SUMS_NAME} ({listed[:12]}...)")
        return False
    return True


def _skip(report: Report, wheel: Wheel, why: str) -> None:
    if wheel.path not in report.skipped:
        report.skipped.add(wheel.path)
        report.warnings.append(f"skipped {wheel.path} ({wheel.dist} {wheel.version}): {why}")


def plan(requirements: tuple[Requirement, ...], report: Report) -> list[tuple[Wheel, bool]]:
    """Choose wheels for what is missing, with their missing dependencies, deps first.

    Returns ``(wheel, optional)`` pairs in install order; fills rows for what is present or
    cannot be had.
    """
    chosen: dict[str, tuple[Wheel, bool]] = {}
    edges: dict[str, list[str]] = {}

    def add(wheel: Wheel, optional: bool, parents: tuple[str, ...]) -> None:
        if wheel.dist in chosen:
            if not optional:
                chosen[wheel.dist] = (wheel, False)
            return
        chosen[wheel.dist] = (wheel, optional)
        edges[wheel.dist] = []
        for dep, spec in wheel.requires(report.target):
            if dep in parents:
                continue
            version = installed_version(dep)
            if version is not None and satisfies(version, spec):
                continue
            dep_wheel = chosen.get(dep, (None,))[0] or _pick(dep, spec, report)
            if dep_wheel is None:
                have = f"{version} is installed" if version else "it is not installed"
                report.warnings.append(
                    f"{wheel.dist} {wheel.version} needs {dep}{spec or ''}, but {have} and no "
                    "wheel folder holds a fitting wheel; its import check will tell if it matters")
                continue
            edges[wheel.dist].append(dep_wheel.dist)
            add(dep_wheel, optional, parents + (wheel.dist,))

    for req in requirements:
        version = _present(req)
        if version is not None:
            report.rows.append(Row(req.dist, "present", version, "image", req.optional))
            continue
        wheel = _pick(req.dist, req.spec, report)
        if wheel is None:
            have = installed_version(req.dist)
            why = "no fitting wheel in any folder searched"
            if have is not None:
                why = f"{have} is installed but does not satisfy it; {why}"
            _missing(req, report, why)
            continue
        add(wheel, req.optional, ())

    order: list[str] = []

    def visit(dist: str, path: tuple[str, ...]) -> None:
        if dist in order or dist in path:
            return
        for dep in edges.get(dist, []):
            visit(dep, path + (dist,))
        order.append(dist)

    for dist in chosen:
        visit(dist, ())
    return [chosen[dist] for dist in order]


def _missing(req: Requirement, report: Report, why: str) -> None:
    wanted = f"{req.dist}{req.spec}"
    if req.optional:
        report.rows.append(Row(req.dist, "missing", "", "-", True, req.fallback))
        report.warnings.append(f"optional package {wanted} unavailable ({why}); "
                               f"fallback: {req.fallback or 'the features that need it are off'}")
    else:
        report.rows.append(Row(req.dist, "failed" if "import" in why else "missing", "", "-"))
        report.errors.append(f"required package {wanted} ({why})")


def _pip(python: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True)


def _imports(python: str, module: str) -> str | None:
    """Import ``module`` in a fresh interpreter; the error's last line when it fails."""
    result = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def ensure(
    requirements: tuple[Requirement, ...] = DEFAULT_REQUIREMENTS,
    wheel_dirs: list[str | os.PathLike] | None = None,
    input_base: str | os.PathLike | None = None,
    log=None,
    lock: str | os.PathLike | None = None,
) -> Report:
    """Make every requirement importable; returns the report (``report.ok`` false on errors).

    Installs into the running interpreter's environment. ``log`` receives progress lines.
    ``lock``: the pins (default: ``requirements.lock`` of the first folder searched holding
    one, i.e. vesukit's wheels dataset); without any, the highest fitting versions.
    """
    log = log or (lambda line: None)
    python = sys.executable
    folders = candidate_dirs(wheel_dirs, input_base)
    report = Report(Target.current(), scan(folders))
    lock = Path(lock) if lock else next((f / LOCK_NAME for f in folders
                                         if (f / LOCK_NAME).is_file()), None)
    if lock is not None:
        report.use_lock(lock)
        log(f"installing only what {lock} pins")
    steps = plan(requirements, report)
    top_level = {normalise(r.dist): r for r in requirements}
    find_links = [arg for folder in report.folders if folder.is_dir()
                  for arg in ("--find-links", str(folder))]
    for wheel, optional in steps:
        report.install_order.append(wheel.dist)
        log(f"installing {wheel.path.name}")
        result = _pip(python, ["install", "--no-index", "--no-deps", "--no-warn-script-location",
                               "--disable-pip-version-check", *find_links, str(wheel.path)])
        req = top_level.get(wheel.dist)
        if result.returncode != 0:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            if req is not None:
                _missing(req, report, f"pip failed on {wheel.path.name}: {tail}")
            else:
                report.warnings.append(f"dependency {wheel.path.name} failed to install: {tail}")
            continue
        importlib.invalidate_caches()
        if req is None:
            report.rows.append(Row(wheel.dist, "installed", wheel.version,
                                   str(wheel.path.parent), optional, "dependency"))
            continue
        problem = _imports(python, req.module)
        if problem is None:
            report.rows.append(Row(req.dist, "installed", wheel.version,
                                   str(wheel.path.parent), req.optional))
            continue
        if req.optional:
            # A broken optional package is worse than none: the fallback checks importability.
            _pip(python, ["uninstall", "--yes", "--disable-pip-version-check", req.dist])
        _missing(req, report, f"installed {wheel.path.name} but `import {req.module}` fails: "
                              f"{problem}")
    _add_user_site()
    return report


def _add_user_site() -> None:
    """pip falls back to the user site when site-packages is read-only; make it importable."""
    import site

    user_site = site.getusersitepackages()
    if os.path.isdir(user_site) and user_site not in sys.path:
        site.addsitedir(user_site)
    importlib.invalidate_caches()


def run(
    requirements: tuple[Requirement, ...] = DEFAULT_REQUIREMENTS,
    wheel_dirs: list[str | os.PathLike] | None = None,
    input_base: str | os.PathLike | None = None,
    lock: str | os.PathLike | None = None,
) -> Report:
    """For the notebook: :func:`ensure`, print the table and warnings, raise on errors."""
    report = ensure(requirements, wheel_dirs, input_base, log=lambda line: print(line, flush=True),
                    lock=lock)
    print(report.table())
    for warning in report.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if not report.ok:
        raise BootstrapError(report.error_text())
    return report


# --------------------------------------------------------------------------- build-time check


def read_lock(path: Path) -> dict[str, tuple[str, set[str]]]:
    """``{normalised dist: (version, {sha256, ...})}`` from a pip ``--require-hashes`` lock."""
    text = re.sub(r"\\\s*\n", " ", path.read_text())
    pins: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if not match:
            raise ValueError(f"{path}: not an exact pin: {line!r}")
        hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        pins[normalise(match.group(1))] = (match.group(2), hashes)
    return pins


def read_sums(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` from a ``sha256sum`` listing; {} when there is none."""
    sums = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            match = re.match(r"([0-9a-f]{64})\s+\*?(.+)$", line.strip())
            if match:
                sums[match.group(2)] = match.group(1)
    return sums


def check_folder(folder: Path, targets: list[Target], lock: Path | None = None,
                 extra: tuple[str, ...] = ("vesukit",)) -> list[str]:
    """Problems with a wheel folder: wheels fitting no target, pins lacking a wheel for a
    target, wheels not in the lock or with a hash the lock does not list."""
    import hashlib

    problems = []
    wheels = scan([folder])[folder]
    for wheel in wheels:
        if not any(wheel.fits(t) for t in targets):
            problems.append(f"{wheel.path.name}: tags {wheel.tag_text} fit none of "
                            + ", ".join(t.describe() for t in targets))
    if lock is None:
        return problems
    pins = read_lock(lock)
    for dist, (version, _hashes) in pins.items():
        for target in targets:
            if not any(w.dist == dist and w.version == version and w.fits(target) for w in wheels):
                problems.append(f"{dist}=={version}: no wheel for {target.describe()}")
    for wheel in wheels:
        if wheel.dist in extra:
            continue
        if wheel.dist not in pins or pins[wheel.dist][0] != wheel.version:
            problems.append(f"{wheel.path.name}: not pinned in {lock.name}")
            continue
        digest = hashlib.sha256(wheel.path.read_bytes()).hexdigest()
        if digest not in pins[wheel.dist][1]:
            problems.append(f"{wheel.path.name}: sha256 {digest} is not in {lock.name}")
    return problems


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["check-tags"]:
        return _main_check(argv[1:])
    parser = argparse.ArgumentParser(prog="vesukit_bootstrap", description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", action="append", default=[], metavar="DIR",
                        help="a folder of wheels to search first (repeatable)")
    parser.add_argument("--input-base", default=None,
                        help=f"folder searched for wheel folders (default ${INPUT_BASE_ENV} or "
                             f"{KAGGLE_INPUT})")
    parser.add_argument("--lock", default=None, metavar="FILE",
                        help=f"install only what this lock pins (default: the {LOCK_NAME} of "
                             "the first folder searched that holds one)")
    parser.add_argument("--require", action="append", default=[], metavar="NAME[SPEC][:MODULE]")
    parser.add_argument("--optional", action="append", default=[], metavar="NAME[SPEC][:MODULE]")
    args = parser.parse_args(argv)
    requirements = tuple(Requirement.parse(r) for r in args.require) + \
        tuple(Requirement.parse(r, optional=True) for r in args.optional)
    try:
        run(requirements or DEFAULT_REQUIREMENTS, args.wheels, args.input_base, args.lock)
    except BootstrapError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _main_check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vesukit_bootstrap check-tags")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--python", action="append", required=True, metavar="X.Y")
    parser.add_argument("--glibc", default="2.35", help="the target image's glibc (Kaggle: 2.35)")
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--lock", type=Path, default=None)
    args = parser.parse_args(argv)
    glibc = tuple(int(p) for p in args.glibc.split("."))
    targets = [Target(tuple(int(p) for p in v.split(".")), glibc, args.arch) for v in args.python]
    problems = check_folder(args.folder, targets, args.lock)
    for problem in problems:
        print(f"check-tags: {problem}", file=sys.stderr)
    count = len(scan([args.folder])[args.folder])
    print(f"check-tags: {count} wheels in {args.folder}, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
