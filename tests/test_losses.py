import numpy as np
import pytest
import torch

from edgekd.distill.losses import LOSSES, make_loss


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def numpy_hinton(student, teacher, labels, temperature, alpha):
    """Independent computation: sum_i p_t log(p_t/p_s) averaged over the batch, times T², plus CE."""
    log_ps = _log_softmax(student / temperature)
    log_pt = _log_softmax(teacher / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    ce = -_log_softmax(student)[np.arange(len(labels)), labels].mean()
    return alpha * temperature**2 * kl + (1 - alpha) * ce


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (8.0, 1.0), (2.0, 0.0)])
def test_hinton_kd_matches_numpy(temperature, alpha):
    rng = np.random.default_rng(1)
    student = rng.normal(size=(16, 10)) * 3
    teacher = rng.normal(size=(16, 10)) * 3
    labels = rng.integers(0, 10, size=16)
    got = make_loss("kd", temperature=temperature, alpha=alpha)(
        torch.tensor(student), torch.tensor(teacher), torch.tensor(labels)
    )
    assert float(got) == pytest.approx(numpy_hinton(student, teacher, labels, temperature, alpha), rel=1e-10)


def test_kd_is_zero_soft_term_when_student_equals_teacher():
    logits = torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    assert float(make_loss("kd", alpha=1.0)(logits, logits.clone(), labels)) == pytest.approx(0.0, abs=1e-12)


def test_kd_rejects_bad_parameters_and_needs_a_teacher():
    with pytest.raises(ValueError, match="temperature"):
        make_loss("kd", temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        make_loss("kd", alpha=1.5)
    with pytest.raises(ValueError, match="teacher"):
        make_loss("kd")(torch.zeros(2, 3), None, torch.tensor([0, 1]))


def test_registry_lists_losses():
    assert {"ce", "kd"} <= set(LOSSES.names())
