import pytest
import timm
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from edgekd.analysis import analyze


def test_small_conv_net_by_hand():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 16x16 out: 8*16*16 * 3*3*3 = 55,296 MACs; 216 params
        nn.BatchNorm2d(8),  # 16 params, 0 MACs, folded into the conv
        nn.ReLU(),  # fused into the conv
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise, 8x8 out: 8*8*8 * 9 = 4,608; 80 params
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # a view: not an op
        nn.Linear(8, 4),  # 32 MACs; 36 params
    )
    cost = analyze(net, input_size=16)
    assert cost.macs == 55_296 + 4_608 + 32
    assert cost.params == 216 + 16 + 80 + 36
    assert [(layer.kind, layer.fused) for layer in cost.layers] == [
        ("conv2d", False),
        ("batch_norm", True),
        ("relu", True),
        ("pad", False),  # stride 2 with PyTorch's (1, 1) padding: TF's SAME would pad (0, 1)
        ("depthwise_conv2d", False),
        ("adaptive_avg_pool", False),
        ("linear", False),
    ]
    assert cost.op_inventory == {
        "conv2d": 1,
        "pad": 1,
        "depthwise_conv2d": 1,
        "adaptive_avg_pool": 1,
        "linear": 1,
    }
    conv, _, _, pad, dw, pool, fc = cost.layers
    assert pad.output_shape == (1, 8, 18, 18)
    assert (conv.params, dw.params, fc.params) == (216, 80, 36)
    assert dw.output_shape == (1, 8, 8, 8)
    assert (conv.input_bytes, conv.output_bytes) == (4 * 3 * 16 * 16, 4 * 8 * 16 * 16)
    assert pool.work == 8 * 8 * 8  # one op per input element of the reduction
    assert fc.work == 2 * 32
    # Deployed, at the PAD: input 3,072 B (live throughout) + conv/bn/relu output 8,192 + padded 10,368.
    assert cost.peak_activation_bytes == 3_072 + 8_192 + 10_368
    # Traced as is: BatchNorm and ReLU each write a new 8,192 B tensor while their input is alive.
    assert cost.peak_activation_bytes_unfused == 3_072 + 8_192 + 8_192
    # The planner cannot do better than the live peak; here no buffer is fragmented.
    assert cost.arena_bytes == cost.peak_activation_bytes
    assert cost.peak_memory_bytes("int8") == cost.params + cost.arena_bytes // 4


class _Residual(nn.Module):
    """x -> conv -> relu_ (in place) -> + x: the skip keeps x alive across the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.conv(x)) + x


def test_residual_peak_counts_the_skip_and_in_place_ops_by_hand():
    cost = analyze(_Residual(), input_size=8, in_chans=4)
    tensor = 4 * 4 * 8 * 8  # every activation here is 4x8x8 fp32 = 1,024 B
    # Deployed: the ReLU fuses into the conv and the ADD writes into the conv's buffer (its last reader).
    assert cost.peak_activation_bytes == 2 * tensor
    # Eager: input + conv output (the in-place ReLU reuses it) + a new tensor for the sum.
    assert cost.peak_activation_bytes_unfused == 3 * tensor
    assert [layer.kind for layer in cost.dispatched] == ["pointwise_conv2d", "add"]


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "lcnet_050", "resnet10t", "mobilenetv2_050"])
def test_conv_and_linear_macs_match_torch_flop_counter(arch):
    model = timm.create_model(arch, num_classes=10).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert analyze(model, 64).macs == counter.get_total_flops() // 2


# Parameter counts (millions, 1000 classes) from timm's published results tables
# (huggingface.co/timm model cards, timm/results/*.csv "param_count").
PUBLISHED_PARAMS_M = {
    "resnet18": 11.69,
    "resnet10t": 5.44,
    "mobilenetv3_small_100": 2.54,
    "mobilenetv2_050": 1.97,
    "lcnet_050": 1.88,
}


@pytest.mark.parametrize("arch,millions", PUBLISHED_PARAMS_M.items())
def test_params_match_timms_published_counts(arch, millions):
    model = timm.create_model(arch)
    assert analyze(model, 32).params / 1e6 == pytest.approx(millions, abs=0.006)
