import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test machine's few cores are shared: one thread avoids oversubscription stalls
    (tiny models gain nothing from more). Restored afterwards for tests elsewhere."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
