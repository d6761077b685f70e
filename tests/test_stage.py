"""The distillation stage of fit: scheme dispatch, the teacher-output cache per frozen teacher,
quantization-aware fine-tuning, and the plan checks fit runs before anything else."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from edgekd.augment import Augmentation
from edgekd.distill.losses import make_loss
from edgekd.distill.stage import DistillPlan, distil_student
from edgekd.distill.trainer import TrainConfig, accuracy, predict, train
from edgekd.errors import ConfigError
from edgekd.fit_config import FitConfig
from edgekd.fit_recipe import assistant_factory, check_teacher_fits_plan, make_distill_plan
from edgekd.search import choose_assistant
from edgekd.targets import get_target
from tests.helpers import one_torch_thread, subset


@pytest.fixture(scope="module")
def small(digits):
    return dataclasses.replace(digits, train=subset(digits.train, 640), val=subset(digits.val, 128))


def _cnn(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 10),
    )  # fmt: skip


CONFIG = TrainConfig(epochs=4, batch_size=32, lr=2e-2, augmentation=Augmentation(draws=2, max_shift=2))


@pytest.fixture(scope="module")
def teacher(small):
    model = _cnn(24, 0)
    with one_torch_thread():
        train(model, small, dataclasses.replace(CONFIG, epochs=5), loss=make_loss("ce"))
    return model.eval()


def _caches(root: Path) -> list[Path]:
    return sorted((root / "teacher-outputs").iterdir()) if (root / "teacher-outputs").exists() else []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scheme", "steps", "caches"),
    [
        ("offline", {"student"}, 1),
        ("online", {"student"}, 0),  # the teacher trains too: nothing to cache
        ("born-again", {"generation 1", "student"}, 2),  # the teacher, then generation 1
        ("assistant", {"assistant", "student"}, 2),  # the teacher, then the assistant
    ],
)
def test_every_scheme_trains_a_student_and_caches_each_frozen_teacher(
    scheme, steps, caches, small, teacher, tmp_path
):
    before = [p.clone() for p in teacher.parameters()]
    with one_torch_thread():
        result = distil_student(
            lambda: _cnn(8, 1),
            teacher,
            small,
            CONFIG,
            DistillPlan(scheme=scheme),
            make_assistant=lambda: _cnn(16, 2),
            cache_dir=tmp_path / "cache",
            checkpoint_dir=tmp_path / "run",
        )
    assert set(result.steps) == steps and result.history == result.steps["student"]
    assert len(result.history) == CONFIG.epochs
    assert accuracy(*predict(result.student, small.val)) > 0.3  # chance: 0.1
    assert len(_caches(tmp_path / "cache")) == caches
    # the caller's teacher is never changed, even when a copy of it trains (online)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    assert scheme in result.description  # the report's sentence names the scheme that ran


def test_a_loss_that_reads_feature_maps_runs_the_teacher_live_and_fills_no_logits_cache(small, tmp_path):
    """A logits cache is filled only for a loss that reads logits alone: with attention transfer beside
    kd the teacher runs on every batch for its maps, so the step caches nothing (a cache of ~20 s for
    4 views of 6,000 images would be filled and never read); relation terms on embeddings alike."""
    import timm

    assert DistillPlan().caches_teacher and not DistillPlan(teacher_cache=False).caches_teacher
    assert not DistillPlan(loss=("kd", "rkd")).caches_teacher
    plan = DistillPlan(loss=("kd", "at"))
    assert not plan.caches_teacher
    torch.manual_seed(0)
    teacher = timm.create_model("resnet10t", num_classes=10).eval()
    with one_torch_thread():
        result = distil_student(
            lambda: timm.create_model("lcnet_035", num_classes=10),
            teacher,
            small,
            dataclasses.replace(CONFIG, epochs=1),
            plan,
            cache_dir=tmp_path / "cache",
        )
    assert _caches(tmp_path / "cache") == [] and len(result.history) == 1
    assert result.history[0].val_teacher_agreement is not None


@pytest.mark.slow
def test_without_the_cache_the_teacher_runs_live_and_nothing_is_cached(small, teacher, tmp_path):
    with one_torch_thread():
        result = distil_student(
            lambda: _cnn(8, 1),
            teacher,
            small,
            CONFIG,
            DistillPlan(teacher_cache=False),
            cache_dir=tmp_path / "cache",
        )
    assert _caches(tmp_path / "cache") == [] and result.history[-1].val_teacher_agreement is not None


@pytest.mark.slow
def test_an_interrupted_stage_resumes_inside_its_step(small, teacher, tmp_path):
    def run(epochs):
        with one_torch_thread():
            return distil_student(
                lambda: _cnn(8, 1),
                teacher,
                small,
                dataclasses.replace(CONFIG, epochs=epochs),
                DistillPlan(scheme="born-again"),
                cache_dir=tmp_path / "cache",
                checkpoint_dir=tmp_path / "run",
            )

    full = run(3)
    resumed = run(3)  # every step finds its last checkpoint complete
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [m.seconds for m in resumed.history] == [m.seconds for m in full.history]  # not re-trained


@pytest.mark.slow
def test_quantization_aware_fine_tuning_returns_a_trained_qat_model(small, teacher, tmp_path):
    from edgekd.quantize import QATModel

    # 16 channels: with 8, seed 1's student lost 13 points in its quantization-aware epoch on one
    # machine (59 -> 46 %); with 16 it lost at most 3.2 points on seeds 1-4 there.
    with one_torch_thread():
        result = distil_student(
            lambda: _cnn(16, 1), teacher, small, CONFIG, DistillPlan(qat_epochs=1), cache_dir=tmp_path
        )
    assert isinstance(result.quantized, QATModel) and len(result.steps["qat"]) == 1
    # fake-quantized and fine-tuned from the float student: about as accurate, not retrained from scratch
    float_accuracy = accuracy(*predict(result.student, small.val))
    assert accuracy(*predict(result.quantized, small.val)) > float_accuracy - 0.1 > 0.2


def test_plan_errors_name_the_options():
    with pytest.raises(ConfigError, match="Did you mean 'online'"):
        DistillPlan(scheme="onlin")
    with pytest.raises(ConfigError, match="--scheme online .* --loss kd fitnet"):
        DistillPlan(scheme="online", loss=("kd", "fitnet"))
    with pytest.raises(ConfigError, match="needs an assistant"):
        distil_student(lambda: _cnn(4, 0), _cnn(4, 0), None, CONFIG, DistillPlan(scheme="assistant"))


def test_int8_targets_train_quantization_aware_by_default_and_float_ones_refuse_it():
    ethos = [get_target("ethos-u55")]
    assert make_distill_plan(FitConfig.from_options(target="ethos-u55"), ethos).qat_epochs == 2
    assert make_distill_plan(FitConfig.from_options(target="ethos-u55", qat_epochs=0), ethos).qat_epochs == 0
    assert make_distill_plan(FitConfig(), [get_target("pi5")]).qat_epochs == 0
    with pytest.raises(ConfigError, match="--qat-epochs 3: .* pi5 ships fp32"):
        make_distill_plan(FitConfig.from_options(qat_epochs=3), [get_target("pi5")])


def test_an_onnx_teacher_refuses_feature_losses_and_the_online_scheme_before_anything_runs():
    pi5 = get_target("pi5")

    def check(**options):
        config = FitConfig.from_options(teacher="teacher.onnx", **options)
        check_teacher_fits_plan(config, make_distill_plan(config, [pi5]))

    check(loss=("kd", "dkd"))  # logits only: fine
    with pytest.raises(ConfigError, match="--loss fitnet reads the teacher's feature maps"):
        check(loss=("kd", "fitnet"))
    with pytest.raises(ConfigError, match="ONNX teacher teacher.onnx is frozen"):
        check(scheme="online")


def test_the_default_assistant_sits_between_student_and_teacher_in_macs():
    def option(arch, macs):
        return SimpleNamespace(macs=macs, candidate=SimpleNamespace(arch=arch, kwargs={}))

    student = option("tiny", 10**6)
    assessments = [student, option("small", 3 * 10**6), option("middle", 10**7), option("big", 2 * 10**8)]
    # the geometric mean of 1e6 and 1e8 is 1e7; "big" is larger than the teacher
    assert choose_assistant(assessments, student, 10**8).candidate.arch == "middle"
    assert choose_assistant(assessments[:2], student, 10**8).candidate.arch == "small"
    with pytest.raises(ConfigError, match="no catalog model lies between"):
        choose_assistant([student, assessments[-1]], student, 10**8)
    assert assistant_factory(FitConfig(), DistillPlan(), assessments, student, 10**8, 10) is None
