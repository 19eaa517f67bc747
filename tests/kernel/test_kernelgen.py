"""The Kaggle notebook and its metadata, as generated from kernel/kernel.py."""

from __future__ import annotations

import json
from pathlib import Path

from vesukit import kernelgen
from vesukit.data import COMPETITION_SLUG

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "kernel" / "kernel.py"
NOTEBOOK = REPO / "kernel" / kernelgen.NOTEBOOK_NAME


def test_committed_notebook_is_generated_from_kernel_py():
    generated = kernelgen.notebook_json(kernelgen.notebook_from_source(SOURCE.read_text()))
    assert NOTEBOOK.read_text() == generated, "run `make kernel` and commit the notebook"
    assert kernelgen.source_from_notebook(json.loads(NOTEBOOK.read_text())) == SOURCE.read_text()


def test_notebook_is_bootstrap_then_one_call():
    notebook = json.loads(NOTEBOOK.read_text())
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert len(code) == 2
    assert "vesukit_bootstrap.py" in code[0] and "bootstrap.run()" in code[0]
    assert "import vesukit" not in code[0]  # nothing of vesukit before it is installed
    assert 'submit("/kaggle/working/submission.zip")' in code[1]
    for text in code:
        compile(text, "cell", "exec")


def test_make_kernel_writes_the_upload_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    upload = tmp_path / "upload"
    assert kernelgen.main(["--source", str(SOURCE), "--notebook", str(tmp_path / "nb.ipynb"),
                           "--upload", str(upload)]) == 0
    meta = json.loads((upload / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False
    assert meta["enable_gpu"] is True
    assert meta["competition_sources"] == [COMPETITION_SLUG]
    assert meta["dataset_sources"] == ["someone/vesukit-wheels", "someone/vesukit-teachers"]
    assert meta["id"] == "someone/vesukit-submission" and len(meta["title"]) >= 5
    assert meta["docker_image_pinning_type"] in ("original", "latest")
    assert meta["kernel_type"] == "notebook" and meta["language"] == "python"
    assert (upload / meta["code_file"]).read_text() == NOTEBOOK.read_text()


def test_internet_stays_off_whatever_the_config(tmp_path):
    config = kernelgen.KernelConfig(owner="x", enable_gpu=False, is_private=False)
    assert kernelgen.kernel_metadata(config)["enable_internet"] is False
    assert kernelgen.KernelConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_dataset_metadata_matches_the_kernel_sources(tmp_path):
    config = kernelgen.KernelConfig(owner="someone")
    path = kernelgen.write_dataset_metadata(tmp_path, config)
    data = json.loads(path.read_text())
    assert data["id"] in kernelgen.kernel_metadata(config)["dataset_sources"]
    assert data["licenses"] and len(data["title"]) >= 5


def test_cells_round_trip_markdown_and_code():
    source = "# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\ny = 2\n"
    notebook = kernelgen.notebook_from_source(source)
    assert [c["cell_type"] for c in notebook["cells"]] == ["markdown", "code"]
    assert "".join(notebook["cells"][0]["source"]) == "# Title\n\ntext"
    assert kernelgen.source_from_notebook(notebook) == source


def test_a_missing_owner_is_said_before_an_upload_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    assert kernelgen.main(["dataset-metadata", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "KAGGLE_USERNAME" in err and "make wheels" in err
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert kernelgen.main(["dataset-metadata", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
