"""What `edgekd fit` is told reaches what it trains: label smoothing changes the student's weights in
every scheme, and every field of the configs on the way to the trainer is read by something other than
its own checks and the writing of config.yaml."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from edgekd.cli import main
from edgekd.distill.stage import DistillPlan, distil_student
from edgekd.distill.trainer import TrainConfig
from edgekd.errors import ConfigError
from edgekd.fit_config import DistillSettings, FitConfig, TrainingSettings
from edgekd.fit_recipe import handed_on, make_distill_plan, make_train_config
from edgekd.targets import get_target
from tests.helpers import one_torch_thread, subset

EDGEKD = Path(__file__).resolve().parents[1] / "edgekd"


@pytest.fixture(scope="module")
def tiny(digits):
    return dataclasses.replace(digits, train=subset(digits.train, 96), val=subset(digits.val, 32))


def _cnn(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 10),
    )  # fmt: skip


def _trained_weights(data, **options) -> list[torch.Tensor]:
    """The student's weights after one epoch of three steps, configured as `edgekd fit` would be from
    `options` (through the same `make_distill_plan` and `make_train_config`)."""
    config = FitConfig.from_options(epochs=1, batch_size=32, lr=0.05, teacher_cache=False, **options)
    plan = make_distill_plan(config, [get_target("pi5")])
    with one_torch_thread():
        result = distil_student(
            lambda: _cnn(4, 1),
            _cnn(6, 0).eval(),  # an untrained teacher: its logits differ from the labels all the same
            data,
            make_train_config(config, data.input_size),
            plan,
            make_assistant=lambda: _cnn(5, 2),
        )
    return [t.detach().clone() for t in result.student.state_dict().values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "options",
    [
        {},  # fit's default: offline, kd
        {"loss": ("kd",), "alpha": 0.5},
        {"loss": ("ce", "dist")},
        {"loss": ("dkd", "ce")},
        {"scheme": "online"},
        {"scheme": "born-again", "loss": ("kd",)},
        {"scheme": "assistant"},
    ],
    ids=[
        "offline-default",
        "offline-kd",
        "offline-ce+dist",
        "offline-dkd+ce",
        "online",
        "born-again-kd",
        "assistant-default",
    ],
)
def test_label_smoothing_changes_the_trained_student_in_every_scheme(tiny, options):
    plain = _trained_weights(tiny, label_smoothing=0.0, **options)
    smoothed = _trained_weights(tiny, label_smoothing=0.1, **options)
    assert _same(plain, _trained_weights(tiny, label_smoothing=0.0, **options))  # deterministic
    assert _same(smoothed, _trained_weights(tiny, label_smoothing=0.1, **options))
    assert not _same(plain, smoothed)


@pytest.mark.slow
def test_label_smoothing_reaches_the_quantization_aware_kd_term(tiny):
    """An int8 target's fine-tuning trains its own kd term on the fake-quantized graph (~8 s a run)."""
    from edgekd.distill.stage import quantization_aware

    def fine_tuned(label_smoothing: float) -> list[torch.Tensor]:
        config = FitConfig.from_options(
            target="ethos-u55", epochs=1, batch_size=32, lr=0.05, alpha=0.5, label_smoothing=label_smoothing
        )
        plan = make_distill_plan(config, [get_target("ethos-u55")])
        assert plan.qat_epochs == 2
        plan = dataclasses.replace(plan, qat_epochs=1)
        with one_torch_thread():
            qat = quantization_aware(
                _cnn(4, 1),
                _cnn(6, 0).eval(),
                tiny,
                make_train_config(config, tiny.input_size),
                plan,
                arch="cnn",
            )
        return [t.detach().clone() for t in qat.model.state_dict().values()]

    assert not _same(fine_tuned(0.0), fine_tuned(0.1))


def test_label_smoothing_without_a_label_term_is_refused(tmp_path, monkeypatch, capsys):
    with pytest.raises(
        ConfigError, match=r"--label-smoothing 0.1 .* --loss dkd fitnet has none; add --loss ce"
    ):
        DistillPlan(loss=("dkd", "fitnet"), label_smoothing=0.1)
    assert DistillPlan(loss=("dkd", "ce"), label_smoothing=0.1).losses().terms[1].label_smoothing == 0.1
    assert DistillPlan(scheme="online", label_smoothing=0.1).label_smoothing == 0.1
    monkeypatch.chdir(tmp_path)
    # --data names no folder: were the plan not refused, fit would fail loading it, not train
    assert main(["fit", "--loss", "dist", "--label-smoothing", "0.1", "--data", str(tmp_path / "none")]) == 2
    out, err = capsys.readouterr()
    assert "error: --label-smoothing 0.1 smooths the labels of a ce or kd term" in err + out
    assert not (tmp_path / "runs").exists()


def test_label_smoothing_of_one_is_refused_where_the_config_is_built():
    with pytest.raises(ConfigError, match=r"label_smoothing \(--label-smoothing\) may not be 1"):
        FitConfig.from_options(label_smoothing=1.0)


# --- every config field is read ---------------------------------------------------------------------


