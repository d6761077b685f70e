"""Where training runs (`--accelerator`). No GPU here: every device-placement path of the trainer runs
on the CPU (`accelerator="cpu"`), the float16 autocast + gradient-scaler path that a GPU without
bfloat16 takes runs on the CPU's own float16 autocast, and asking for an accelerator this machine lacks
is one clear line before anything runs."""

import dataclasses

import pytest
import timm
import torch
import torch.nn as nn

import edgekd.distill.trainer as trainer
from edgekd.augment import Augmentation
from edgekd.catalog import TeacherRecipe
from edgekd.cli import main
from edgekd.distill.accelerator import Accelerator, module_device, resolve_accelerator
from edgekd.distill.distributed import World, synchronise_batchnorm
from edgekd.distill.losses import parse_loss_specs
from edgekd.distill.stage import DistillPlan, distil_student
from edgekd.distill.trainer import CHECKPOINT, TrainConfig, train
from edgekd.errors import ConfigError, EdgeKDError
from edgekd.fit_config import FitConfig
from edgekd.search.evidence import evidence
from edgekd.search.halving import RungPlan
from edgekd.teachers import train_cached_teacher
from tests.helpers import one_torch_thread, subset

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture(scope="module")
def small(digits):
    return dataclasses.replace(digits, train=subset(digits.train, 128), val=subset(digits.val, 64))


def _cnn(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1, groups=width), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 10),
    )  # fmt: skip


@NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_missing_gpu_is_one_line_naming_what_is_available(name):
    with pytest.raises(EdgeKDError) as raised:
        resolve_accelerator(name)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"--accelerator {name}: no CUDA device is visible")
    assert "available here: " in message and message.split("available here: ")[1].startswith(
        "mps, cpu" if torch.backends.mps.is_available() else "cpu "
    )


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_a_missing_mps_device_is_named_too():
    with pytest.raises(EdgeKDError, match=r"^--accelerator mps: this machine has no Apple MPS device; "):
        resolve_accelerator("mps")


