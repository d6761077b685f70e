"""A model with no BatchNorm, so N ranks with batch b and one process with batch N·b take identical
steps (BatchNorm would see different batch statistics per rank)."""

import torch
import torch.nn as nn


def tiny_digits_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10)
    )