class _Reads(ast.NodeVisitor):
    """`<variable>.<name>` reads, `<variable>` one of the dotted names in `variables`, outside the
    functions in `skip` and outside the class `owner`, whose methods and properties are kept apart with
    the names they read through `self`."""

    def __init__(self, variables: tuple[str, ...], owner: str, skip: set[str]) -> None:
        self.variables, self.owner, self.skip = variables, owner, skip
        self.outside: set[str] = set()
        self.members: dict[str, set[str]] = {}

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name not in self.skip:
            self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if node.name != self.owner:
            self.generic_visit(node)
            return
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name not in self.skip:
                self.members[item.name] = {
                    n.attr
                    for n in ast.walk(item)
                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
                }

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _dotted(node.value) in self.variables:
            self.outside.add(node.attr)
        self.generic_visit(node)


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for the expression `a.b.c` made of names and attributes only, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _reads(sources: list[Path], variables: str | tuple[str, ...], cls: type, skip: set[str]) -> set[str]:
    """Names read as `<variable>.<name>` in `sources`, outside the functions named in `skip` (which
    only check values) and outside `cls`'s own body; reading a property or method of `cls` counts as
    reading what it reads through `self`. Nothing else counts: `asdict`, `to_mapping` and
    `dataclasses.replace` treat every field alike, so passing a config through them consumes none."""
    reads = _Reads((variables,) if isinstance(variables, str) else variables, cls.__name__, skip)
    for path in sources:
        reads.visit(ast.parse(path.read_text()))
    read, pending = set(), set(reads.outside)
    while pending:
        name = pending.pop()
        read.add(name)
        pending |= reads.members.get(name, set()) - read
    return read


FIT_MODULES = [
    "fit_config.py",
    "pipeline.py",
    "fit_recipe.py",
    "fit_stages.py",
    "fit_shipping.py",
    "training_time.py",
]
# Functions of fit_config.py that only check values, build configs or look options up by name.
FIT_CONFIG_CHECKS = {
    "_validate",
    "_validate_training",
    "_validate_distillation",
    "resume_config",
    "__post_init__",
    "from_yaml",
    "from_options",
    "with_options",
    "option",
}


def _group_variables(group: str) -> tuple[str, ...]:
    """The names a settings group goes by in the fit's modules."""
    return (group, *(f"{owner}.{group}" for owner in ("config", "context.config", "self.config")))


CONSUMERS = [
    # (the config, the modules that read it, the names it goes by there, functions that only check it)
    (FitConfig, FIT_MODULES, "config", FIT_CONFIG_CHECKS),
    (TrainingSettings, FIT_MODULES, _group_variables("training"), FIT_CONFIG_CHECKS),
    (DistillSettings, FIT_MODULES, _group_variables("distillation"), FIT_CONFIG_CHECKS),
    (DistillPlan, ["distill/stage.py", "fit_recipe.py", "fit_stages.py"], "plan", {"__post_init__"}),
    (TrainConfig, ["distill/trainer.py"], "config", {"__post_init__"}),
]
# A settings group hands the fields it shares with these by name (`fit_recipe.handed_on`): such a field is
# consumed when the type it is handed to reads it.
HANDED_TO = {TrainingSettings: TrainConfig, DistillSettings: DistillPlan}


def _read_fields(cls: type) -> set[str]:
    ((modules, variables, skip),) = [c[1:] for c in CONSUMERS if c[0] is cls]
    read = _reads([EDGEKD / m for m in modules], variables, cls, skip)
    if cls in HANDED_TO:
        read |= set(handed_on(cls(), HANDED_TO[cls])) & _read_fields(HANDED_TO[cls])
    return read


@pytest.mark.parametrize("cls,modules", [c[:2] for c in CONSUMERS], ids=[c[0].__name__ for c in CONSUMERS])
def test_every_config_field_is_read_by_what_it_configures(cls, modules):
    read = _read_fields(cls)
    unread = [f.name for f in dataclasses.fields(cls) if f.name not in read]
    assert not unread, f"{cls.__name__} fields that nothing in {', '.join(modules)} reads: {unread}"


def test_settings_handed_on_by_name_reach_the_trainer_and_the_plan():
    """What the field check takes on trust for the fields a group hands on: each reaches the trainer's
    config or the plan with the value given, and each value given differs from the default."""
    given = FitConfig.from_options(
        target="ethos-u55",
        epochs=3,
        batch_size=8,
        lr=0.1,
        weight_decay=0.01,
        optimizer="adamw",
        schedule="cosine",
        ema_decay=0.99,
        clip_grad_norm=2.0,
        bf16=True,
        accelerator="cpu",
        sync_batchnorm=True,
        seed=7,
        rand_augment="rand-m9-mstd0.5",
        mixup=0.2,
        cutmix=1.0,
        loss=("ce", "kd"),
        temperature=2.0,
        alpha=0.5,
        label_smoothing=0.1,
        scheme="born-again",
        teacher_cache=False,
        qat_epochs=1,
    )
    built = {
        TrainConfig: make_train_config(given, 32),
        DistillPlan: make_distill_plan(given, [get_target("ethos-u55")]),
    }
    for group, to in HANDED_TO.items():
        names = set(handed_on(group(), to))
        assert names, f"{group.__name__} hands nothing on to {to.__name__}"
        for name in names:
            assert getattr(built[to], name) == given.option(name) != FitConfig().option(name), name


def test_the_field_check_finds_a_field_that_is_only_validated(tmp_path):
    """The check itself can fail: a config whose field is only range-checked and written out is unread,
    and so is a field of a nested group read nowhere under the group's name."""
    source = tmp_path / "consumer.py"
    source.write_text(
        "def _validate(config):\n"
        "    if config.used < 0 or config.unused < 0:\n"
        "        raise ValueError(config)\n"
        "def run(config):\n"
        "    save(to_mapping(config))\n"
        "    return config.total + config.group.inner\n"
        "class Config:\n"
        "    @property\n"
        "    def total(self):\n"
        "        return self.used + 1\n"
    )

    @dataclasses.dataclass
    class Config:
        used: int = 0
        unused: int = 0

    @dataclasses.dataclass
    class Group:
        inner: int = 0
        outer: int = 0

    assert _reads([source], "config", Config, {"_validate"}) & {"used", "unused"} == {"used"}
    assert _reads([source], ("config.group",), Group, set()) == {"inner"}