@NO_CUDA
def test_fit_with_a_missing_gpu_fails_before_a_run_directory_exists(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["fit", "--accelerator", "cuda", "--runs-dir", str(runs), "--student", "lcnet_050"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --accelerator cuda: no CUDA device") and "\n" not in err
    assert not runs.exists()


def test_auto_takes_what_is_there_and_malformed_names_are_refused_by_option():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_accelerator("auto").device.type == expected
    assert FitConfig().training.accelerator == "auto"
    with pytest.raises(ConfigError, match=r"--accelerator 'gpu' is not one of auto, cpu, cuda, cuda:N, mps"):
        FitConfig.from_options(accelerator="gpu")
    with pytest.raises(ConfigError, match="accelerator 'cuda:x'"):
        TrainConfig(epochs=1, batch_size=8, lr=0.1, accelerator="cuda:x")


def test_the_cpu_trains_in_float32_unless_bf16_is_asked_for():
    assert resolve_accelerator("cpu") == Accelerator(torch.device("cpu"))
    assert resolve_accelerator("cpu", bf16_on_cpu=True).amp_dtype == torch.bfloat16
    assert not resolve_accelerator("cpu").grad_scaler().is_enabled()
    assert resolve_accelerator("cpu").describe() == "cpu, float32"


@pytest.mark.slow
def test_every_training_path_runs_on_the_accelerator_and_hands_the_models_back(small, tmp_path):
    """Teacher training, the teacher-output cache fill, distillation with feature taps and a loss
    adapter, a search trial and QAT, all with `accelerator="cpu"`: each model comes back on the CPU,
    contiguous and in eval mode, and the teacher where it was."""
    config = TrainConfig(
        epochs=1, batch_size=32, lr=2e-2, augmentation=Augmentation(draws=2, max_shift=2), accelerator="cpu"
    )
    recipe = TeacherRecipe("resnet10t", epochs=1, batch_size=32, lr=3e-3)
    with one_torch_thread():
        teacher = train_cached_teacher(small, recipe, tmp_path, accelerator="cpu").model
        assert module_device(teacher).type == "cpu" and not teacher.training

        def student():
            torch.manual_seed(0)
            return timm.create_model("lcnet_050", num_classes=10)

        plan = DistillPlan(loss=("kd", "fitnet"), qat_epochs=1)
        result = distil_student(student, teacher, small, config, plan, cache_dir=tmp_path)
        trial = evidence(
            lambda name: timm.create_model(name, num_classes=10), teacher, small, config, DistillPlan()
        )("lcnet_050", RungPlan(candidates=1, epochs=1, images=64))
    assert 0 <= trial.accuracy <= 1
    assert any((tmp_path / "teacher-outputs").iterdir())  # the cache was filled on the accelerator
    for model in (teacher, result.student, result.quantized):
        assert not model.training
        for tensor in (*model.parameters(), *model.buffers()):
            assert tensor.device.type == "cpu"
            assert tensor.dim() != 4 or tensor.is_contiguous()
    assert set(result.steps) == {"student", "qat"}


def _float16_with_a_scaler(monkeypatch) -> None:
    """What a GPU without bfloat16 trains with, on the CPU's own float16 autocast."""
    cpu_float16 = Accelerator(torch.device("cpu"), torch.float16, scales_gradients=True)
    monkeypatch.setattr(trainer, "resolve_accelerator", lambda name, bf16_on_cpu=False: cpu_float16)


class _InterruptAtEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def stage(self, name, detail=""):
        pass

    def task(self, description, total):
        from edgekd.progress import SilentObserver

        if f"epoch {self.epoch}/" in description:
            raise KeyboardInterrupt
        return SilentObserver().task(description, total)


def test_float16_with_a_gradient_scaler_learns_and_resumes_with_its_scale(small, tmp_path, monkeypatch):
    """The scaler's state is checkpointed: the loss scale it backed off to is restored, so a resumed
    run reaches the uninterrupted run's weights exactly. The loss is weighted 1000x so that its
    float16 gradients overflow at the initial scale of 2^16 and the scaler must back off."""
    _float16_with_a_scaler(monkeypatch)
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, clip_grad_norm=5.0)
    loss = parse_loss_specs(["ce:1000"])
    with one_torch_thread():
        reference = _cnn(8, 0)
        history = train(reference, small, config, loss=loss)
        assert history[-1].train_loss < history[0].train_loss
        assert all(torch.isfinite(p).all() for p in reference.parameters())
        with pytest.raises(KeyboardInterrupt):
            train(_cnn(8, 0), small, config, loss=loss, checkpoint_dir=tmp_path,
                  observer=_InterruptAtEpoch(3))  # fmt: skip
        saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)
        assert saved["scaler"]["scale"] < 2.0**16  # it backed off: the restored scale matters
        resumed = _cnn(8, 5)
        train(resumed, small, config, loss=loss, checkpoint_dir=tmp_path)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_sync_batchnorm_swaps_every_batchnorm_and_back_with_the_trained_tensors():
    model = timm.create_model("mobilenetv3_small_050", num_classes=10)
    before = {name: type(m) for name, m in model.named_modules()}
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    weight = dict(model.named_modules())[norms[0]].weight.detach().clone()
    restore = synchronise_batchnorm(model, World(0, 2), torch.device("cuda", 0))
    synced = dict(model.named_modules())
    assert norms and all(isinstance(synced[name], nn.SyncBatchNorm) for name in norms)
    with torch.no_grad():
        synced[norms[0]].weight.add_(1.0)
        synced[norms[0]].running_mean = torch.full_like(synced[norms[0]].running_mean, 3.0)
    restore()
    assert {name: type(m) for name, m in model.named_modules()} == before
    restored = dict(model.named_modules())[norms[0]]
    assert torch.equal(restored.running_mean, torch.full_like(restored.running_mean, 3.0))
    assert torch.equal(restored.weight, weight + 1)
    assert synchronise_batchnorm(model, World(0, 1), torch.device("cpu"))() is None  # one process: no-op
    with pytest.raises(ConfigError, match="--sync-batchnorm needs CUDA"):
        synchronise_batchnorm(model, World(0, 2), torch.device("cpu"))
