"""The training loop shared by teacher training and distillation: seeded, checkpointed every epoch,
resumable, reporting progress through an `Observer`.

Example:
    >>> # history = train(student, splits, TrainConfig(epochs=5, batch_size=64, lr=3e-3),
    >>> #                 loss=make_loss("kd"), teacher=teacher, checkpoint_dir=run / "checkpoints")
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from edgekd._io import write_with
from edgekd.data import DataSplits
from edgekd.distill.features import DistillForward
from edgekd.distill.losses import DistillLoss
from edgekd.progress import Observer, SilentObserver

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive: {self}")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_accuracy: float
    val_teacher_agreement: float | None
    seconds: float


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over a whole dataset, in order."""
    model.eval()
    logits, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(model(x))
        labels.append(torch.as_tensor(y))
    return torch.cat(logits), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def train(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    *,
    loss: DistillLoss,
    teacher: nn.Module | None = None,
    checkpoint_dir: Path | None = None,
    observer: Observer | None = None,
    description: str = "train",
) -> list[EpochMetrics]:
    """Fit `model` to `data.train`, evaluating on `data.val` after each epoch.

    With `checkpoint_dir`, the full state (model, optimiser, schedule, RNG, history) is written there
    atomically after every epoch, and a later call with the same arguments resumes after the last
    complete epoch, reaching the same weights as an uninterrupted run.
    """
    observer = observer or SilentObserver()
    torch.manual_seed(config.seed)
    # Built before the optimiser: it sizes the loss's own parameters (FitNets adapters), which are
    # trained with the model and checkpointed with it.
    forward = DistillForward(model, teacher, loss, data.input_size)
    optimizer = torch.optim.AdamW(
        [*model.parameters(), *loss.parameters()], lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    history: list[EpochMetrics] = []
    checkpoint = checkpoint_dir / CHECKPOINT if checkpoint_dir else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        if state["config"] != asdict(config):
            log.warning("ignoring %s: it was written with another training config", checkpoint)
        else:
            model.load_state_dict(state["model"])
            loss.load_state_dict(state.get("loss", {}))  # checkpoints from before losses had state
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            torch.set_rng_state(state["rng"])
            history = [EpochMetrics(**m) for m in state["history"]]
            log.info("%s: resuming after epoch %d from %s", description, len(history), checkpoint)
    if teacher is not None:
        teacher.eval()
        val_teacher_top1 = predict(teacher, data.val, config.batch_size)[0].argmax(1)

    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        # The shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
        order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(data.train, batch_size=config.batch_size, shuffle=True, generator=order)
        task = observer.task(f"{description} epoch {epoch}/{config.epochs}", total=steps_per_epoch)
        total_loss, seen = 0.0, 0
        for x, y in loader:
            y = torch.as_tensor(y)
            value = loss(forward(x, y))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(value.detach()) * len(y)
            seen += len(y)
            task.advance(1, loss=total_loss / seen)
        task.close()
        val_logits, val_labels = predict(model, data.val, config.batch_size)
        agreement = None
        if teacher is not None:
            agreement = float((val_logits.argmax(1) == val_teacher_top1).float().mean())
        metrics = EpochMetrics(
            epoch,
            total_loss / seen,
            accuracy(val_logits, val_labels),
            agreement,
            time.perf_counter() - started,
        )
        history.append(metrics)
        log.info(
            "%s epoch %d: loss %.4f, val accuracy %.4f",
            description,
            epoch,
            metrics.train_loss,
            metrics.val_accuracy,
        )
        if checkpoint is not None:
            state = {
                "config": asdict(config),
                "model": model.state_dict(),
                "loss": loss.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": torch.get_rng_state(),
                "history": [asdict(m) for m in history],
            }
            write_with(checkpoint, lambda tmp, state=state: torch.save(state, tmp))
    model.eval()
    return history
