import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tiny_models

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls run several times faster on one thread than on two contended ones; restored afterwards.

    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
