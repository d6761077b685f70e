"""Run by tests/test_trainer.py under `torchrun --nproc_per_node 2`: train a tiny model on a digits
subset with the edgekd trainer and save rank 0's weights (and the epoch metrics) to argv[1]. With an
ImageFolder as argv[3], train on it streamed (edgekd.streaming) instead."""

import dataclasses
import json
import logging
import sys

import torch

from edgekd.data import load_digits_splits
from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import TrainConfig, train
from tests.ddp_model import tiny_digits_model
from tests.helpers import subset


def main(out: str, batch_size: int, folder: str | None = None) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    config = TrainConfig(epochs=2, batch_size=batch_size, lr=3e-3, seed=3)
    if folder is None:
        digits = load_digits_splits(16)
        data = dataclasses.replace(digits, train=subset(digits.train, 512), val=subset(digits.val, 64))
    else:
        from edgekd.augment import Augmentation
        from edgekd.data import load_image_folder
        from edgekd.streaming import streamed

        data = streamed(load_image_folder(folder, 16), workers=1)
        config = dataclasses.replace(config, augmentation=Augmentation(draws=1, max_shift=0, hflip=True))
    model = tiny_digits_model()
    history = train(model, data, config, loss=make_loss("ce"))
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    torch.save(model.state_dict(), out)
    with open(out + ".json", "w") as f:
        json.dump([dataclasses.asdict(m) for m in history], f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
