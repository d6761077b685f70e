"""Every loss against a NumPy computation written from its paper's formula, plus the properties the papers
state (DKD's decomposition of KD, the invariances of DIST, AT, RKD and SP), composition and spec errors."""

import re

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from edgekd.distill.losses import LOSSES, DistillOutputs, WeightedSum, make_loss, parse_loss_specs
from edgekd.errors import ConfigError, EdgeKDError, UnknownNameError

ALL_LOSSES = {"ce", "kd", "logit_mse", "dkd", "dist", "fitnet", "at", "rkd", "sp"}


# --- NumPy references, one per paper --------------------------------------------------------------


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _softmax(x):
    return np.exp(_log_softmax(x))


def numpy_ce(student, labels, smoothing=0.0):
    classes = student.shape[1]
    q = (1 - smoothing) * np.eye(classes)[labels] + smoothing / classes
    return -(q * _log_softmax(student)).sum(axis=1).mean()


def numpy_hinton(student, teacher, labels, temperature, alpha):
    """sum_i p_t log(p_t/p_s) averaged over the batch, times T², plus CE."""
    log_ps = _log_softmax(student / temperature)
    log_pt = _log_softmax(teacher / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    return alpha * temperature**2 * kl + (1 - alpha) * numpy_ce(student, labels)


def numpy_logit_mse(student, teacher):
    return 0.5 * ((student - teacher) ** 2).sum(axis=1).mean()


def numpy_dkd(student, teacher, labels, temperature, alpha, beta):
    """From the paper's definitions: b = [p_t, 1 − p_t]; p̂_i = p_i / (1 − p_t) over the classes i ≠ t."""
    total = 0.0
    for s, t, y in zip(student, teacher, labels):
        ps, pt = _softmax(s[None] / temperature)[0], _softmax(t[None] / temperature)[0]
        bs, bt = np.array([ps[y], 1 - ps[y]]), np.array([pt[y], 1 - pt[y]])
        tckd = (bt * np.log(bt / bs)).sum()
        others = np.arange(len(s)) != y
        hs, ht = ps[others] / (1 - ps[y]), pt[others] / (1 - pt[y])
        nckd = (ht * np.log(ht / hs)).sum()
        total += alpha * tckd + beta * nckd
    return temperature**2 * total / len(labels)


def numpy_dist(student, teacher, temperature, beta, gamma):
    """Pearson's r from SciPy, one row (inter-class) or one column (intra-class) at a time."""
    ys, yt = _softmax(student / temperature), _softmax(teacher / temperature)
    inter = 1 - np.mean([pearsonr(ys[i], yt[i]).statistic for i in range(len(ys))])
    intra = 1 - np.mean([pearsonr(ys[:, j], yt[:, j]).statistic for j in range(ys.shape[1])])
    return beta * temperature**2 * inter + gamma * temperature**2 * intra


def numpy_fitnet(student_maps, teacher_maps, weights, biases):
    terms = []
    for s, t, w, b in zip(student_maps, teacher_maps, weights, biases):
        adapted = np.einsum("oc,nchw->nohw", w, s) + b[None, :, None, None]
        terms.append(((adapted - t) ** 2).mean())
    return np.mean(terms)


def numpy_at(student_maps, teacher_maps, beta, p):
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        qs = (np.abs(s) ** p).sum(axis=1).reshape(len(s), -1)
        qt = (np.abs(t) ** p).sum(axis=1).reshape(len(t), -1)
        qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
        qt = qt / np.linalg.norm(qt, axis=1, keepdims=True)
        total += ((qs - qt) ** 2).sum(axis=1).mean() / qs.shape[1]  # β is divided by N·H·W
    return beta / 2 * total


def _huber(x):
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def _psi_d(e):
    n = len(e)
    d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
    mu = sum(d[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return d / mu


def _psi_a(e):
    n = len(e)
    a = np.zeros((n, n, n))
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if i != j and k != j:
                    u, v = e[i] - e[j], e[k] - e[j]
                    a[i, j, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return a


def numpy_rkd(student, teacher, distance_weight, angle_weight):
    distance = _huber(_psi_d(student) - _psi_d(teacher)).mean()
    angle = _huber(_psi_a(student) - _psi_a(teacher)).mean()
    return distance_weight * distance + angle_weight * angle


def numpy_sp(student_maps, teacher_maps, gamma):
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        gs, gt = (q @ q.T for q in (s.reshape(len(s), -1), t.reshape(len(t), -1)))
        gs = gs / np.linalg.norm(gs, axis=1, keepdims=True)
        gt = gt / np.linalg.norm(gt, axis=1, keepdims=True)
        total += ((gt - gs) ** 2).sum() / len(s) ** 2
    return gamma * total


# --- inputs ----------------------------------------------------------------------------------------

RNG = np.random.default_rng(1)
N, C = 6, 5
STUDENT = RNG.normal(size=(N, C)) * 3
TEACHER = RNG.normal(size=(N, C)) * 3
LABELS = RNG.integers(0, C, size=N)
# Two taps whose maps differ in channels between student and teacher, on the same grid.
S_MAPS = [RNG.normal(size=(N, 3, 4, 4)), RNG.normal(size=(N, 5, 2, 2))]
T_MAPS = [RNG.normal(size=(N, 4, 4, 4)), RNG.normal(size=(N, 7, 2, 2))]
S_EMB, T_EMB = RNG.normal(size=(N, 6)), RNG.normal(size=(N, 10))


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def _outputs(student=STUDENT, s_maps=S_MAPS, s_emb=S_EMB, grad=False, teacher=True):
    student_features = [_t(m, grad) for m in s_maps]
    if not teacher:
        return DistillOutputs(_t(student, grad), torch.tensor(LABELS), student_features=student_features)
    return DistillOutputs(
        _t(student, grad),
        torch.tensor(LABELS),
        _t(TEACHER),
        student_features,
        [_t(m) for m in T_MAPS],
        _t(s_emb, grad),
        _t(T_EMB),
    )


def _built(name, **params):
    loss = make_loss(name, **params)
    loss.prepare([m.shape[1] for m in S_MAPS], [m.shape[1] for m in T_MAPS])
    return loss.double()


# --- each loss against its NumPy reference ---------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ce_matches_numpy(smoothing):
    got = make_loss("ce", label_smoothing=smoothing)(_outputs())
    assert float(got) == pytest.approx(numpy_ce(STUDENT, LABELS, smoothing), rel=1e-12)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (8.0, 1.0), (2.0, 0.0)])
def test_hinton_kd_matches_numpy(temperature, alpha):
    got = make_loss("kd", temperature=temperature, alpha=alpha)(_outputs())
    assert float(got) == pytest.approx(numpy_hinton(STUDENT, TEACHER, LABELS, temperature, alpha), rel=1e-10)


@pytest.mark.parametrize("temperature,alpha", [(2.0, 1.0), (4.0, 0.9)])
def test_standardized_kd_matches_numpy(temperature, alpha):
    """Logit standardisation (Sun et al. 2024): the KL term on each row's z-score, the CE on raw logits."""

    def zscore(x):
        return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)

    got = make_loss("kd", temperature=temperature, alpha=alpha, standardize=True)(_outputs())
    kl = numpy_hinton(zscore(STUDENT), zscore(TEACHER), LABELS, temperature, 1.0)
    expected = alpha * kl + (1 - alpha) * numpy_ce(STUDENT, LABELS)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_standardized_kd_ignores_the_scale_and_shift_of_either_sides_logits():
    base = make_loss("kd", temperature=2.0, alpha=1.0, standardize=True)
    moved = DistillOutputs(
        _t(3.0 * STUDENT + 5.0), torch.tensor(LABELS), teacher_logits=_t(0.5 * TEACHER - 2.0)
    )
    assert float(base(moved)) == pytest.approx(float(base(_outputs())), rel=1e-10)
    assert float(make_loss("kd", temperature=2.0, alpha=1.0)(moved)) != pytest.approx(
        float(base(moved)), rel=1e-3
    )


def test_logit_mse_matches_numpy():
    assert float(make_loss("logit_mse")(_outputs())) == pytest.approx(numpy_logit_mse(STUDENT, TEACHER))


@pytest.mark.parametrize("temperature,alpha,beta", [(4.0, 1.0, 8.0), (1.0, 0.5, 0.5), (2.0, 0.0, 1.0)])
def test_dkd_matches_numpy(temperature, alpha, beta):
    loss = make_loss("dkd", temperature=temperature, tckd_weight=alpha, nckd_weight=beta)
    expected = numpy_dkd(STUDENT, TEACHER, LABELS, temperature, alpha, beta)
    assert float(loss(_outputs())) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("temperature,beta,gamma", [(1.0, 1.0, 1.0), (4.0, 2.0, 2.0), (2.0, 0.5, 0.0)])
def test_dist_matches_scipy_pearson(temperature, beta, gamma):
    loss = make_loss("dist", temperature=temperature, inter_weight=beta, intra_weight=gamma)
    expected = numpy_dist(STUDENT, TEACHER, temperature, beta, gamma)
    assert float(loss(_outputs())) == pytest.approx(expected, rel=1e-10)


def test_fitnet_matches_numpy_with_its_adapters():
    loss = _built("fitnet")
    weights = [a.weight.detach().numpy()[:, :, 0, 0] for a in loss.adapters]
    biases = [a.bias.detach().numpy() for a in loss.adapters]
    expected = numpy_fitnet(S_MAPS, T_MAPS, weights, biases)
    assert float(loss(_outputs())) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("power", [2.0, 1.0, 3.0])
def test_attention_transfer_matches_numpy(power):
    got = make_loss("at", beta=1000.0, power=power)(_outputs())
    assert float(got) == pytest.approx(numpy_at(S_MAPS, T_MAPS, 1000.0, power), rel=1e-10)


def test_rkd_matches_numpy():
    got = make_loss("rkd", distance_weight=25.0, angle_weight=50.0)(_outputs())
    assert float(got) == pytest.approx(numpy_rkd(S_EMB, T_EMB, 25.0, 50.0), rel=1e-10)


def test_sp_matches_numpy():
    got = make_loss("sp", gamma=3000.0)(_outputs())
    assert float(got) == pytest.approx(numpy_sp(S_MAPS, T_MAPS, 3000.0), rel=1e-10)


def test_paper_defaults():
    dkd, dist, at, rkd, sp = (make_loss(n) for n in ("dkd", "dist", "at", "rkd", "sp"))
    assert (dkd.tckd_weight, dkd.nckd_weight, dkd.temperature) == (1.0, 8.0, 4.0)
    assert (dist.inter_weight, dist.intra_weight, dist.temperature) == (1.0, 1.0, 1.0)
    assert (at.beta, at.power) == (1000.0, 2.0)
    assert (rkd.distance_weight, rkd.angle_weight) == (25.0, 50.0)
    assert sp.gamma == 3000.0


# --- properties the papers state -------------------------------------------------------------------


@pytest.mark.parametrize("sample", range(N))
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_decomposes_classical_kd(sample, temperature):
    """Zhao et al., eq. 7: KD = TCKD + (1 − p_t^T) · NCKD. So on one sample, DKD with α = 1 and
    β = 1 − p_t^T (the teacher's non-target mass) is Hinton's soft term exactly."""
    one = DistillOutputs(
        _t(STUDENT[sample : sample + 1]),
        torch.tensor(LABELS[sample : sample + 1]),
        _t(TEACHER[sample : sample + 1]),
    )
    p_target = _softmax(TEACHER[sample : sample + 1] / temperature)[0, LABELS[sample]]
    dkd = make_loss("dkd", temperature=temperature, tckd_weight=1.0, nckd_weight=1 - p_target)
    kd = make_loss("kd", temperature=temperature, alpha=1.0)
    assert float(dkd(one)) == pytest.approx(float(kd(one)), rel=1e-10)


def test_kd_dkd_dist_and_logit_mse_vanish_when_the_student_is_the_teacher():
    same = _outputs(student=TEACHER)
    losses = [make_loss("kd", alpha=1.0), make_loss("dkd"), make_loss("logit_mse")]
    losses += [make_loss("dist", temperature=t) for t in (1.0, 4.0)]
    for loss in losses:
        assert float(loss(same)) == pytest.approx(0.0, abs=1e-12), loss.name


def _affine_probabilities(logits, scale, shift):
    """Logits whose softmax is scale · softmax(logits) + shift: still a distribution when
    scale + C · shift = 1, with every probability positive."""
    return np.log(scale * _softmax(logits) + shift)


@pytest.mark.parametrize("scale", [0.3, 0.6, 0.95])
def test_dist_is_invariant_to_scaling_and_shifting_the_students_probabilities(scale):
    """Pearson's r is invariant to a positive affine map, so a student and a less sure one (its
    probabilities mixed with the uniform distribution) lose the same under DIST (at τ = 1, where the
    logits' softmax is the compared distribution); KD tells them apart."""
    shift = (1 - scale) / C
    assert (scale * _softmax(STUDENT) + shift).min() > 0
    moved = _outputs(student=_affine_probabilities(STUDENT, scale, shift))
    assert np.allclose(_softmax(moved.student_logits.numpy()), scale * _softmax(STUDENT) + shift)
    dist, kd = make_loss("dist"), make_loss("kd", temperature=1.0, alpha=1.0)
    assert float(dist(moved)) == pytest.approx(float(dist(_outputs())), rel=1e-10)
    assert float(kd(moved)) != pytest.approx(float(kd(_outputs())), rel=1e-3)
    # the teacher's own probabilities, scaled and shifted: no loss at all
    same = _outputs(student=_affine_probabilities(TEACHER, scale, shift))
    assert float(dist(same)) == pytest.approx(0.0, abs=1e-12)


def test_dist_on_a_batch_of_one_keeps_the_inter_class_term_and_a_finite_gradient():
    """A single image has no intra-class relation: each class column is one number, constant, so the
    intra-class term is 1 (times γτ²) with no gradient; the inter-class term alone trains."""
    one = DistillOutputs(_t(STUDENT[:1], grad=True), torch.tensor(LABELS[:1]), _t(TEACHER[:1]))
    value = make_loss("dist", inter_weight=1.0, intra_weight=3.0)(one)
    value.backward()
    inter = 1 - pearsonr(_softmax(STUDENT[:1])[0], _softmax(TEACHER[:1])[0]).statistic
    assert float(value) == pytest.approx(inter + 3.0, rel=1e-10)
    assert torch.isfinite(one.student_logits.grad).all() and one.student_logits.grad.abs().sum() > 0


def test_at_is_invariant_to_scaling_a_feature_map():
    at = make_loss("at")
    scaled = _outputs(s_maps=[m * 7.5 for m in S_MAPS])
    assert float(at(scaled)) == pytest.approx(float(at(_outputs())), rel=1e-12)


def _nearest_upsampled(maps):
    return [m.repeat(2, axis=2).repeat(2, axis=3) for m in maps]


def test_at_resizes_the_students_map_to_the_teachers_grid():
    """Bilinear halving (align_corners=False) averages each 2×2 block, so a student map that is the
    teacher's upsampled 2× by repetition has exactly the teacher's attention: the loss is 0."""
    at = make_loss("at")
    outputs = _outputs(s_maps=_nearest_upsampled(T_MAPS))
    assert outputs.student_features[0].shape[-1] == 2 * outputs.teacher_features[0].shape[-1]
    assert float(at(outputs)) == pytest.approx(0.0, abs=1e-12)


def test_fitnet_resizes_the_adapted_map_to_the_teachers_grid():
    loss = make_loss("fitnet")
    loss.prepare([m.shape[1] for m in T_MAPS], [m.shape[1] for m in T_MAPS])
    loss.double()
    with torch.no_grad():
        for adapter in loss.adapters:  # identity adapters
            adapter.weight.copy_(torch.eye(adapter.weight.shape[0])[:, :, None, None])
            adapter.bias.zero_()
    assert float(loss(_outputs(s_maps=_nearest_upsampled(T_MAPS)))) == pytest.approx(0.0, abs=1e-12)


def _rotation(dim, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


@pytest.mark.parametrize(
    "transform",
    [lambda e: 3.7 * e, lambda e: e + 11.0, lambda e: e @ _rotation(e.shape[1], 0)],
    ids=["scale", "translate", "rotate"],
)
def test_rkd_is_invariant_to_scaling_translating_and_rotating_the_embedding(transform):
    rkd = make_loss("rkd")
    assert float(rkd(_outputs(s_emb=transform(S_EMB)))) == pytest.approx(float(rkd(_outputs())), rel=1e-10)


def test_rkd_vanishes_for_a_scaled_copy_of_the_teachers_embedding():
    assert float(make_loss("rkd")(_outputs(s_emb=0.1 * T_EMB))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("batch", [1, 2])
def test_rkd_on_tiny_batches_has_no_relations_to_transfer(batch):
    one = DistillOutputs(
        _t(STUDENT[:batch]),
        torch.tensor(LABELS[:batch]),
        student_embedding=_t(S_EMB[:batch], grad=True),
        teacher_embedding=_t(T_EMB[:batch]),
    )
    value = make_loss("rkd")(one)
    value.backward()
    assert float(value) == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(one.student_embedding.grad).all()


@pytest.mark.parametrize(
    "transform",
    [lambda m: 5.0 * m, lambda m: m[:, ::-1].copy()],
    ids=["scale", "permute-channels"],
)
def test_sp_is_invariant_to_scaling_and_permuting_channels(transform):
    sp = make_loss("sp")
    transformed = _outputs(s_maps=[transform(m) for m in S_MAPS])
    assert float(sp(transformed)) == pytest.approx(float(sp(_outputs())), rel=1e-10)


# --- the registry: every loss ----------------------------------------------------------------------


def test_registry_holds_every_loss():
    assert set(LOSSES.names()) == ALL_LOSSES


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_docstring_cites_a_paper_with_its_formula(name):
    doc = LOSSES.get(name).__doc__
    assert re.search(r"\b(19|20)\d\d\b", doc) and "L = " in doc


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradient_reaches_the_student_only(name):
    loss = _built(name)
    outputs = _outputs(grad=True)
    value = loss(outputs)
    value.backward()
    read = [outputs.student_logits]
    if loss.needs_features:
        read = list(outputs.student_features)
    elif loss.needs_embedding:
        read = [outputs.student_embedding]
    for tensor in read:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    teacher = [outputs.teacher_logits, *outputs.teacher_features, outputs.teacher_embedding]
    assert all(not t.requires_grad and t.grad is None for t in teacher)
    for parameter in loss.parameters():  # FitNets adapters learn with the student
        assert parameter.grad is not None


@pytest.mark.parametrize("name", sorted(n for n in ALL_LOSSES if LOSSES.get(n).needs_teacher))
def test_a_loss_that_needs_the_teacher_says_so_without_it(name):
    with pytest.raises(ConfigError, match=name):
        _built(name)(_outputs(teacher=False))


def test_ce_needs_no_teacher():
    assert not make_loss("ce").needs_teacher
    assert float(make_loss("ce")(_outputs(teacher=False))) == pytest.approx(numpy_ce(STUDENT, LABELS))


def test_fitnet_needs_prepare_and_one_teacher_tap_per_student_tap():
    with pytest.raises(EdgeKDError, match="prepare"):
        make_loss("fitnet")(_outputs())
    with pytest.raises(EdgeKDError, match="one teacher tap per student tap"):
        make_loss("fitnet").prepare([8, 16], [32])


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("kd", {"temperature": 0}, "temperature"),
        ("kd", {"alpha": 1.5}, "alpha"),
        ("ce", {"label_smoothing": 1.0}, "label_smoothing"),
        ("dkd", {"nckd_weight": -1.0}, "nckd_weight"),
        ("dist", {"temperature": -1.0}, "temperature"),
        ("dist", {"intra_weight": float("nan")}, "intra_weight"),
        ("at", {"power": 0.0}, "power"),
        ("rkd", {"angle_weight": float("inf")}, "angle_weight"),
        ("kd", {"tempreature": 2.0}, "Did you mean 'temperature'"),
        ("fitnet", {"alpha": 0.5}, "no parameter 'alpha'"),
    ],
)
def test_bad_hyperparameters_raise_config_errors(name, params, message):
    with pytest.raises(ConfigError, match=message):
        make_loss(name, **params)


def test_unknown_loss_name_suggests_close_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'dkd'"):
        make_loss("dkdd")


# --- composition -----------------------------------------------------------------------------------


def test_weighted_sum_matches_numpy_and_routes_shared_parameters():
    loss = parse_loss_specs(["kd:1.0", "logit_mse:0.5", "rkd:0.25"], temperature=2.0, alpha=0.7)
    expected = (
        numpy_hinton(STUDENT, TEACHER, LABELS, 2.0, 0.7)
        + 0.5 * numpy_logit_mse(STUDENT, TEACHER)
        + 0.25 * numpy_rkd(S_EMB, T_EMB, 25.0, 50.0)
    )
    assert float(loss(_outputs())) == pytest.approx(expected, rel=1e-10)
    assert loss.weights == (1.0, 0.5, 0.25)
    assert (loss.needs_teacher, loss.needs_features, loss.needs_embedding) == (True, False, True)


def test_specs_pass_each_term_only_its_own_parameters():
    loss = parse_loss_specs(["kd", "dkd:2", "ce:0.5"], temperature=3.0, alpha=0.6, label_smoothing=0.1)
    kd, dkd, ce = loss.terms
    assert (kd.temperature, kd.alpha, kd.label_smoothing) == (3.0, 0.6, 0.1)
    assert (dkd.temperature, dkd.tckd_weight) == (3.0, 1.0)  # alpha is kd's, not DKD's α
    assert ce.label_smoothing == 0.1
    assert loss.weights == (1.0, 2.0, 0.5)
    assert loss.name == "kd:1+dkd:2+ce:0.5"


def test_weighted_sum_forwards_prepare_and_checkpoints_the_adapters():
    loss = parse_loss_specs(["kd:1.0", "fitnet:0.5"])
    assert loss.needs_features
    loss.prepare([3, 5], [4, 7])
    assert {k for k in loss.state_dict()} == {
        f"terms.1.adapters.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")
    }
    assert isinstance(loss, WeightedSum) and len(list(loss.parameters())) == 4


@pytest.mark.parametrize(
    "specs,message",
    [
        (["kd:abc"], r"'kd:abc'.*not a number"),
        (["nope:1"], r"'nope:1'.*Valid: at, ce, dist, dkd, fitnet, kd, logit_mse, rkd, sp"),
        (["fitnets:0.5"], r"'fitnets:0.5'.*Did you mean 'fitnet'"),
        (["kd:-1"], r"'kd:-1'.*positive"),
        (["kd:nan"], r"'kd:nan'.*positive"),
        (["kd:1", "kd:2"], r"'kd:2'.*twice"),
        ([], "No loss given"),
    ],
)
def test_bad_specs_raise_config_errors_naming_the_spec(specs, message):
    with pytest.raises(ConfigError, match=message):
        parse_loss_specs(specs)


def test_a_parameter_no_loss_takes_is_a_typo():
    with pytest.raises(ConfigError, match="Did you mean 'temperature'"):
        parse_loss_specs(["kd"], temprature=2.0)
