import dataclasses

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn

from edgekd.augment import Augmentation
from edgekd.distill.cache import TeacherOutputCache
from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import (
    CHECKPOINT,
    TrainConfig,
    accuracy,
    expected_calibration_error,
    predict,
    train,
)
from tests.helpers import subset


@pytest.fixture(scope="module")
def small(digits):
    return dataclasses.replace(digits, train=subset(digits.train, 192), val=subset(digits.val, 64))


def _model(seed=0):
    torch.manual_seed(seed)
    return timm.create_model("lcnet_050", num_classes=10)


class _InterruptAtEpoch:
    """Raises KeyboardInterrupt at the start of the given epoch, as Ctrl-C would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def stage(self, name, detail=""):
        pass

    def task(self, description, total):
        if f"epoch {self.epoch}/" in description:
            raise KeyboardInterrupt
        from edgekd.progress import SilentObserver

        return SilentObserver().task(description, total)


RESUMABLE = {
    "adamw, one-cycle": TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=7),
    "sgd, cosine, ema, clipping, augmentation": TrainConfig(
        epochs=3,
        batch_size=32,
        lr=1e-2,
        seed=7,
        optimizer="sgd",
        schedule="cosine",
        ema_decay=0.9,
        clip_grad_norm=1.0,
        augmentation=Augmentation(draws=2, max_shift=2),
    ),
}


@pytest.mark.parametrize("config", RESUMABLE.values(), ids=RESUMABLE.keys())
def test_resume_after_interruption_reaches_identical_weights(small, tmp_path, config):
    loss = make_loss("ce")
    reference = _model()
    full_history = train(reference, small, config, loss=loss)

    resumed = _model()
    with pytest.raises(KeyboardInterrupt):
        train(resumed, small, config, loss=loss, checkpoint_dir=tmp_path, observer=_InterruptAtEpoch(3))
    assert (tmp_path / CHECKPOINT).exists()
    fresh = _model(seed=123)  # a new process would build the model with other random weights
    history = train(fresh, small, config, loss=loss, checkpoint_dir=tmp_path)
    assert [m.epoch for m in history] == [1, 2, 3]
    for (name, a), b in zip(reference.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert history[-1].train_loss == full_history[-1].train_loss


def _cnn(width, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * width, 10),
    )


@pytest.mark.slow
def test_distillation_learns_and_tracks_teacher_agreement(digits):
    small = digits
    teacher = _cnn(32, seed=1)
    train(teacher, small, TrainConfig(epochs=8, batch_size=32, lr=1e-2), loss=make_loss("ce"))
    teacher_top1 = predict(teacher, small.val)[0].argmax(1)
    student = _cnn(8, seed=2)
    history = train(
        student, small, TrainConfig(epochs=8, batch_size=32, lr=1e-2), loss=make_loss("kd"), teacher=teacher
    )
    student_top1 = predict(student, small.val)[0].argmax(1)
    agreement = float((student_top1 == teacher_top1).float().mean())
    assert history[-1].val_teacher_agreement == pytest.approx(agreement)
    assert history[-1].train_loss < history[0].train_loss
    assert accuracy(*predict(student, small.val)) > 0.8  # chance is 0.1


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True], ids=["decoded digits", "streamed image folder"])
def test_two_process_data_parallel_matches_one_process_with_the_whole_batch(tmp_path, streamed):
    """torchrun with 2 ranks (gloo) at batch 16 each, wrapped by DistributedDataParallel, takes the same
    steps as one process at batch 32; streamed, each rank's DataLoader reads its DistributedSampler
    shard and makes the same random crops the one process makes."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.ddp_train import main as single_process

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "ddp_train.py"), str(tmp_path / "ddp.pt"), "16",
    ]  # fmt: skip
    folder = []
    if streamed:
        from tests.test_streaming import _colour_folder

        folder = [str(_colour_folder(tmp_path / "colours", per_class=40))]
        command += folder
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 trains in DistributedDataParallel on cpu" in done.stderr
    single_process(str(tmp_path / "one.pt"), 32, *folder)
    ddp, one = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "one.pt")
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-4, atol=1e-5)
    import json

    ddp_history = json.loads((tmp_path / "ddp.pt.json").read_text())
    one_history = json.loads((tmp_path / "one.pt.json").read_text())
    assert ddp_history[-1]["val_accuracy"] == pytest.approx(one_history[-1]["val_accuracy"], abs=1 / 64)
    assert ddp_history[-1]["train_loss"] == pytest.approx(one_history[-1]["train_loss"], rel=1e-3)


