"""Small pieces several test modules share."""

from contextlib import contextmanager

import torch
from torch.utils.data import TensorDataset


def subset(dataset: TensorDataset, n: int) -> TensorDataset:
    """The first `n` samples of a tensor dataset."""
    images, labels = dataset.tensors
    return TensorDataset(images[:n], labels[:n])


@contextmanager
def one_torch_thread():
    """Training a tiny net on 2 busy cores is ~30x faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
