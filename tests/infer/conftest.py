import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # The test machine is shared; tiny volumes do not need more than one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
