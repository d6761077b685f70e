import pytest
import timm
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from edgekd.analysis import analyze


def test_small_conv_net_by_hand():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 16x16 out: 8*16*16 * 3*3*3 = 55,296 MACs; 216 params
        nn.BatchNorm2d(8),  # 16 params, 0 MACs
        nn.ReLU(),
        nn.Conv2d(
            8, 8, 3, stride=2, padding=1, groups=8
        ),  # depthwise, 8x8 out: 8*8*8 * 1*9 = 4,608; 80 params
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),  # 32 MACs; 36 params
    )
    cost = analyze(net, input_size=16)
    assert cost.macs == 55_296 + 4_608 + 32
    assert cost.params == 216 + 16 + 80 + 36
    assert [layer.kind for layer in cost.layers] == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "Conv2d",
        "AdaptiveAvgPool2d",
        "Linear",
    ]
    assert cost.layers[3].output_shape == (1, 8, 8, 8)


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
