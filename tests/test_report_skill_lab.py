"""The audit page shows the skill lab's table when the folder holds skill_lab.json."""

import json

from vesukit.report import SKILL_LAB, write_index_html


def test_the_audit_page_shows_the_skill_lab_table(tmp_path):
    rows = {"teacher a (smp.Unet)": {"score": 0.51234, "gflops": 1.5, "seconds": 0.25, "note": ""},
            "student (smp.Unet, tiny)": {"score": 0.49, "gflops": 0.4, "seconds": 0.1,
                                         "note": "<distilled>"}}
    (tmp_path / SKILL_LAB).write_text(json.dumps({"rows": rows, "command": "make skill-lab",
                                                  "held_back": ["123"]}))
    page = write_index_html(tmp_path).read_text()
    assert "Skill lab" in page and "0.5123" in page and "student (smp.Unet, tiny)" in page
    assert "&lt;distilled&gt;" in page and "make skill-lab" in page


def test_no_table_without_the_file_and_a_note_for_a_broken_one(tmp_path):
    assert "Skill lab" not in write_index_html(tmp_path).read_text()
    (tmp_path / SKILL_LAB).write_text("{not json")
    assert "unreadable skill-lab table" in write_index_html(tmp_path).read_text()
