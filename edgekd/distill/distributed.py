"""Data-parallel training across processes: what the trainer needs from torch.distributed, in one place.

Started by `torchrun`, every process (rank) trains the same model on its own share of each batch and
the gradients are averaged over the ranks before each step, so N ranks with batch b each take the same
steps as one process with batch N x b. That is DistributedDataParallel's contract; the averaging is
done here explicitly (one flattened all-reduce after backward) rather than by wrapping the model,
because feature losses call timm's `forward_intermediates`, which the DDP wrapper does not expose, and
the FitNets adapters that must be averaged too live in the loss, outside the model. BatchNorm
statistics are averaged at the end of each epoch. Without torchrun the world is one process and
nothing changes.

    torchrun --standalone --nproc_per_node 2 -m edgekd fit ...                 # one machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m edgekd fit ...                          # two machines

gloo is used on CPU, NCCL when the process has a GPU.

Example:
    >>> from edgekd.distill.distributed import current_world
    >>> current_world().size
    1
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

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
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    return World(dist.get_rank(), dist.get_world_size())


def shard(order: torch.Tensor, world: World, batch_size: int) -> torch.Tensor:
    """This rank's samples of an epoch's order: batch k of rank r holds order[k·N·b : (k+1)·N·b][r::N],
    so the ranks' batches together are exactly one process's batch of N·b. The order is padded by
    wrapping around until it divides evenly, as DistributedSampler does, so every rank takes the same
    number of steps."""
    if not world.distributed:
        return order
    global_batch = batch_size * world.size
    padded_length = -(-len(order) // global_batch) * global_batch
    padded = torch.cat([order, order[: padded_length - len(order)]]) if padded_length > len(order) else order
    return padded.view(-1, global_batch)[:, world.rank :: world.size].reshape(-1)


def average_gradients(parameters: list[torch.nn.Parameter], world: World) -> None:
    """Replace every gradient by its mean over the ranks, in one collective call."""
    if not world.distributed:
        return
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world.size
    for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(reduced)


def average_buffers(model: nn.Module, world: World) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world.size


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


def average(value: float, world: World) -> float:
    """The mean of a per-rank scalar over all ranks (for logging the epoch's loss)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / world.size
