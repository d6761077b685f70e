"""Data-parallel training across processes: what the trainer needs from torch.distributed, in one place.

Started by `torchrun`, every process (rank) trains the same model on its own share of each batch and
`torch.nn.parallel.DistributedDataParallel` averages the gradients over the ranks during backward
(bucketed, overlapped with the backward pass), so N ranks with batch b each take the same steps as one
process with batch N x b. What DDP wraps is the trainer's `edgekd.distill.features.DistillStep`: the
student, its feature taps and the loss with its adapters in one module whose forward returns the
batch's loss, so every trained parameter is reduced. BatchNorm statistics are rank 0's, broadcast by
DDP before each forward; with `sync_batchnorm` (CUDA only, as torch's SyncBatchNorm is) they are
computed over the whole global batch instead. Without torchrun the world is one process and nothing
changes.

    torchrun --standalone --nproc_per_node 2 -m edgekd fit ...                 # one machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m edgekd fit ...                          # two machines

gloo carries CPU tensors; when the process has a GPU, NCCL carries CUDA tensors beside it.

Example:
    >>> from edgekd.distill.distributed import current_world
    >>> current_world().size
    1
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgekd.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The process group torchrun set up (joined on first use), or a world of one."""
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World(0, 1)
    if not dist.is_initialized():
        # Both on a GPU machine: the objects the ranks share (the run directory, the search's
        # choice) and a `--accelerator cpu` run travel on gloo, CUDA gradients on NCCL.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    return World(dist.get_rank(), dist.get_world_size())


def shard(order: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's samples of an epoch's `order`, as torch's DistributedSampler picks them (without
    its own shuffle: the order is the trainer's): padded by wrapping around to a multiple of the
    world size, then every N-th from position r. Rank r's batch k of b is then order[k·N·b : (k+1)·N·b]
    [r::N], so the ranks' batches together are one process's batch of N·b, and every rank takes the
    same number of steps."""
    if not world.distributed:
        return order
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(len(order)), num_replicas=world.size, rank=world.rank, shuffle=False)
    return order[torch.as_tensor(list(sampler), dtype=torch.long)]


def data_parallel(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`module` wrapped by DistributedDataParallel in a distributed world (its parameters and
    buffers are broadcast from rank 0 here, so every rank starts from the same weights); as it is
    otherwise."""
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    log.info("rank %d trains in DistributedDataParallel on %s", world.rank, device)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def share_buffers_from_main(module: nn.Module, world: World) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank. DDP broadcasts them before each forward,
    but the last step's forward then updates each rank's copy from its own shard: without this, the
    ranks would evaluate, checkpoint and return different models (and a teacher trained so would key
    its output cache differently on each rank)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def synchronise_batchnorm(model: nn.Module, world: World, device: torch.device) -> Callable[[], None]:
    """Swap every BatchNorm of `model` for a SyncBatchNorm that shares its parameters and buffers, so
    that training normalises over the global batch; return the call that swaps the originals back
    (with the trained tensors), which the exporters need. A no-op in a world of one. timm's converter
    keeps its fused norm + activation layers whole."""
    if not world.distributed:
        return lambda: None
    if device.type != "cuda":
        raise ConfigError(
            f"--sync-batchnorm needs CUDA: torch's SyncBatchNorm has no {device.type} kernels. Train "
            "with --accelerator cuda, or drop --sync-batchnorm (DDP then uses rank 0's statistics)."
        )
    from timm.layers import convert_sync_batchnorm

    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                setattr(parent, name, convert_sync_batchnorm(child))
                swapped.append((parent, name, child))

    def restore() -> None:
        for parent, name, original in reversed(swapped):
            synced = getattr(parent, name)
            original._parameters.update(synced._parameters)
            original._buffers.update(synced._buffers)
            original.train(synced.training)
            setattr(parent, name, original)

    return restore


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def share_from_main(value, world: World):
    """Rank 0's `value` on every rank (any picklable object, e.g. the run directory rank 0 created)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_clock(world: World) -> Callable[[], float]:
    """A `time.perf_counter` that reads rank 0's clock on every rank, for decisions on elapsed time
    (a search budget in seconds) that every rank must take alike: each rank's own clock could put the
    budget's end between them, one rank training on in DDP while the other stopped. A collective:
    every rank calls it at the same points."""
    import time

    return lambda: share_from_main(time.perf_counter(), world)


def average(value: float, world: World) -> float:
    """The mean of a per-rank scalar over all ranks (for logging the epoch's loss)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / world.size
