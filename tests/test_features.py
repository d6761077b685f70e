"""Feature taps on small timm models: tap-aligned maps whose channels and strides match `feature_info`,
logits identical to `model(x)`, and the FitNets adapters sized from them."""

import dataclasses

import pytest
import timm
import torch
from torch.utils.data import TensorDataset

from edgekd.distill.features import DistillForward, FeatureTaps, default_taps, feature_channels, pair_taps
from edgekd.distill.losses import make_loss, parse_loss_specs
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import ConfigError, EdgeKDError
from edgekd.progress import SilentObserver

ARCHS = ["resnet10t", "mobilenetv3_small_050", "lcnet_050"]
SIZE = 64


def _model(arch, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(arch, num_classes=10)


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ARCHS)
def test_taps_match_feature_info_and_logits_equal_the_plain_forward(arch, x):
    model = _model(arch).eval()
    info = model.feature_info
    taps = default_taps(model)
    assert taps == [len(info) - 3, len(info) - 2, len(info) - 1]
    out = FeatureTaps(model, taps, embedding=True)(x)
    assert [f.shape[1] for f in out.features] == [info[t]["num_chs"] for t in taps]
    assert [f.shape[-1] for f in out.features] == [SIZE // info[t]["reduction"] for t in taps]
    with torch.no_grad():
        assert torch.equal(out.logits, model(x))
        classifier = model.get_classifier()
        assert out.embedding.shape == (len(x), classifier.in_features)
        assert torch.equal(classifier(out.embedding), out.logits)
    assert feature_channels(model, SIZE, taps) == [info[t]["num_chs"] for t in taps]


def test_negative_taps_count_from_the_end_and_out_of_range_taps_raise(x):
    model = _model("lcnet_050").eval()
    assert FeatureTaps(model, [-1]).taps == [len(model.feature_info) - 1]
    with pytest.raises(ConfigError, match="Tap 5 is out of range"):
        FeatureTaps(model, [5])


def test_the_dry_run_leaves_batch_norm_statistics_and_mode_alone():
    model = _model("lcnet_050").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feature_channels(model, SIZE, [-1])
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Stages(torch.nn.Module):
    """Just enough of a timm model for pairing: `count` stages in feature_info."""

    def __init__(self, count):
        super().__init__()
        self.feature_info = [{"num_chs": 8, "reduction": 2**i, "module": f"s{i}"} for i in range(count)]

    def forward_intermediates(self, x, indices=None):
        raise NotImplementedError


def test_stages_are_paired_from_the_end():
    assert pair_taps(_Stages(5), _Stages(4)) == ([2, 3, 4], [1, 2, 3])
    assert pair_taps(_Stages(5), _Stages(2)) == ([3, 4], [0, 1])
    assert pair_taps(_Stages(6), _Stages(6), num_taps=1) == ([5], [5])


def test_a_model_without_forward_intermediates_still_serves_logit_losses(x):
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(EdgeKDError, match=r"Sequential has no timm forward_intermediates.*kd"):
        FeatureTaps(plain, [-1])
    with pytest.raises(EdgeKDError, match="Sequential"):
        DistillForward(plain, _model("resnet10t").eval(), make_loss("fitnet"), SIZE)
    forward = DistillForward(plain, plain, make_loss("kd"), SIZE)
    assert torch.equal(forward(x, torch.zeros(len(x), dtype=torch.long)).student_logits, plain(x))


def test_a_loss_that_needs_a_teacher_fails_before_training_without_one():
    with pytest.raises(ConfigError, match="'kd:1' needs a teacher"):
        DistillForward(_model("lcnet_050"), None, parse_loss_specs(["kd:1"]), SIZE)


def test_fitnet_adapters_map_student_taps_onto_teacher_taps_and_only_the_student_learns(x):
    student, teacher = _model("mobilenetv3_small_050"), _model("resnet10t", seed=1).eval()
    loss = parse_loss_specs(["kd:1", "fitnet:1", "rkd:1"])
    forward = DistillForward(student, teacher, loss, SIZE)
    fitnet = loss.terms[1]
    s_info, t_info = student.feature_info, teacher.feature_info
    assert [tuple(a.weight.shape) for a in fitnet.adapters] == [
        (t_info[i]["num_chs"], s_info[i]["num_chs"], 1, 1) for i in (2, 3, 4)
    ]
    outputs = forward(x, torch.arange(len(x)))
    assert len(outputs.student_features) == len(outputs.teacher_features) == 3
    assert outputs.student_embedding.shape == (len(x), student.get_classifier().in_features)
    assert outputs.teacher_embedding.shape == (len(x), teacher.get_classifier().in_features)
    assert not any(t.requires_grad for t in (outputs.teacher_logits, *outputs.teacher_features))
    loss(outputs).backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in fitnet.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_logit_losses_skip_the_taps_and_teacher_free_losses_skip_the_teacher(x):
    student = _model("lcnet_050").eval()
    forward = DistillForward(student, _model("resnet10t").eval(), make_loss("ce"), SIZE)
    assert forward.teacher is None
    outputs = forward(x, torch.arange(len(x)))
    assert outputs.teacher_logits is None and not outputs.student_features
    assert torch.equal(outputs.student_logits, student(x))


class _InterruptAtEpoch(SilentObserver):
    """Raises KeyboardInterrupt at the start of the given epoch, as Ctrl-C would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def task(self, description, total):
        if f"epoch {self.epoch}/" in description:
            raise KeyboardInterrupt
        return super().task(description, total)


def test_resume_with_fitnet_restores_the_trained_adapters(digits, tmp_path):
    """The adapters are trained by the optimiser and checkpointed with the student, so an interrupted
    run resumes to the same student and adapters as an uninterrupted one."""
    images, labels = digits.train.tensors
    small = dataclasses.replace(
        digits, train=TensorDataset(images[:128], labels[:128]), val=TensorDataset(images[:32], labels[:32])
    )
    config = TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=3)
    teacher = _model("resnet10t", seed=5).eval()

    def run(checkpoint_dir=None, observer=None, seed=0):
        student, loss = _model("lcnet_050", seed), parse_loss_specs(["kd:1", "fitnet:0.5"])
        train(
            student,
            small,
            config,
            loss=loss,
            teacher=teacher,
            checkpoint_dir=checkpoint_dir,
            observer=observer,
        )
        return student, loss

    reference, reference_loss = run()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, _InterruptAtEpoch(2))
    resumed, resumed_loss = run(tmp_path, seed=123)  # a new process builds other random weights

    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    untrained = make_loss("fitnet")
    torch.manual_seed(config.seed)  # as train() does before building the adapters
    untrained.prepare(feature_channels(reference, 32, [2, 3, 4]), feature_channels(teacher, 32, [2, 3, 4]))
    for (name, a), b in zip(reference_loss.state_dict().items(), resumed_loss.state_dict().values()):
        assert torch.equal(a, b), name
        assert not torch.equal(a, untrained.state_dict()[name.removeprefix("terms.1.")]), (
            f"{name} is untrained"
        )