def test_offline_cache_gives_the_live_teachers_targets(small, tmp_path):
    """Distilling from the cache and from the live teacher, on the same replayed augmentation, lands on
    the same student up to the cache's fp16 rounding of the teacher's logits."""
    teacher = _cnn(16, seed=1)
    train(teacher, small, TrainConfig(epochs=2, batch_size=32, lr=1e-2), loss=make_loss("ce"))
    config = TrainConfig(epochs=2, batch_size=32, lr=3e-3, augmentation=Augmentation(draws=2))
    live, offline = _cnn(8, seed=2), _cnn(8, seed=2)
    live_history = train(live, small, config, loss=make_loss("kd"), teacher=teacher)
    cache = TeacherOutputCache.open(
        tmp_path, teacher, small.fingerprint, config.augmentation, len(small.train), 10
    )
    offline_history = train(
        offline, small, config, loss=make_loss("kd"), teacher=teacher, teacher_cache=cache
    )
    assert cache.complete
    for (name, a), b in zip(live.state_dict().items(), offline.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=2e-3, msg=name)
    assert offline_history[-1].train_loss == pytest.approx(live_history[-1].train_loss, rel=1e-2)


def test_epoch_metrics_match_an_independent_computation(small):
    teacher = _cnn(16, seed=1)
    train(teacher, small, TrainConfig(epochs=1, batch_size=32, lr=1e-2), loss=make_loss("ce"))
    student = _cnn(8, seed=2)
    history = train(
        student, small, TrainConfig(epochs=1, batch_size=32, lr=1e-2), loss=make_loss("kd"), teacher=teacher
    )
    s_logits, labels = (t.double().numpy() for t in predict(student, small.val))
    t_logits = predict(teacher, small.val)[0].double().numpy()

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_s, p_t = softmax(s_logits), softmax(t_logits)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    assert history[-1].val_teacher_kl == pytest.approx(kl, rel=1e-4, abs=1e-6)
    confidence, predicted = p_s.max(1), p_s.argmax(1)
    ece = 0.0
    for b in range(15):
        inside = (confidence > b / 15) & (confidence <= (b + 1) / 15)
        if inside.any():
            ece += inside.mean() * abs(
                (predicted[inside] == labels[inside]).mean() - confidence[inside].mean()
            )
    assert history[-1].val_ece == pytest.approx(ece, abs=1e-5)


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_model():
    labels = torch.tensor([0, 0, 0, 0])
    # confidence 0.75 on class 0 for all four, three right: calibrated, ECE 0
    calibrated = torch.log(torch.tensor([[0.75, 0.25]] * 4))
    assert expected_calibration_error(calibrated, torch.tensor([0, 0, 0, 1])) == pytest.approx(0, abs=1e-6)
    # confidence 0.9, half right: |0.5 - 0.9| = 0.4
    overconfident = torch.log(torch.tensor([[0.9, 0.1]] * 4))
    assert expected_calibration_error(overconfident, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.4)
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.1)


def test_depthwise_students_train_channels_last_and_plain_or_captured_networks_do_not():
    from edgekd.catalog import training_layout

    assert training_layout(_model()) == torch.channels_last  # lcnet: depthwise convolutions
    assert training_layout(_cnn(8, seed=0)) == torch.contiguous_format  # no grouped convolution
    depthwise = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.Flatten())
    assert training_layout(torch.fx.symbolic_trace(depthwise)) == torch.contiguous_format


def test_a_channels_last_step_computes_what_the_contiguous_one_does(small):
    # The layout is a speed choice only: the same batch gives the same loss and gradients.
    x, y = (
        torch.stack([small.train[i][0] for i in range(16)]),
        torch.tensor([small.train[i][1] for i in range(16)]),
    )
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        model = _model().to(memory_format=layout)
        loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=layout)), y)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):  # float32 sums in another order: ~1e-4 apart
        assert torch.linalg.vector_norm(a - b) <= 1e-3 * torch.linalg.vector_norm(a) + 1e-6


def test_training_hands_back_a_model_in_the_contiguous_layout(small):
    model = _model()
    history = train(
        model, small, TrainConfig(epochs=1, batch_size=32, lr=1e-2, optimizer="sgd"), loss=make_loss("ce")
    )
    assert len(history) == 1
    assert all(p.is_contiguous() for p in model.parameters())
    assert not model.training


