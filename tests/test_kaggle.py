"""The notebook's one call: input discovery and the command check (predict itself is tested
with its own stage; the whole notebook by `make kaggle-sim`)."""

from __future__ import annotations

import pytest

from vesukit import kaggle
from vesukit.errors import VesukitError


def test_missing_commands_names_only_what_the_cli_lacks():
    assert kaggle.missing_commands("synth", "doctor") == []
    assert kaggle.missing_commands("synth", "no-such-command") == ["no-such-command"]


def test_find_teachers_walks_the_input_base(tmp_path, monkeypatch):
    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    with pytest.raises(VesukitError, match="no teachers folder"):
        kaggle.find_teachers(tmp_path)
    folder = tmp_path / "datasets" / "me" / "vesukit-teachers"
    folder.mkdir(parents=True)
    (folder / "teachers.json").write_text("{}")
    assert kaggle.find_teachers(tmp_path) == folder
    monkeypatch.setenv("VESUKIT_TEACHERS", str(tmp_path / "elsewhere"))
    assert kaggle.find_teachers(tmp_path) == tmp_path / "elsewhere"
