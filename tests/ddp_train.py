"""Run by tests/test_trainer.py under `torchrun --nproc_per_node 2`: train a tiny model on a digits
subset with the edgekd trainer and save rank 0's weights (and the epoch metrics) to argv[1]."""

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


def main(out: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    digits = load_digits_splits(16)
    data = dataclasses.replace(digits, train=subset(digits.train, 512), val=subset(digits.val, 64))
    model = tiny_digits_model()
    config = TrainConfig(epochs=2, batch_size=batch_size, lr=3e-3, seed=3)
    history = train(model, data, config, loss=make_loss("ce"))
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    torch.save(model.state_dict(), out)
    with open(out + ".json", "w") as f:
        json.dump([dataclasses.asdict(m) for m in history], f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
