import dataclasses

import numpy as np
import pytest
import torch

from edgekd.distill.losses import DistillOutputs, make_loss
from edgekd.distill.schemes import (
    MutualLoss,
    MutualPair,
    born_again,
    mutual_learning,
    teacher_assistant_chain,
)
from edgekd.distill.trainer import TrainConfig, accuracy, predict, train
from tests.helpers import subset


@pytest.fixture(scope="module")
def small(digits):
    return dataclasses.replace(digits, train=subset(digits.train, 640), val=subset(digits.val, 128))


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


CONFIG = TrainConfig(epochs=6, batch_size=32, lr=1e-2)


def test_mutual_loss_matches_an_independent_computation():
    torch.manual_seed(0)
    pair = MutualPair(torch.nn.Identity(), torch.nn.Identity())
    student, peer, labels = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    pair.peer_logits = peer
    t = 2.0
    value = float(MutualLoss(pair, temperature=t)(DistillOutputs(student, labels)))

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    s, p, y = student.double().numpy(), peer.double().numpy(), labels.numpy()
    ce = -log_softmax(s)[np.arange(5), y].mean() - log_softmax(p)[np.arange(5), y].mean()
    ls, lp = log_softmax(s / t), log_softmax(p / t)
    kl_ps = (np.exp(lp) * (lp - ls)).sum(1).mean()
    kl_sp = (np.exp(ls) * (ls - lp)).sum(1).mean()
    assert value == pytest.approx(ce + t**2 * (kl_ps + kl_sp), rel=1e-5)


@pytest.mark.slow
def test_mutual_learning_trains_both_networks_and_reports_the_student(small):
    student, peer = _cnn(8, 1), _cnn(16, 2)
    before = [p.clone() for p in peer.parameters()]
    history = mutual_learning(student, peer, small, CONFIG)
    assert all(not torch.equal(a, b) for a, b in zip(before, peer.parameters(), strict=True))
    assert history[-1].val_accuracy == pytest.approx(accuracy(*predict(student, small.val)))
    assert accuracy(*predict(peer, small.val)) > 0.5 and history[-1].val_accuracy > 0.5  # chance: 0.1
    assert history[-1].train_loss < history[0].train_loss


@pytest.mark.slow
def test_born_again_generations_each_learn_from_the_last(small):
    teacher = _cnn(16, 0)
    train(teacher, small, CONFIG, loss=make_loss("ce"))
    seeds = iter(range(10, 20))
    final, histories = born_again(lambda: _cnn(8, next(seeds)), teacher, small, CONFIG, generations=2)
    assert len(histories) == 2 and final is not teacher
    assert accuracy(*predict(final, small.val)) > 0.5
    with pytest.raises(ValueError, match="generations"):
        born_again(lambda: _cnn(8, 0), teacher, small, CONFIG, generations=0)


@pytest.mark.slow
def test_assistant_chain_trains_each_step_from_the_previous_model(small):
    teacher, assistant, student = _cnn(32, 0), _cnn(12, 1), _cnn(4, 2)
    train(teacher, small, CONFIG, loss=make_loss("ce"))
    assistant_before = [p.clone() for p in assistant.parameters()]
    histories = teacher_assistant_chain([teacher, assistant, student], small, CONFIG)
    assert len(histories) == 2
    assert all(not torch.equal(a, b) for a, b in zip(assistant_before, assistant.parameters(), strict=True))
    # step 2's agreement is with the assistant, its own teacher
    assistant_top1 = predict(assistant, small.val)[0].argmax(1)
    student_top1 = predict(student, small.val)[0].argmax(1)
    assert histories[1][-1].val_teacher_agreement == pytest.approx(
        float((student_top1 == assistant_top1).float().mean())
    )
    with pytest.raises(ValueError, match="at least a teacher and a student"):
        teacher_assistant_chain([teacher], small, CONFIG)
