"""Fixtures for the submission tests: a tiny synthetic competition root and its shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from submission_helpers import SHAPES

from vesukit.submission import expected_volumes
from vesukit.synth import make_competition_root


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> Path:
    return make_competition_root(tmp_path_factory.mktemp("comp"), n_test=3, n_train=0,
                                 shapes=SHAPES, seed=7)


@pytest.fixture(scope="session")
def expected(root):
    _, shapes = expected_volumes(root)
    return shapes
