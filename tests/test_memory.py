"""The peak-memory estimate against the activation memory of the real converted .tflite, and the arena
planner against a layout worked out by hand."""

import pytest
import torch
import torch.nn as nn

from edgekd.analysis import Buffer, analyze, plan_arena
from edgekd.artifact import Contract
from edgekd.devices.local import measure_tflite_memory
from edgekd.export import export


class _Net(nn.Module):
    """Strided convs with PyTorch padding (explicit PADs in TFLite), a residual add, SE-style gating."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=16)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 32, 1), nn.Hardsigmoid())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        x = self.down(x)
        x = x * self.gate(x)
        return self.head(x.mean((2, 3)))


@pytest.mark.slow
def test_estimate_matches_the_converted_tflite_activation_memory(tmp_path):
    torch.manual_seed(0)
    net = _Net().eval()
    cost = analyze(net, input_size=48)
    contract = Contract("net", "input", (1, 48, 48, 3), "NHWC", (0.0,) * 3, (1.0,) * 3, ())
    artifact = export(net, "tflite", tmp_path, contract=contract)
    measured = measure_tflite_memory(str(artifact.path))
    assert abs(cost.peak_activation_bytes / measured.live_peak_bytes - 1) < 0.02
    assert cost.peak_activation_bytes < cost.peak_activation_bytes_unfused


def test_arena_planner_best_fit_by_hand():
    # a: 100 B over steps 0-1; b: 60 B over 1-2; c: 40 B at 2 (reuses a's space); d: 100 B whole run.
    buffers = [Buffer(100, 0, 1), Buffer(60, 1, 2), Buffer(40, 2, 2), Buffer(100, 0, 3)]
    # d (whole run) at 0, a at 128 (64-byte aligned), b after a at 256, c into a's freed slot at 128.
    assert plan_arena(buffers) == 256 + 60
    assert plan_arena(buffers, alignment=1) == 100 + 100 + 60
