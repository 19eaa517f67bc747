"""The offline installer, on real wheels built here and installed into a fresh environment.

Each installing test gets a new virtual environment (no pip, no site packages; pip itself is
reached through a .pth file pointing at a folder holding only pip) and runs bootstrap.py as the
notebook would: by path, with that environment's interpreter. pip runs with --no-index and no
configuration file, so nothing reaches the network.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest

from vesukit import bootstrap
from vesukit.bootstrap import Requirement, Target, Wheel, satisfies, version_key

BOOTSTRAP = Path(bootstrap.__file__).resolve()
LOCK = Path(__file__).resolve().parents[1] / "wheels" / "requirements.lock"


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = (),
               tag: str = "py3-none-any", body: str = "VALUE = 1\n",
               requires_python: str = "") -> Path:
    """A real installable wheel: module ``name`` (dashes to underscores) plus dist-info."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    if requires_python:
        metadata += f"Requires-Python: {requires_python}\n"
    files = {
        f"{dist}/__init__.py": body + f"__version__ = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: vesukit-tests\n"
                         f"Root-Is-Purelib: true\nTag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name_in_zip, text in files.items():
            archive.writestr(name_in_zip, text)
    return path


@pytest.fixture
def env(tmp_path):
    """A fresh environment: an interpreter, pip, and nothing else."""
    import pip

    root = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    shim = tmp_path / "pip-only"
    shim.mkdir()
    (shim / "pip").symlink_to(Path(pip.__file__).parent)
    site = next((root / "lib").glob("python3*/site-packages"))
    (site / "pip-only.pth").write_text(str(shim) + "\n")
    return root


def run_bootstrap(env: Path, tmp_path: Path, *args: str, extra_env: dict | None = None,
                  script: Path = BOOTSTRAP):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VESUKIT_"))}
    environ.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PYTHONNOUSERSITE="1",
                   VESUKIT_INPUT_BASE=str(tmp_path / "input"))
    environ.pop("PYTHONPATH", None)
    environ.update(extra_env or {})
    return subprocess.run([str(env / "bin" / "python"), str(script), *args],
                          capture_output=True, text=True, cwd=tmp_path, env=environ)


def installed(env: Path, dist: str) -> str | None:
    code = ("import importlib.metadata as m, sys\n"
            f"try: print(m.version({dist!r}))\nexcept m.PackageNotFoundError: print('-')")
    out = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True,
                         text=True, check=True, env={"PYTHONNOUSERSITE": "1"}).stdout.strip()
    return None if out == "-" else out


# --------------------------------------------------------------------------- installing


def test_installs_dependencies_first_and_verifies_the_import(env, tmp_path):
    wheels = tmp_path / "wheels-a"
    make_wheel(wheels, "alpha", "1.0", requires=("beta>=1.0", "numpy; extra == 'fast'"),
               body="import beta\n")
    make_wheel(wheels, "beta", "1.2", requires=("gamma==2.*",), body="import gamma\n")
    make_wheel(wheels, "gamma", "2.1")
    make_wheel(wheels, "gamma", "1.0")  # an older version the pin rules out

    result = run_bootstrap(env, tmp_path, "--wheels", str(wheels), "--require", "alpha>=1")

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("installing ")]
    assert lines == ["installing gamma-2.1-py3-none-any.whl",
                     "installing beta-1.2-py3-none-any.whl",
                     "installing alpha-1.0-py3-none-any.whl"]
    table = result.stdout.split("package", 1)[1]
    assert "alpha" in table and "installed" in table and str(wheels) in table
    assert "dependency" in table  # beta and gamma are marked as pulled in
    assert (installed(env, "alpha"), installed(env, "beta"), installed(env, "gamma")) == \
        ("1.0", "1.2", "2.1")