def test_the_warmed_up_average_follows_the_recurrence_computed_apart():
    """`WeightAverage` against the recurrence in float64 NumPy: after update t the average moves toward
    the weights by 1 - min(decay, (1 + t) / (10 + t)); with 30 updates of weights that walk away from
    their start, the average stays near the walk's end, where a fixed 0.99 stays near the start."""
    import numpy as np

    from edgekd.distill.weight_average import WeightAverage

    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(31, 5)), axis=0) + 10.0 * np.arange(31)[:, None]
    expected = walk[0].copy()
    net = nn.Linear(5, 1, bias=False)
    average = WeightAverage(net, 0.99, warmup=True)
    for t in range(31):
        with torch.no_grad():
            net.weight.copy_(torch.tensor(walk[t], dtype=torch.float32))
        average.update()
        if t:
            weight = 1 - min(0.99, (1 + t) / (10 + t))
            expected = expected + weight * (walk[t] - expected)
    np.testing.assert_allclose(average.module.weight[0].detach().numpy(), expected, rtol=1e-5)
    fixed = walk[0] * 0.99**30 + sum(0.01 * 0.99 ** (30 - t) * walk[t] for t in range(1, 31))
    assert np.all(np.abs(expected - walk[30]) < np.abs(fixed - walk[30]) / 2)


def test_the_weight_average_matches_torchs_averaged_model_and_resumes_from_its_state():
    """The fused update against torch's own `AveragedModel` (use_buffers, its EMA function) over 40
    optimizer steps of a network with BatchNorm: every floating tensor agrees; the batch counters are
    the network's. A second average loaded from the first's state dict halfway continues identically."""
    from edgekd.distill.weight_average import WeightAverage

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    net(torch.zeros(2, 3, 6, 6))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    reference = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True
    )
    fused, resumed = WeightAverage(net, 0.9, warmup=False), None
    for step in range(40):
        x = torch.randn(16, 3, 6, 6)
        loss = net(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        reference.update_parameters(net)
        fused.update()
        if step == 19:
            resumed = WeightAverage(net, 0.9, warmup=False)
            resumed.load_state_dict(fused.state_dict())
        elif resumed is not None:
            resumed.update()
    expected = reference.module.state_dict()
    for average in (fused, resumed):
        for name, value in average.module.state_dict().items():
            if value.is_floating_point():
                torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
            else:
                assert value == net.state_dict()[name] == 41, name  # 40 steps + the lazy layer's sizing pass
        assert int(average.holder.n_averaged) == 40


def test_the_weight_average_averages_batchnorm_statistics_with_the_weights(small):
    """The shipped average holds BatchNorm statistics averaged as its weights are (as timm's ModelEmaV2
    does), not the live network's. With a decay a hair below 1 the average is the network after the
    first step: its statistics are the fresh network's updated once by the first batch, computed here
    apart from the trainer. With a decay near 0 it is the last step's network, the plain run's."""
    import copy

    from edgekd.data import batch_of

    recipe = TrainConfig(epochs=2, batch_size=32, lr=1e-2, optimizer="sgd", seed=3)
    first_step = _model()
    averaged = copy.deepcopy(first_step)
    # the plain recurrence (no warm-up), whose decay near 1 keeps the first step's network
    train(
        averaged,
        small,
        dataclasses.replace(recipe, ema_decay=1 - 1e-9, ema_warmup=False),
        loss=make_loss("ce"),
    )
    order = torch.randperm(len(small.train), generator=torch.Generator().manual_seed(3 * 100_003 + 1))
    first_step.train()
    with torch.no_grad():
        first_step(batch_of(small.train, order[:32])[0])
    checked = 0
    for name, value in first_step.named_buffers():
        if value.is_floating_point():
            assert torch.allclose(averaged.get_buffer(name), value, rtol=1e-4, atol=1e-5), name
            checked += 1
    assert checked > 10

    plain, last = _model(), _model()
    plain_history = train(plain, small, recipe, loss=make_loss("ce"))
    last_history = train(last, small, dataclasses.replace(recipe, ema_decay=1e-9), loss=make_loss("ce"))
    plain_state = plain.state_dict()
    for name, value in last.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, plain_state[name], rtol=1e-5, atol=1e-6), name
    assert last_history[-1].val_accuracy == pytest.approx(plain_history[-1].val_accuracy)


def test_under_torchrun_every_rank_ends_with_rank_0s_weight_average(small, tmp_path):
    """The weight average (`ema_decay`) takes the live network's BatchNorm statistics after each step,
    which each rank updated from its own shard: unshared, the ranks scored and returned different
    students (running means ~1e-3 apart here), and the small-data search, deciding on those
    scores, could send one rank on to train another candidate alone."""
    import os

    import torch.nn as nn

    from tests.helpers import on_two_ranks

    def work(world) -> None:
        os.environ.update(WORLD_SIZE="2", RANK=str(world.rank))  # current_world: the group joined
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(128, 10),
        )  # fmt: skip
        config = TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=3, ema_decay=0.9)
        train(model, small, config, loss=make_loss("ce"))
        torch.save(model.state_dict(), tmp_path / f"rank{world.rank}.pt")

    on_two_ranks(work, tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
