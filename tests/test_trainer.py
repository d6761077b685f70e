import dataclasses

import pytest
import timm
import torch
from torch.utils.data import TensorDataset

from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import CHECKPOINT, TrainConfig, accuracy, predict, train


@pytest.fixture(scope="module")
def small(digits):
    def subset(ds, n):
        images, labels = ds.tensors
        return TensorDataset(images[:n], labels[:n])

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


def test_resume_after_interruption_reaches_identical_weights(small, tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=7)
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