def test_a_present_compatible_version_is_skipped_and_an_old_one_replaced(env, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    make_wheel(old, "gamma", "1.0")
    make_wheel(new, "gamma", "2.0")
    assert run_bootstrap(env, tmp_path, "--wheels", str(old), "--require", "gamma").returncode == 0

    result = run_bootstrap(env, tmp_path, "--wheels", str(new), "--require", "gamma>=1.0")
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout
    assert "present" in result.stdout and installed(env, "gamma") == "1.0"

    result = run_bootstrap(env, tmp_path, "--wheels", str(old), "--require", "gamma>=2")
    assert result.returncode == 1
    assert "gamma>=2 (1.0 is installed but does not satisfy it; no fitting wheel" in result.stderr

    result = run_bootstrap(env, tmp_path, "--wheels", str(new), "--require", "gamma>=2")
    assert result.returncode == 0, result.stderr
    assert "installing gamma-2.0-py3-none-any.whl" in result.stdout
    assert installed(env, "gamma") == "2.0"


def test_wheel_folders_are_found_under_the_input_base_env_and_cwd(env, tmp_path):
    make_wheel(tmp_path / "input" / "datasets" / "someone" / "my-wheels", "delta", "1.0")
    make_wheel(tmp_path / "from-env", "epsilon", "1.0")
    make_wheel(tmp_path / "wheels", "zeta", "1.0")  # ./wheels, relative to the working dir

    result = run_bootstrap(env, tmp_path, "--require", "delta", "--require", "epsilon",
                           "--require", "zeta",
                           extra_env={"VESUKIT_WHEELS": str(tmp_path / "from-env")})

    assert result.returncode == 0, result.stderr
    assert [installed(env, d) for d in ("delta", "epsilon", "zeta")] == ["1.0"] * 3
    assert str(tmp_path / "input" / "datasets" / "someone" / "my-wheels") in result.stdout


def test_optional_missing_warns_and_succeeds(env, tmp_path):
    wheels = tmp_path / "wheels-a"
    make_wheel(wheels, "alpha", "1.0")

    result = run_bootstrap(env, tmp_path, "--wheels", str(wheels), "--require", "alpha",
                           "--optional", "imagecodecs")

    assert result.returncode == 0, result.stderr
    assert "WARNING: optional package imagecodecs unavailable" in result.stderr
    assert "missing*" in result.stdout
    assert installed(env, "alpha") == "1.0"


def test_default_requirements_name_the_pillow_fallback(tmp_path, monkeypatch):
    """Run in-process with nothing to install from: imagecodecs' warning names its fallback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VESUKIT_INPUT_BASE", str(tmp_path / "input"))
    monkeypatch.delenv("VESUKIT_WHEELS", raising=False)
    codecs = next(r for r in bootstrap.DEFAULT_REQUIREMENTS if r.dist == "imagecodecs")
    missing = Requirement("imagecodecs-not-installed", "imagecodecs_not_installed",
                          optional=True, fallback=codecs.fallback)
    report = bootstrap.ensure((missing,), [tmp_path / "empty"])
    assert report.ok
    assert any("Pillow decodes the LZW" in w for w in report.warnings)


def test_default_requirements_check_the_presets_image_packages(tmp_path, monkeypatch):
    """scikit-image (ninth_place) and threadpoolctl (second_place's one BLAS thread) are not
    vendored: the notebook's report says they are present on the image, or names what is lost."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VESUKIT_INPUT_BASE", str(tmp_path / "input"))
    monkeypatch.delenv("VESUKIT_WHEELS", raising=False)
    for dist, module, lost in (("scikit-image", "skimage", "ninth_place"),
                               ("threadpoolctl", "threadpoolctl", "second_place")):
        wanted = next(r for r in bootstrap.DEFAULT_REQUIREMENTS if r.dist == dist)
        assert wanted.optional and wanted.module == module
        report = bootstrap.ensure((wanted,), [tmp_path / "empty"])      # this image has it
        assert report.ok and [(row.dist, row.action) for row in report.rows] == [(dist, "present")]
        missing = Requirement(dist + "-not-installed", module + "_not_installed", optional=True,
                              fallback=wanted.fallback)
        report = bootstrap.ensure((missing,), [tmp_path / "empty"])
        assert report.ok and any(lost in w for w in report.warnings)
    lock = (Path(bootstrap.__file__).parents[2] / "wheels" / "requirements.lock").read_text()
    assert "scikit-image==" not in lock and "threadpoolctl==" not in lock


def test_wrong_tags_are_not_installed_and_the_error_lists_them(env, tmp_path):
    wheels = tmp_path / "foreign"
    make_wheel(wheels, "delta", "1.0", tag="cp39-cp39-win_amd64")
    make_wheel(wheels, "delta", "1.1", tag="cp312-cp312-macosx_11_0_arm64")

    result = run_bootstrap(env, tmp_path, "--wheels", str(wheels), "--require", "delta")

    assert result.returncode == 1
    err = result.stderr
    assert "cannot install required package delta (no fitting wheel" in err
    assert "delta-1.0-cp39-cp39-win_amd64.whl  tags cp39-cp39-win_amd64  <- tags do not fit" in err
    assert "tags cp312-cp312-macosx_11_0_arm64  <- tags do not fit" in err
    assert installed(env, "delta") is None


def test_required_missing_error_lists_every_folder_searched(env, tmp_path):
    explicit = tmp_path / "explicit"
    make_wheel(explicit, "alpha", "1.0")
    kaggle_like = tmp_path / "input" / "vesukit-wheels"
    make_wheel(kaggle_like, "beta", "2.0", tag="py3-none-any")
    nowhere = tmp_path / "does-not-exist"

    result = run_bootstrap(env, tmp_path, "--wheels", str(explicit), "--wheels", str(nowhere),
                           "--require", "segmentation-models-pytorch>=0.4:smp_module",
                           "--optional", "alpha")

    assert result.returncode == 1
    err = result.stderr
    assert "required package segmentation-models-pytorch>=0.4" in err
    assert f"{explicit}  [1 wheel(s)]" in err
    assert "alpha-1.0-py3-none-any.whl  tags py3-none-any" in err
    assert f"{nowhere}  [not found]" in err
    assert f"{tmp_path / 'wheels'}  [not found]" in err
    assert f"{kaggle_like}  [1 wheel(s)]" in err and "beta-2.0-py3-none-any.whl" in err
    assert "This interpreter: CPython 3." in err and "VESUKIT_WHEELS" in err
    # What could be installed still was, and the table says so.
    assert installed(env, "alpha") == "1.0"


def test_a_wheel_that_does_not_import_fails_required_and_is_removed_when_optional(env, tmp_path):
    wheels = tmp_path / "broken"
    make_wheel(wheels, "brittle", "1.0", body="raise ImportError('built for another numpy')\n")

    result = run_bootstrap(env, tmp_path, "--wheels", str(wheels), "--optional", "brittle")
    assert result.returncode == 0, result.stderr
    assert "`import brittle` fails: ImportError: built for another numpy" in result.stderr
    assert installed(env, "brittle") is None  # the fallback must not trip over a broken install

    result = run_bootstrap(env, tmp_path, "--wheels", str(wheels), "--require", "brittle")
    assert result.returncode == 1
    assert "required package brittle" in result.stderr and "import brittle" in result.stderr


def test_a_dependency_nowhere_to_be_found_is_a_warning(env, tmp_path):
    wheels = tmp_path / "wheels-a"
    make_wheel(wheels, "alpha", "1.0", requires=("not-anywhere>=3",))
    result = run_bootstrap(env, tmp_path, "--wheels", str(wheels), "--require", "alpha")
    assert result.returncode == 0, result.stderr
    assert "alpha 1.0 needs not-anywhere>=3, but it is not installed" in result.stderr


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("version, spec, expected", [
    ("2.0.2", ">=1.24,<2.3", True),
    ("2.3.0", ">=1.24,<2.3", False),
    ("0.44.0", ">=0.44.0dev0,<0.45", True),
    ("0.44.0rc1", ">=0.44.0", False),
    ("1.0.post1", ">1.0", True),
    ("2.1", "==2.*", True),
    ("3.0", "==2.*", False),
    ("2.5", "~=2.2", True),
    ("3.0", "~=2.2", False),
    ("0.17.0", "!=0.17.0,>=0.16.6", False),
    ("1.0", "", True),
])
def test_satisfies(version, spec, expected):
    assert satisfies(version, spec) is expected


def test_version_order():
    ordered = ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.0.1", "1.10"]
    assert sorted(ordered, key=version_key) == ordered
    assert version_key("1.0") == version_key("1.0.0")


KAGGLE_312 = Target((3, 12), (2, 35), "x86_64")


@pytest.mark.parametrize("name, fits_312, fits_311", [
    ("imagecodecs-2025.11.11-cp311-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", 1, 1),
    ("numba-0.61.2-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", 1, 0),
    ("numba-0.61.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", 0, 1),
    ("zarr-3.1.6-py3-none-any.whl", 1, 1),
    ("x-1.0-cp312-cp312-manylinux_2_39_x86_64.whl", 0, 0),  # needs a newer glibc
    ("x-1.0-cp312-cp312-manylinux_2_17_aarch64.whl", 0, 0),
    ("x-1.0-cp312-cp312-win_amd64.whl", 0, 0),
    ("x-1.0-cp312-cp312-musllinux_1_2_x86_64.whl", 0, 0),
    ("x-1.0-cp313-abi3-manylinux_2_17_x86_64.whl", 0, 0),  # abi3 from 3.13 on
    ("x-1.0-py2.py3-none-any.whl", 1, 1),
    ("x-1.0-1-py3-none-any.whl", 1, 1),  # with a build tag
])
def test_tags(name, fits_312, fits_311):
    wheel = Wheel.from_path(Path(name))
    assert wheel.fits(KAGGLE_312) is bool(fits_312)
    assert wheel.fits(Target((3, 11), (2, 35), "x86_64")) is bool(fits_311)


def test_markers():
    assert bootstrap.marker_applies('python_version < "3.11"', KAGGLE_312) is False
    assert bootstrap.marker_applies('platform_system == "Linux" and python_version < "3.15"',
                                    KAGGLE_312) is True
    assert bootstrap.marker_applies('extra == "dev"', KAGGLE_312) is None


def test_the_committed_lock_pins_every_package_with_hashes():
    pins = bootstrap.read_lock(LOCK)
    assert {"imagecodecs", "segmentation-models-pytorch", "connected-components-3d", "zarr",
            "numcodecs", "numba", "llvmlite", "safetensors"} <= set(pins)
    assert pins["imagecodecs"][0] == "2025.11.11"  # 2026.x needs numpy >= 2.1; Kaggle has 2.0.2
    assert all(hashes for _, hashes in pins.values())


def test_check_folder_reports_foreign_tags_and_unpinned_wheels(tmp_path):
    folder = tmp_path / "w"
    make_wheel(folder, "donfig", "0.8.1.post1")
    make_wheel(folder, "stray", "1.0", tag="cp312-cp312-win_amd64")
    lock = tmp_path / "lock"
    lock.write_text("donfig==0.8.1.post1 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    targets = [Target((3, 12), (2, 35)), Target((3, 11), (2, 35))]
    problems = bootstrap.check_folder(folder, targets, lock)
    assert any("stray-1.0-cp312-cp312-win_amd64.whl: tags" in p for p in problems)
    assert any("stray-1.0" in p and "not pinned" in p for p in problems)
    assert any("donfig-0.8.1.post1-py3-none-any.whl: sha256" in p for p in problems)
    assert bootstrap.check_folder(folder, targets) == [problems[0]]


def test_requirement_parse():
    assert Requirement.parse("connected-components-3d>=4:cc3d") == \
        Requirement("connected-components-3d", "cc3d", ">=4")
    assert Requirement.parse("numba", optional=True) == Requirement("numba", "numba", "", True)


# --------------------------------------------------------------------------- the lock wins


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_only_what_the_lock_pins_is_installed_and_the_vesukit_dataset_wins(env, tmp_path):
    """Another attached dataset holds a newer version and a rebuilt copy of the pinned one."""
    import shutil

    home = tmp_path / "input" / "vesukit-wheels"
    pinned = make_wheel(home, "pkgx", "1.0", body="VALUE = 'ours'\n")
    (home / "requirements.lock").write_text(f"pkgx==1.0 \\\n    --hash=sha256:{sha256(pinned)}\n")
    script = home / "vesukit_bootstrap.py"
    shutil.copy(BOOTSTRAP, script)
    other = tmp_path / "input" / "aaa-other-dataset"  # walked before the wheels dataset
    newer = make_wheel(other, "pkgx", "2.0", body="VALUE = 'newer'\n")
    rebuilt = make_wheel(other / "copy", "pkgx", "1.0", body="VALUE = 'theirs'\n")

    result = run_bootstrap(env, tmp_path, "--require", "pkgx", script=script)
    assert result.returncode == 0, result.stderr
    assert f"installing only what {home / 'requirements.lock'} pins" in result.stdout
    assert f"skipped {newer} (pkgx 2.0): requirements.lock pins pkgx==1.0" in result.stderr
    value = subprocess.run([str(env / "bin" / "python"), "-c", "import pkgx; print(pkgx.VALUE)"],
                           capture_output=True, text=True).stdout.strip()
    assert installed(env, "pkgx") == "1.0" and value == "ours"
    # with the dataset's copy gone, the rebuilt one is refused for its hash, not installed
    pinned.unlink()
    fresh = env.parent / "fresh"
    import venv
    venv.EnvBuilder(with_pip=False, symlinks=True).create(fresh)
    (next((fresh / "lib").glob("python3*/site-packages")) / "pip-only.pth").write_text(
        next((env / "lib").glob("python3*/site-packages/pip-only.pth")).read_text())
    result = run_bootstrap(fresh, tmp_path, "--require", "pkgx", script=script)
    assert result.returncode == 1
    assert f"skipped {rebuilt} (pkgx 1.0): its sha256 {sha256(rebuilt)[:12]}... is not one " \
        "requirements.lock lists for pkgx==1.0" in result.stderr


def test_requires_python_and_tags_rule_out_a_higher_version(tmp_path):
    folder = tmp_path / "wheels"
    make_wheel(folder, "pkgy", "3.4.2", requires_python=">=3.99")
    make_wheel(folder, "pkgy", "3.3.0", tag="cp39-cp39-manylinux2014_x86_64")
    make_wheel(folder, "pkgy", "3.1.6", requires_python=">=3.8")
    report = bootstrap.Report(Target((3, 11), (2, 35)), bootstrap.scan([folder]))
    chosen = bootstrap._pick("pkgy", "", report)
    assert chosen.version == "3.1.6"
    assert any("pkgy 3.4.2): it requires Python >=3.99" in w for w in report.warnings)
