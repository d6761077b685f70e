"""Where training runs (`--accelerator`) and in which precision: teacher training, distillation, the
teacher-output cache fill, search trials and quantization-aware training all place their models and
batches through the `Accelerator` resolved here. Export, parity and latency stay on the CPU, whose
runtimes they measure: the trainer moves every model back before it returns.

    auto     CUDA if this process has a GPU, else Apple's MPS, else the CPU
    cpu      the CPU (bfloat16 autocast only when TrainConfig.bf16 asks for it)
    cuda     the first GPU; under torchrun, the GPU of the process's LOCAL_RANK
    cuda:N   GPU N
    mps      Apple's Metal GPU

On an accelerator the step runs under autocast: bfloat16 where the GPU has it (Ampere and later), else
float16 with a gradient scaler, whose dynamic loss scale keeps fp16's small gradients from flushing
to zero. Batches are copied from pinned memory without blocking the host.

Example:
    >>> accelerator = resolve_accelerator("cpu")
    >>> accelerator.device, accelerator.amp_dtype, accelerator.scales_gradients
    (device(type='cpu'), None, False)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgekd.errors import ConfigError, EdgeKDError

log = logging.getLogger(__name__)

ACCELERATORS = ("auto", "cpu", "cuda", "cuda:N", "mps")
_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class Accelerator:
    device: torch.device
    amp_dtype: torch.dtype | None = None  # the autocast type of the step; None: float32 throughout
    scales_gradients: bool = False  # float16 needs a dynamic loss scale (GradScaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is a pass-through unless the step runs in float16."""
        return torch.amp.GradScaler(self.device.type, enabled=self.scales_gradients)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the accelerator. From the CPU to a GPU it goes through pinned (page-locked)
        memory, which lets the copy run asynchronously while the host prepares the next batch."""
        if tensor.device == self.device:
            return tensor
        if self.device.type == "cuda" and tensor.device.type == "cpu":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def describe(self) -> str:
        precision = {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.amp_dtype]
        if self.scales_gradients:
            precision += " with a gradient scaler"
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        return f"{name}, {precision}"


def check_accelerator_name(name: str, option: str = "--accelerator") -> None:
    """Refuse a malformed accelerator name (its availability is checked where training starts)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{option} {name!r} is not one of {', '.join(ACCELERATORS)}.")


def available_accelerators() -> list[str]:
    """What this process can train on, in `--accelerator` names."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def _unavailable(name: str, why: str) -> EdgeKDError:
    return EdgeKDError(
        f"--accelerator {name}: {why}; available here: {', '.join(available_accelerators())} "
        f"(torch {torch.__version__})."
    )


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise _unavailable(name, "this machine has no Apple MPS device")
        return torch.device("mps")
    if not torch.cuda.is_available():
        built = "with" if torch.backends.cuda.is_built() else "without"
        raise _unavailable(name, f"no CUDA device is visible (this torch was built {built} CUDA)")
    # Under torchrun, plain `cuda` gives each process of a node its own GPU.
    index = int(os.environ.get("LOCAL_RANK", "0")) if name == "cuda" else int(name.partition(":")[2])
    if index >= torch.cuda.device_count():
        raise _unavailable(name, f"GPU {index} does not exist ({torch.cuda.device_count()} visible)")
    return torch.device("cuda", index)


def resolve_accelerator(name: str = "cpu", *, bf16_on_cpu: bool = False) -> Accelerator:
    """The device `name` stands for on this machine, with the step's precision there; an
    `EdgeKDError` naming what is available when it is not here."""
    check_accelerator_name(name)
    device = _device(name)
    if device.type == "cpu":
        return Accelerator(device, torch.bfloat16 if bf16_on_cpu else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and the caching allocator work on the current device
        if torch.cuda.is_bf16_supported():
            return Accelerator(device, torch.bfloat16)
    return Accelerator(device, torch.float16, scales_gradients=True)


def module_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its first parameter's or buffer's device; the CPU for a module that
    has neither (an ONNX Runtime teacher, which takes and returns CPU tensors)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
