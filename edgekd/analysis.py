"""Static cost of a model, counted from the layers that actually run on an input of the given size.

Example:
    >>> import torch.nn as nn
    >>> from edgekd.analysis import analyze
    >>> analyze(nn.Conv2d(3, 8, 3, padding=1), input_size=4).macs  # 8*4*4 outputs x 3*3*3 each
    3456
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

# Layers whose cost is a product of tensor sizes. Anything else (norms, activations, pooling)
# counts as zero MACs but still as a dispatched operator.
_NOT_DISPATCHED = (nn.Identity, nn.Dropout, nn.Flatten)


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    macs: int
    params: int
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelCost:
    params: int
    macs: int
    input_size: int
    layers: tuple[LayerCost, ...]

    @property
    def dispatched_layers(self) -> int:
        return len(self.layers)

    def weight_bytes(self, precision: str) -> int:
        return self.params * {"fp32": 4, "fp16": 2, "int8": 1}[precision]


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call, per sample."""
    per_sample = output[0].numel()
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = int(torch.tensor(module.kernel_size).prod())
        return per_sample * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


def analyze(model: nn.Module, input_size: int, in_chans: int = 3) -> ModelCost:
    """Run one sample of `input_size`² through `model` and count params and MACs per executed leaf."""
    layers: list[LayerCost] = []

    def record(name: str):
        def hook(module: nn.Module, _inputs, output) -> None:
            if isinstance(module, _NOT_DISPATCHED) or not isinstance(output, torch.Tensor):
                return
            params = sum(p.numel() for p in module.parameters(recurse=False))
            layers.append(
                LayerCost(
                    name, type(module).__name__, layer_macs(module, output), params, tuple(output.shape)
                )
            )

        return hook

    handles = [
        m.register_forward_hook(record(name)) for name, m in model.named_modules() if not list(m.children())
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return ModelCost(params, sum(layer.macs for layer in layers), input_size, tuple(layers))
