"""`make submit-dry`'s last step and the offline simulation's host-side safety: it runs where it
can, says why it was skipped where it cannot, cuts the network without naming a host, and two
simulations at once share the /kaggle mount point safely."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIM_SCRIPT = REPO / "scripts" / "kaggle_sim.py"
AFTER_DRY = REPO / "scripts" / "sim_after_dry.sh"


def load_sim():
    spec = importlib.util.spec_from_file_location("kaggle_sim_under_test", SIM_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sim(tmp_path, monkeypatch):
    module = load_sim()
    monkeypatch.setattr(module, "KAGGLE", tmp_path / "kaggle")
    monkeypatch.setattr(module, "GUARD_LOCK", tmp_path / "guard")
    monkeypatch.setattr(module, "USERS_LOCK", tmp_path / "users")
    monkeypatch.setattr(module, "MADE_MARK", tmp_path / "made")
    return module


def non_root_python(tmp_path: Path) -> Path:
    """An interpreter for which os.geteuid() says 1000: a normal user, as the code checks it."""
    wrapper = tmp_path / "python-as-user"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {sys.executable} -c 'import os, runpy, sys; os.geteuid = lambda: 1000; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name=\"__main__\")' \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def run_after_dry(python: Path, sim: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SIM=sim, PY=str(python))
    return subprocess.run(["bash", str(AFTER_DRY)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_preflight_names_root_for_a_normal_user(sim, monkeypatch, capsys):
    monkeypatch.setattr(sim.os, "geteuid", lambda: 1000)
    assert sim.main(["--preflight"]) == 3
    assert "needs root" in capsys.readouterr().out
    # Asked to run anyway, it refuses loudly and says how to run it.
    assert sim.main([]) == 1
    assert "sudo make kaggle-sim" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="the simulation's own preconditions: root and unshare")
def test_preflight_passes_as_root(sim):
    assert sim.preflight() == []


def test_submit_dry_skips_the_simulation_for_a_normal_user(tmp_path):
    result = run_after_dry(non_root_python(tmp_path), "auto")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "skipped" in line]
    assert len(lines) == 1
    assert "needs root" in lines[0] and "sudo make kaggle-sim" in lines[0]


def test_sim_1_fails_loudly_where_it_cannot_run(tmp_path):
    result = run_after_dry(non_root_python(tmp_path), "1")
    assert result.returncode == 1
    assert "cannot run here" in result.stderr and "needs root" in result.stderr


def test_sim_0_skips_and_says_so(tmp_path):
    result = run_after_dry(Path(sys.executable), "0")
    assert result.returncode == 0
    assert "skipped: SIM=0" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="dropping to a real unprivileged user needs root and setpriv")
def test_submit_dry_step_as_a_real_unprivileged_user():
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "bash", "-c", f"cd {REPO} && {sys.executable} -c 'import vesukit'"],
                           capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    if probe.returncode != 0:
        pytest.skip("the unprivileged user cannot read this checkout or its interpreter")
    env = dict(os.environ, SIM="auto", PY=sys.executable, HOME="/tmp")
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "bash", str(AFTER_DRY)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "skipped: it needs root" in result.stdout


def test_two_simulations_share_the_mount_point(sim):
    with sim.kaggle_mountpoint() as first:
        assert first.is_dir()
        with sim.kaggle_mountpoint() as second:
            assert second == first
        # The other run finished first: its clean-up leaves the mount point in place.
        assert first.is_dir()
    assert not sim.KAGGLE.exists()  # the last one out removes what a simulation made


def test_an_existing_empty_kaggle_folder_is_left_alone(sim):
    sim.KAGGLE.mkdir()
    with sim.kaggle_mountpoint():
        pass
    assert sim.KAGGLE.is_dir()


def test_a_real_kaggle_tree_is_refused(sim):
    (sim.KAGGLE / "input").mkdir(parents=True)
    with pytest.raises(sim.SimError, match="not empty"):
        with sim.kaggle_mountpoint():
            pass
    assert (sim.KAGGLE / "input").is_dir()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a network namespace needs root and unshare")
def test_network_check_passes_inside_a_cut_namespace_and_fails_outside():
    check = [sys.executable, "-c", load_sim().NETWORK_CUT_CHECK]
    assert subprocess.run(["unshare", "--net", *check], capture_output=True).returncode == 0
    interfaces = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    if all(line.split(":")[0].strip() == "lo" for line in interfaces):
        pytest.skip("this machine has no interface but loopback")
    outside = subprocess.run(check, capture_output=True, text=True)
    assert outside.returncode != 0 and "not cut" in outside.stderr


def test_no_registry_host_is_named_in_the_repository():
    hosts = ["pypi" + ".org", "files.python" + "hosted.org", "download.py" + "torch.org",
             "hugging" + "face.co"]
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    named = []
    for name in files:
        path = REPO / name
        if not path.is_file() or path.suffix in {".tif", ".whl", ".png"}:
            continue
        text = path.read_text(errors="ignore")
        named += [f"{name}: {host}" for host in hosts if host in text]
    assert named == []


def test_an_interpreter_that_cannot_run_is_a_reason_too(tmp_path):
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\nexit 126\n")
    broken.chmod(0o755)
    result = run_after_dry(broken, "auto")
    assert result.returncode == 0
    assert "preflight check could not run" in result.stdout
    assert run_after_dry(broken, "1").returncode == 1


def test_the_simulated_dataset_is_the_upload_plus_the_local_cp311_wheels(tmp_path):
    sim = load_sim()
    upload, local = tmp_path / "wheels", tmp_path / "cp311"
    upload.mkdir()
    local.mkdir()
    (upload / "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl").write_bytes(b"312")
    (upload / "pure-1.0-py3-none-any.whl").write_bytes(b"pure")
    (upload / "SHA256SUMS").write_text("a  pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl\n")
    (local / "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"311")
    (local / "SHA256SUMS").write_text("b  pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl\n")
    snapshot = sim.snapshot_wheels(upload, local, tmp_path / "work")
    assert sorted(p.name for p in snapshot.glob("*.whl")) == [
        "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", "pure-1.0-py3-none-any.whl"]
    assert (snapshot / "SHA256SUMS").read_text().splitlines() == [
        "a  pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "b  pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
