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


def tiny_export_model(arch: str = "mobilenetv3_small_050", num_classes: int = 10, seed: int = 0):
    """A small timm model in eval mode with non-trivial BatchNorm statistics: timm's initial ones
    (and its zeroed residual BatchNorms) let converters fold whole branches away, so an export test
    on them would test less than it says."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model
