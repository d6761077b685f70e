"""The training loop shared by teacher training and distillation: seeded, checkpointed every epoch,
resumable, reporting progress through an `Observer`.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from edgekd._io import write_with
from edgekd.augment import Augmentation
from edgekd.catalog import training_layout
from edgekd.data import DataSplits
from edgekd.distill.accelerator import Accelerator, check_accelerator_name, module_device, resolve_accelerator
from edgekd.distill.cache import TeacherOutputCache
from edgekd.distill.distributed import (
    average,
    barrier,
    current_world,
    data_parallel,
    shard,
    share_buffers_from_main,
    synchronise_batchnorm,
)
from edgekd.distill.features import DistillStep
from edgekd.distill.losses import DistillLoss
from edgekd.distill.weight_average import WeightAverage
from edgekd.errors import CheckpointError, DataError
from edgekd.progress import Observer, SilentObserver
from edgekd.streaming import StreamRecipe, TrainingBatches, evaluation_loader, is_streamed, worker_error

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine")


# Peak learning rate per optimizer at its reference batch size, scaled linearly with the batch (Goyal
# et al. 2017, arXiv 1706.02677). SGD's is the usual CIFAR recipe's (0.1 at 256); the recipe
# benchmark (benchmarks/recipe.py) found AdamW at 3e-3 8-12 points worse and unstable across seeds.
REFERENCE_LR = {"sgd": (0.05, 128), "adamw": (0.003, 64)}
# Below this batch the rate is not scaled down further. fit takes smaller batches only for short
# trainings (`fit_recipe.default_batch_size`), where the linear rule starves training: mobilenetv3_small_050
# on digits, batch 16, 15 epochs, reached 87.4 % test at lr 0.025 and 78.4 % at the scaled 0.00625.
UNSCALED_BELOW = 64


def default_lr(optimizer: str, batch_size: int) -> float:
    """The peak learning rate for `optimizer` at `batch_size` when the user names none."""
    lr, batch = REFERENCE_LR[optimizer]
    return lr * max(batch_size, UNSCALED_BELOW) / batch


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int  # per process; under torchrun each of N ranks takes this many
    lr: float
    weight_decay: float = 0.0
    seed: int = 0
    optimizer: str = "adamw"  # "sgd": momentum 0.9, Nesterov
    schedule: str = "onecycle"  # "cosine": linear warm-up, then cosine to zero
    warmup_fraction: float = 0.15
    ema_decay: float | None = None  # e.g. 0.999: evaluate and return an exponential moving average
    # the average's decay ramps up as (1 + t) / (10 + t) over its first updates (`warmed_up_decay`)
    ema_warmup: bool = True
    clip_grad_norm: float | None = None
    bf16: bool = False  # bfloat16 autocast on the CPU (faster where the CPU has bf16 instructions)
    augmentation: Augmentation | None = None
    # where the step runs (edgekd.distill.accelerator: auto, cpu, cuda, cuda:N, mps); on a GPU the
    # step is mixed-precision. It does not change the recipe, so a checkpoint resumes on any of them.
    accelerator: str = "cpu"
    sync_batchnorm: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch
    # Streamed data only (edgekd.streaming): timm's RandAugment config ("rand-m9-mstd0.5"), and the
    # Beta alphas of timm's batch mixup and cutmix (0: off)
    rand_augment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive: {self}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        check_accelerator_name(self.accelerator, "accelerator")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_accuracy: float
    val_teacher_agreement: float | None  # top-1 agreement with the teacher
    seconds: float
    val_teacher_kl: float | None = None  # KL(teacher ‖ student) at T = 1, mean over images
    val_ece: float = 0.0  # expected calibration error, 15 equal-width confidence bins
    lr: float = 0.0  # at the end of the epoch


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Guo et al., "On Calibration of Modern Neural Networks" (2017): ECE = Σ_b |B_b|/n · |acc(B_b) −
    conf(B_b)| over equal-width bins of the top-1 confidence."""
    confidence, predicted = torch.softmax(logits.float(), 1).max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += float(inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs())
    return ece


