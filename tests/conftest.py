"""What every test shares. Teacher folders: :mod:`tests.fixtures`."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test machine's few cores are shared: one torch thread avoids oversubscription
    stalls (tiny models gain nothing from more); restored afterwards. Tests that never import
    torch are left alone (it is not imported for them)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
