"""The audit page shows the skill lab's table: from the audit folder's skill_lab.json, and in a
`predict --audit` run whose teachers folder holds one (`make skill-lab` writes it there)."""

import json

import pytest

from vesukit.report import SKILL_LAB, write_index_html

ROWS = {"teacher a (smp.Unet)": {"score": 0.51234, "gflops": 1.5, "seconds": 0.25, "note": ""},
        "student (smp.Unet, tiny)": {"score": 0.49, "gflops": 0.4, "seconds": 0.1,
                                     "note": "<distilled>"}}
LAB = {"rows": ROWS, "command": "make skill-lab", "held_back": ["123"]}


def test_the_audit_page_shows_the_skill_lab_table(tmp_path):
    (tmp_path / SKILL_LAB).write_text(json.dumps(LAB))
    page = write_index_html(tmp_path).read_text()
    assert "Skill lab" in page and "0.5123" in page and "student (smp.Unet, tiny)" in page
    assert "&lt;distilled&gt;" in page and "make skill-lab" in page


def test_no_table_without_the_file_and_a_note_for_a_broken_one(tmp_path):
    assert "Skill lab" not in write_index_html(tmp_path).read_text()
    (tmp_path / SKILL_LAB).write_text("{not json")
    assert "unreadable skill-lab table" in write_index_html(tmp_path).read_text()


def test_predict_audit_shows_the_table_measured_for_its_teachers(tmp_path, capsys):
    """A teachers folder the skill lab measured (skill_lab.json beside teachers.json): the
    audit page of a predict run with it shows every row of the table."""
    pytest.importorskip("torch")
    from tests.fixtures import unet3d_ensemble
    from vesukit.cli import main
    from vesukit.synth import make_competition_root

    root = make_competition_root(tmp_path / "root", n_test=1, n_train=0,
                                 shapes=((16, 16, 16),), seed=2)
    teachers = tmp_path / "student"
    unet3d_ensemble(teachers, seeds=(0,))
    from vesukit.run_settings import checkpoint_stamps
    from vesukit.teachers import load_manifest

    stamps = checkpoint_stamps(load_manifest(teachers), ["unet_0"])
    (teachers / SKILL_LAB).write_text(json.dumps({**LAB, "checkpoints": stamps}))
    audit = tmp_path / "audit"
    assert main(["predict", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(tmp_path / "sub.zip"), "--device", "cpu", "--workdir", str(tmp_path / "w"),
                 "--audit", str(audit), "--no-warm-up"]) == 0
    page = (audit / "index.html").read_text()
    assert "Skill lab (exact metric, held-back volumes)" in page
    for name, row in ROWS.items():
        assert f"<td>{name.replace('<', '&lt;')}</td><td>{row['score']:.4f}</td>" in page
    assert str(teachers / SKILL_LAB) in page
    # a table measured on other weights (retrained under the same name), one without stamps,
    # and no file at all: no table
    unet3d_ensemble(tmp_path / "other", seeds=(0,))
    other = checkpoint_stamps(load_manifest(tmp_path / "other"), ["unet_0"])
    torch = pytest.importorskip("torch")
    from vesukit.teachers import load_teacher, save_checkpoint

    spec = load_manifest(teachers)["unet_0"]
    model = load_teacher(spec, teachers)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    save_checkpoint(model, teachers / spec.checkpoint)
    for index, lab in enumerate([{**LAB, "checkpoints": stamps}, {**LAB, "checkpoints": other},
                                 LAB, None]):
        if lab is None:
            (teachers / SKILL_LAB).unlink()
        else:
            (teachers / SKILL_LAB).write_text(json.dumps(lab))
        assert main(["predict", "--data", str(root), "--teachers", str(teachers), "--out",
                     str(tmp_path / f"sub{index}.zip"), "--device", "cpu", "--workdir",
                     str(tmp_path / f"w{index}"), "--audit", str(tmp_path / f"audit{index}"),
                     "--no-warm-up"]) == 0
        assert "Skill lab" not in (tmp_path / f"audit{index}" / "index.html").read_text()