def _optimizer(config: TrainConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    from edgekd.catalog import fuses_optimizer_step

    fused = fuses_optimizer_step(parameters) or None  # None: torch's own choice (foreach or per tensor)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _schedule(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    if config.schedule == "cosine":
        warmup = max(1, int(config.warmup_fraction * total_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=config.warmup_fraction
    )


def _rng_state(device: torch.device) -> dict:
    """Every random generator the loop draws from, as tensors and plain numbers only, so the
    checkpoint loads with `torch.load(weights_only=True)` (numpy's state tuple would need pickle)."""
    bit_generator, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, mersenne, gauss_next = random.getstate()
    accelerator = {"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
    return {
        **accelerator,
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": list(mersenne), "gauss_next": gauss_next},
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:  # dropout's masks on the GPU come from its generator
        torch.cuda.set_rng_state(state["cuda"], device)
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["bit_generator"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))


def _unusable(checkpoint: Path, why: str) -> CheckpointError:
    why = " ".join(why.split())[:200]  # one line, whatever the underlying error printed
    return CheckpointError(
        f"{checkpoint}: cannot be resumed from: {why}. Delete it to restart this training step from "
        "its first epoch.",
        checkpoint,
        why,
    )


def _save_state(state: dict, path: Path) -> None:
    # Through a Python file: given a path, torch's own writer reports a full disk as a RuntimeError
    # ("unexpected pos"), not as the OSError(ENOSPC) that becomes a DiskFullError.
    with open(path, "wb") as f:
        torch.save(state, f)


def _read_checkpoint(checkpoint: Path) -> dict:
    """The training state in `checkpoint`, loaded with `weights_only=True`: a file holding anything
    but tensors, numbers, strings and containers (a pickle that would run code) is refused unread."""
    import pickle

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = (
            "it holds pickled Python objects besides tensors and numbers, which only an older edgekd or "
            "a file crafted to run code would write; it was not unpickled"
        )
        raise _unusable(checkpoint, why) from e
    except Exception as e:  # torch raises RuntimeError, EOFError, ValueError, ... for a damaged file
        raise _unusable(checkpoint, f"it is damaged or not a training checkpoint ({type(e).__name__})") from e
    if not isinstance(state, dict):
        raise _unusable(checkpoint, f"it holds a {type(state).__name__}, not a training state")
    return state


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over a whole dataset, in order, computed in float32 where the model is
    (the trainer's accelerator, or the CPU) and returned on the CPU."""
    model.eval()
    device = module_device(model)
    logits, labels = [], []
    try:
        for x, y in evaluation_loader(dataset, batch_size, pin_memory=device.type == "cuda"):
            logits.append(model(x.to(device, non_blocking=True)).float().cpu())
            labels.append(torch.as_tensor(y))
    except DataError as e:  # from a worker: its message again, which names the file
        raise worker_error(e) from None
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
    teacher_cache: TeacherOutputCache | None = None,
    checkpoint_dir: Path | None = None,
    observer: Observer | None = None,
    description: str = "train",
) -> list[EpochMetrics]:
    """Fit `model` to `data.train`, evaluating on `data.val` after each epoch.

    With `checkpoint_dir`, the full state (model, loss, optimiser, schedule, EMA, gradient scale, RNG,
    history) is written there atomically after every epoch, and a later call with the same arguments
    resumes after the last complete epoch, reaching the same weights as an uninterrupted run.

    With `teacher_cache` (offline distillation), the teacher's logits for every augmented view are
    computed once up front (each rank its own shard) and read from the cache; a loss that also reads
    the teacher's feature maps still runs the teacher live. Under `torchrun` every rank trains on its
    shard of each batch, the step wrapped by DistributedDataParallel (`edgekd.distill.distributed`);
    rank 0 writes checkpoints and logs.

    The model, the loss's parameters and the teacher train on `config.accelerator` and are moved back
    to where they were (the model: to the CPU, contiguous) before this returns, also on an error.
    """
    observer = observer or SilentObserver()
    world = current_world()
    accelerator = resolve_accelerator(config.accelerator, bf16_on_cpu=config.bf16)
    device = accelerator.device
    teacher_home = module_device(teacher) if teacher is not None else None
    torch.manual_seed(config.seed)
    layout = training_layout(model)
    model.to(device=device, memory_format=layout)
    if teacher is not None:
        teacher.to(device)
    restore_batchnorm = synchronise_batchnorm(model, world, device) if config.sync_batchnorm else None
    try:
        return _train_on(
            accelerator, world, model, data, config, loss, teacher, teacher_cache, checkpoint_dir, observer,
            description,
        )  # fmt: skip
    finally:
        if restore_batchnorm is not None:
            restore_batchnorm()
        # Exporters, checkpoints and callers get the device and layout every other path assumes.
        model.to(device="cpu", memory_format=torch.contiguous_format)
        loss.to("cpu")
        if teacher is not None:
            teacher.to(teacher_home)
        model.eval()


def _train_on(
    accelerator: Accelerator,
    world,
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    loss: DistillLoss,
    teacher: nn.Module | None,
    teacher_cache: TeacherOutputCache | None,
    checkpoint_dir: Path | None,
    observer: Observer,
    description: str,
) -> list[EpochMetrics]:
    device, layout = accelerator.device, training_layout(model)
    # Built before the optimiser: it sizes the loss's own parameters (FitNets adapters), which are
    # trained with the model and checkpointed with it.
    step = DistillStep(model, teacher, loss, data.input_size)
    loss.to(device)
    optimizer = _optimizer(config, [*model.parameters(), *loss.parameters()])
    scaler = accelerator.grad_scaler()
    shard_length = len(shard(torch.arange(len(data.train)), world))
    steps_per_epoch = -(-shard_length // config.batch_size)
    schedule = _schedule(config, optimizer, config.epochs * steps_per_epoch)
    ema = WeightAverage(model, config.ema_decay, config.ema_warmup) if config.ema_decay else None
    history: list[EpochMetrics] = []
    checkpoint = checkpoint_dir / CHECKPOINT if checkpoint_dir else None
    fingerprint = {"config": _recipe(config), "loss_name": loss.name, "world": world.size}
    stream = _stream_recipe(config, loss) if is_streamed(data.train) else None
    if stream is not None:
        fingerprint["stream"] = asdict(stream)  # a decoded run's checkpoint does not resume a streamed one
        if teacher_cache is not None and world.is_main:
            log.info(
                "%s: streamed views are fresh crops, so the teacher runs live on each batch", description
            )
        teacher_cache = None
    if checkpoint is not None and checkpoint.exists():
        state = _read_checkpoint(checkpoint)
        if {k: state.get(k) for k in fingerprint} != fingerprint:
            log.warning("ignoring %s: it was written with another training config or loss", checkpoint)
        else:
            try:
                model.load_state_dict(state["model"])
                loss.load_state_dict(state["loss"])
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state["schedule"])
                if ema is not None:
                    ema.load_state_dict(state["ema"])
                if state.get("scaler") and scaler.is_enabled():
                    scaler.load_state_dict(state["scaler"])
                _set_rng_state(state["rng"], device)
                history = [EpochMetrics(**m) for m in state["history"]]
            except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
                raise _unusable(checkpoint, f"it does not fit this training ({type(e).__name__}: {e})") from e
            log.info("%s: resuming after epoch %d from %s", description, len(history), checkpoint)
    # After the checkpoint is loaded: DDP broadcasts rank 0's weights to every rank when it wraps.
    trained = data_parallel(step, world, device)
    if world.is_main:  # the CPU in float32, as before accelerators, goes without saying
        plain = accelerator == Accelerator(torch.device("cpu"))
        log.log(logging.DEBUG if plain else logging.INFO, "%s on %s", description, accelerator.describe())
    augmentation = config.augmentation
    if teacher is not None:
        teacher.eval()
        val_teacher_logits = predict(teacher, data.val, config.batch_size)[0]
    if teacher_cache is not None:
        if augmentation is None or teacher_cache.key.draws != augmentation.draws:
            raise ValueError("a teacher cache needs the augmentation it was keyed with (same draws)")
        mine = shard(torch.arange(len(data.train)), world).unique().numpy()
        teacher_cache.fill(
            teacher, data.train, augmentation, indices=mine, observer=observer, accelerator=accelerator
        )
        barrier(world)
    parameters = [*model.parameters(), *loss.parameters()]
    # Reading the loss back from a GPU waits for the step to finish; there it is read every few steps.
    report_every = 1 if device.type == "cpu" else 25
    batches = TrainingBatches(
        data.train,
        config.batch_size,
        augmentation,
        stream,
        data.num_classes,
        pin_memory=device.type == "cuda",
    )

    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        draw = augmentation.draw_for_epoch(epoch) if augmentation else 0
        # The shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
        order = torch.randperm(
            len(data.train), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        )
        mine = shard(order, world)
        task = observer.task(f"{description} epoch {epoch}/{config.epochs}", total=steps_per_epoch)
        total_loss, seen, unreported = torch.zeros((), dtype=torch.float64, device=device), 0, 0
        for indices, x, y in batches.epoch(mine, epoch, draw):
            x = accelerator.to_device(x).contiguous(memory_format=layout)
            y = accelerator.to_device(y)
            cached = teacher_cache.lookup(indices, draw) if teacher_cache is not None else None
            if cached is not None:
                cached = accelerator.to_device(cached)
            with accelerator.autocast():
                value = trained(x, y, cached)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            if config.clip_grad_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
                nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            if ema is not None:
                ema.update()
            total_loss += value.detach().double() * len(y)
            seen += len(y)
            unreported += 1
            if unreported == report_every or seen == len(mine):
                task.advance(unreported, loss=float(total_loss) / seen)
                unreported = 0
        task.close()
        share_buffers_from_main(model, world)
        if ema is not None:
            # The average took each rank's own BatchNorm statistics after every step: rank 0's on
            # every rank, or the ranks would score (and the search decide on) different models.
            share_buffers_from_main(ema.holder, world)
        evaluated = ema.module if ema is not None else model
        val_logits, val_labels = predict(evaluated, data.val, config.batch_size)
        agreement = kl = None
        if teacher is not None:
            agreement = float((val_logits.argmax(1) == val_teacher_logits.argmax(1)).float().mean())
            kl = float(
                F.kl_div(
                    F.log_softmax(val_logits, 1),
                    F.log_softmax(val_teacher_logits, 1),
                    reduction="batchmean",
                    log_target=True,
                )
            )
        metrics = EpochMetrics(
            epoch,
            average(float(total_loss) / seen, world),
            accuracy(val_logits, val_labels),
            agreement,
            time.perf_counter() - started,
            kl,
            expected_calibration_error(val_logits, val_labels),
            schedule.get_last_lr()[0],
        )
        history.append(metrics)
        if world.is_main:
            log.info(
                "%s epoch %d: loss %.4f, val accuracy %.4f",
                description,
                epoch,
                metrics.train_loss,
                metrics.val_accuracy,
            )
        if checkpoint is not None and world.is_main:
            state = {
                **fingerprint,
                "model": model.state_dict(),
                "loss": loss.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict(),
                "rng": _rng_state(device),
                "history": [asdict(m) for m in history],
            }
            # write_with names a full disk (or any write failure) as one FileSystemError about `checkpoint`.
            write_with(checkpoint, lambda tmp, state=state: _save_state(state, tmp))
        barrier(world)
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return history


def _stream_recipe(config: TrainConfig, loss: DistillLoss) -> StreamRecipe:
    """How a streamed training set's views are made: the replayed views' flip decision, timm's crops,
    and the config's RandAugment and mixup."""
    if (config.mixup or config.cutmix) and "dkd" in loss.name:
        raise ValueError("dkd needs hard labels (its target class); mixup and cutmix give mixed ones")
    hflip = config.augmentation.hflip if config.augmentation is not None else False
    return StreamRecipe(
        hflip=hflip,
        rand_augment=config.rand_augment,
        mixup=config.mixup,
        cutmix=config.cutmix,
        seed=config.seed,
    )


def _recipe(config: TrainConfig) -> dict:
    """What a checkpoint must have been trained with to be resumed: the config without where it ran,
    and without the options left at defaults that older checkpoints did not record."""
    recipe = asdict(config)
    del recipe["accelerator"]
    if config.ema_warmup:  # the default, which older checkpoints did not record
        del recipe["ema_warmup"]
    for name in ("sync_batchnorm", "rand_augment", "mixup", "cutmix"):  # unrecorded while at their defaults
        if not recipe[name]:
            del recipe[name]
    return recipe
