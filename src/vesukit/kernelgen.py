"""Generate the Kaggle notebook and its metadata from ``kernel/kernel.py`` (`make kernel`).

``kernel/kernel.py`` is the source, in the "percent" cell format (``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell whose lines start with ``# ``). This module turns it into
``kernel/vesukit-submission.ipynb`` (committed; a test keeps it in sync) and writes an upload
folder (``kernel/upload/``) holding the notebook and ``kernel-metadata.json`` for
``kaggle kernels push -p kernel/upload``. It also writes the wheels dataset's
``dataset-metadata.json`` (``build_wheels.sh`` calls it). Standard library only.

``enable_internet`` is always written, as false: the Kaggle CLI turns internet on when the
key is missing.

    python -m vesukit.kernelgen [kernel] [--owner USER] [--source kernel/kernel.py]
    python -m vesukit.kernelgen dataset-metadata wheels [--owner USER]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

COMPETITION = "vesuvius-challenge-surface-detection"
OWNER_ENV = "KAGGLE_USERNAME"
DEFAULT_OWNER = "vesukit"
NOTEBOOK_NAME = "vesukit-submission.ipynb"


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """What Kaggle needs to know about the notebook and the datasets it reads."""

    owner: str = DEFAULT_OWNER
    slug: str = "vesukit-submission"
    title: str = "vesukit submission"
    wheels_slug: str = "vesukit-wheels"
    teachers_slug: str = "vesukit-teachers"
    competition: str = COMPETITION
    enable_gpu: bool = True
    is_private: bool = True
    # Keep the image the notebook was first run with: numpy, torch and the wheels were chosen
    # for it, and a newer image may break them.
    docker_image_pinning_type: str = "original"

    @classmethod
    def from_env(cls, owner: str | None = None) -> KernelConfig:
        return cls(owner=owner or os.environ.get(OWNER_ENV) or DEFAULT_OWNER)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> KernelConfig:
        return cls(**data)


def kernel_metadata(config: KernelConfig, code_file: str = NOTEBOOK_NAME) -> dict:
    return {
        "id": f"{config.owner}/{config.slug}",
        "title": config.title,
        "code_file": code_file,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": config.is_private,
        "enable_gpu": config.enable_gpu,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [f"{config.owner}/{config.wheels_slug}",
                            f"{config.owner}/{config.teachers_slug}"],
        "competition_sources": [config.competition],
        "kernel_sources": [],
        "model_sources": [],
        "docker_image_pinning_type": config.docker_image_pinning_type,
    }


def dataset_metadata(config: KernelConfig) -> dict:
    return {
        "title": config.wheels_slug,
        "id": f"{config.owner}/{config.wheels_slug}",
        "subtitle": "Offline wheels for the vesukit Kaggle notebook",
        "description": "Built by build_wheels.sh from requirements.lock (exact pins, sha256). "
                       "Installed by vesukit_bootstrap.py with pip --no-index --no-deps. "
                       "Each wheel keeps its own project's license.",
        "licenses": [{"name": "other"}],
    }


# --------------------------------------------------------------------------- notebook <-> source


def _cell(kind: str, lines: list[str]) -> dict:
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if kind == "markdown":
        lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
    source = [line + "\n" for line in lines]
    if source:
        source[-1] = source[-1].rstrip("\n")
    cell = {"cell_type": kind, "metadata": {}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook_from_source(source: str) -> dict:
    """Cells from percent-format source; text before the first marker is dropped."""
    cells: list[dict] = []
    kind, lines = None, []
    for line in source.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append(_cell(kind, lines))
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind is not None:
            lines.append(line)
    if kind is not None:
        cells.append(_cell(kind, lines))
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def source_from_notebook(notebook: dict) -> str:
    """The percent-format source a notebook corresponds to (inverse of notebook_from_source)."""
    parts = []
    for cell in notebook["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            body = "\n".join(("# " + line) if line else "#" for line in text.split("\n"))
            parts.append("# %% [markdown]\n" + body)
        else:
            parts.append("# %%\n" + text)
    return "\n\n".join(parts) + "\n"


def notebook_json(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- writing


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_kernel(source: Path, notebook_path: Path, upload: Path, config: KernelConfig) -> None:
    """Write the committed notebook and the upload folder (notebook + kernel-metadata.json)."""
    text = notebook_json(notebook_from_source(source.read_text()))
    _write(notebook_path, text)
    _write(upload / NOTEBOOK_NAME, text)
    _write(upload / "kernel-metadata.json",
           json.dumps(kernel_metadata(config), indent=2) + "\n")


def write_dataset_metadata(folder: Path, config: KernelConfig) -> Path:
    path = folder / "dataset-metadata.json"
    _write(path, json.dumps(dataset_metadata(config), indent=2) + "\n")
    return path


def missing_owner_warning() -> str:
    """Said by every command that writes a Kaggle id without a known owner: Kaggle refuses a
    dataset or kernel id whose owner is not the uploading user."""
    return (f"no ${OWNER_ENV}: the ids say {DEFAULT_OWNER!r}, and `kaggle datasets create` / "
            f"`kaggle kernels push` will refuse them. Set {OWNER_ENV}=<your Kaggle user> and "
            "run `make wheels`, `make kernel` and `vesukit teachers pack` again.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m vesukit.kernelgen", description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="kernel", choices=["kernel", "dataset-metadata"])
    parser.add_argument("folder", nargs="?", default="wheels",
                        help="for dataset-metadata: the wheels folder")
    parser.add_argument("--owner", default=None, help=f"Kaggle user (default ${OWNER_ENV} or "
                                                      f"{DEFAULT_OWNER!r})")
    parser.add_argument("--source", type=Path, default=Path("kernel/kernel.py"))
    parser.add_argument("--notebook", type=Path, default=Path("kernel") / NOTEBOOK_NAME)
    parser.add_argument("--upload", type=Path, default=Path("kernel/upload"))
    args = parser.parse_args(argv)
    config = KernelConfig.from_env(args.owner)
    if config.owner == DEFAULT_OWNER:
        print(f"kernelgen: {missing_owner_warning()}", file=sys.stderr)
    if args.what == "dataset-metadata":
        path = write_dataset_metadata(Path(args.folder), config)
        print(f"wrote {path} (id {config.owner}/{config.wheels_slug})")
        return 0
    if not args.source.is_file():
        print(f"kernelgen: {args.source} not found; run from the repository root",
              file=sys.stderr)
        return 2
    write_kernel(args.source, args.notebook, args.upload, config)
    print(f"wrote {args.notebook} and {args.upload}/ (kernel {config.owner}/{config.slug}); "
          f"push with: kaggle kernels push -p {args.upload}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
