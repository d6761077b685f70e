"""FitConfig's checks and `--resume` with options: every value is checked where the config is built, and
a resumed run applies the options that only touch the stages after training and refuses the rest."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import yaml

from edgekd._config import to_mapping
from edgekd.cli import main
from edgekd.errors import ConfigError, UnknownNameError
from edgekd.fit_config import GROUPS, OPTION_GROUPS, DistillSettings, TrainingSettings, _option_groups
from edgekd.pipeline import FitConfig, fit, resume_config


def _run(tmp_path, **settings):
    run = tmp_path / "runs" / "20260101-000000-pi5"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(to_mapping(FitConfig.from_options(**settings)), sort_keys=False)
    )
    return run


def test_resume_applies_a_new_device_and_threads_to_the_runs_config(tmp_path, caplog):
    run = _run(tmp_path, epochs=2, device="loacl", runs_dir=tmp_path / "runs")
    with caplog.at_level(logging.INFO, logger="edgekd.fit_config"):
        config = resume_config(run, {"device": "local", "threads": 3, "epochs": 2})  # epochs: the run's own
    assert (config.device, config.threads, config.training.epochs) == ("local", 3, 2)
    saved = FitConfig.from_yaml(run / "config.yaml")
    assert saved == config
    assert "--device local replaces loacl" in caplog.text and "--threads 3 replaces 1" in caplog.text
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # written in place, no temporary left


def test_resume_refuses_every_training_option_at_once_and_keeps_the_file(tmp_path):
    run = _run(tmp_path, epochs=2)
    before = (run / "config.yaml").read_text()
    changes = {"epochs": 5, "target": ("android-cpu",), "student": "lcnet_050", "device": "local"}
    with pytest.raises(ConfigError) as refused:
        resume_config(run, changes)
    assert "drop --epochs, --target or --student or start a new run" in str(refused.value)
    assert "--device" in str(refused.value).split("may change:")[1]  # named as allowed, not refused
    assert (run / "config.yaml").read_text() == before


def test_fit_with_resume_refuses_a_config_that_differs_in_training(tmp_path):
    run = _run(tmp_path, epochs=2, runs_dir=tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"drop --epochs or start a new run"):
        fit(FitConfig.from_options(epochs=7, runs_dir=tmp_path / "runs"), resume=run)


def test_a_resumed_run_with_a_misspelt_device_fails_before_any_work(tmp_path):
    run = _run(tmp_path, device="loacl", runs_dir=tmp_path / "runs")
    with pytest.raises(UnknownNameError, match=r"no device named 'loacl'"):
        fit(FitConfig.from_yaml(run / "config.yaml"), resume=run)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_resume_on_the_command_line_names_refused_options(tmp_path, capsys):
    run = _run(tmp_path, epochs=2)
    assert main(["fit", "--resume", str(run), "--epochs", "5", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "drop --epochs or --lr" in err.replace("\n", " ") and "Traceback" not in err


def test_yaml_values_are_checked_naming_the_file(tmp_path):
    path = tmp_path / "fit.yaml"
    for text, message in (
        (
            "input_size: 4\n",
            r"fit\.yaml: input_size \(--input-size\) must be between 8 and 1024 pixels, got 4",
        ),
        ("optimizer: sgdd\n", r"fit\.yaml: unknown optimizer 'sgdd'.*Did you mean 'sgd'"),
        ("ema_decay: 1\n", r"fit\.yaml: ema_decay \(--ema-decay\) must be at least 0 and below 1"),
        ("label_smoothing: .nan\n", r"fit\.yaml: label_smoothing .* between 0 and 1, got nan"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            FitConfig.from_yaml(path)
    assert [FitConfig.from_options(input_size=n).input_size for n in (8, 1024)] == [8, 1024]


def test_short_trainings_get_a_smaller_batch_at_the_batch_64_rate():
    from edgekd.fit_recipe import MIN_TRAINING_STEPS, default_batch_size, make_train_config

    def steps(images: int, epochs: int, batch: int) -> int:
        return epochs * -(-images // batch)

    # The largest of 64/32/16 that gives the whole training MIN_TRAINING_STEPS optimizer steps, counted
    # here apart: 8 epochs of 6,000 images are 752 steps at 64 and 1,504 at 32.
    settings = [(6000, 8), (10000, 8), (6000, 15), (6000, 30), (18900, 15), (3199, 15), (1259, 30), (10, 15)]
    expected = [
        next((b for b in (64, 32, 16) if steps(n, e, b) >= MIN_TRAINING_STEPS), 16) for n, e in settings
    ]
    assert expected == [32, 32, 32, 64, 64, 32, 16, 16]
    assert [default_batch_size(n, e) for n, e in settings] == expected
    small = make_train_config(FitConfig(), 32, train_images=1259)
    assert (small.batch_size, small.lr) == (16, 0.025)  # SGD's rate is not scaled below batch 64
    assert make_train_config(FitConfig(), 32, train_images=20000).batch_size == 64
    scaled = make_train_config(FitConfig.from_options(epochs=15, batch_size=128), 32)
    assert scaled.lr == pytest.approx(0.05)  # scaled above 64
    named = FitConfig.from_options(epochs=15, batch_size=16, lr=0.01)
    assert make_train_config(named, 32).lr == 0.01  # named: kept
    with pytest.raises(ValueError, match="train_images"):
        make_train_config(FitConfig(), 32)


def test_small_data_train_until_the_minimum_images_are_seen_unless_the_epochs_are_named(caplog):
    from edgekd.fit_recipe import (
        DEFAULT_EPOCHS,
        SMALL_DATA_MIN_IMAGES_SEEN,
        default_epochs,
        make_train_config,
        with_data_defaults,
    )

    # digits: the fewest epochs of 1,259 images that reach the minimum
    epochs = default_epochs(1259)
    assert epochs * 1259 >= SMALL_DATA_MIN_IMAGES_SEEN > (epochs - 1) * 1259
    assert epochs > DEFAULT_EPOCHS
    # a smaller split takes more epochs, to the same images seen
    assert default_epochs(200) == -(-SMALL_DATA_MIN_IMAGES_SEEN // 200)
    # never fewer than the default, and data of 3,200 images or more keep it
    assert default_epochs(3199) == DEFAULT_EPOCHS  # 15 epochs are 47,985 images
    assert [default_epochs(n) for n in (3200, 6000)] == [DEFAULT_EPOCHS] * 2
    with caplog.at_level(logging.INFO, logger="edgekd.fit_recipe"):
        decided = with_data_defaults(FitConfig(), 1259)
    assert (decided.training.batch_size, decided.training.epochs) == (16, epochs)
    assert f"epochs {epochs}: 1259 training images are small data" in caplog.text
    assert with_data_defaults(FitConfig(), 6000).training.epochs == DEFAULT_EPOCHS
    assert with_data_defaults(FitConfig.from_options(epochs=15), 1259).training.epochs == 15  # named: kept
    # the trainer's recipe decides them the same way from the split's size, or asks for it
    assert make_train_config(FitConfig(), 32, train_images=1259).epochs == epochs
    assert make_train_config(FitConfig.from_options(epochs=3), 32, train_images=1259).epochs == 3
    with pytest.raises(ValueError, match="without epochs needs train_images"):
        make_train_config(FitConfig.from_options(batch_size=16), 32)


def test_the_loss_is_kd_with_similarity_preserving_kd_where_measured_and_kd_alone_elsewhere(caplog, tmp_path):
    """No --loss: kd + sp for data that are not small, offline, from a timm teacher; kd alone (its
    logits cached) for small data, another scheme or an ONNX teacher; a named loss is kept. The plan
    built from the decided config then runs its teacher live only for kd + sp."""
    from edgekd.fit_recipe import FEATURE_LOSS, LOGITS_LOSS, make_distill_plan, with_data_defaults
    from edgekd.targets import get_target

    def decided(images: int, **options) -> tuple[str, ...]:
        return with_data_defaults(FitConfig.from_options(**options), images).distillation.loss

    assert FEATURE_LOSS == ("kd", "sp") and LOGITS_LOSS == ("kd",)
    with caplog.at_level(logging.INFO, logger="edgekd.fit_recipe"):
        assert decided(6000) == decided(3200) == FEATURE_LOSS
    assert "loss kd + sp" in caplog.text and "--loss kd" in caplog.text
    assert decided(3199) == decided(1259) == LOGITS_LOSS  # small data
    assert decided(6000, scheme="born-again") == decided(6000, scheme="online") == LOGITS_LOSS
    onnx = tmp_path / "teacher.onnx"
    onnx.write_bytes(b"")
    assert decided(6000, teacher=str(onnx)) == LOGITS_LOSS
    assert decided(6000, loss=("kd",)) == ("kd",) and decided(1259, loss=("dkd",)) == ("dkd",)
    pi5 = [get_target("pi5")]
    assert not make_distill_plan(with_data_defaults(FitConfig(), 6000), pi5).caches_teacher
    assert make_distill_plan(with_data_defaults(FitConfig(), 1259), pi5).caches_teacher


def test_the_final_training_averages_its_weights_on_small_data_only_and_the_trials_never_by_default():
    from edgekd.fit_recipe import SMALL_DATA_EMA_DECAY, final_train_config, is_small_data, make_train_config

    assert [is_small_data(n) for n in (1259, 3199, 3200, 6000)] == [True, True, False, False]

    def recipes(train_images, **options):
        config = FitConfig.from_options(**options)
        trials = make_train_config(config, 32, train_images=train_images)
        return trials.ema_decay, final_train_config(config, trials, train_images).ema_decay

    assert SMALL_DATA_EMA_DECAY == 0.99
    assert recipes(1259) == (None, 0.99)  # digits: the trials keep their last weights
    assert recipes(3199) == (None, 0.99)
    assert recipes(6000) == (None, None)  # EuroSAT-sized data keeps the recipe it had
    assert recipes(1259, ema_decay=0.999) == (0.999, 0.999)  # named: everywhere, as before
    assert recipes(6000, ema_decay=0.999) == (0.999, 0.999)
    assert recipes(1259, ema_decay=0) == (None, None)  # 0: no average, even on small data
    trials = make_train_config(FitConfig(), 32, train_images=1259)
    final = final_train_config(FitConfig(), trials, 1259)
    assert final == dataclasses.replace(trials, ema_decay=0.99)  # nothing else differs


def test_the_search_trains_small_data_long_enough_to_learn():
    from edgekd.training_time import SEARCH_MIN_STEPS, search_rungs

    # 6,000 images at batch 64: half of 15 epochs, rounded up (the rung images carry the steps).
    assert search_rungs(FitConfig.from_options(batch_size=64), 15, 6000)["max_epochs"] == 8
    # 200 images at batch 16: half of 30 epochs is 187 steps, raised until a rung can have
    # SEARCH_MIN_STEPS ...
    small = search_rungs(FitConfig.from_options(batch_size=16), 30, 200)
    assert small["max_epochs"] * 200 // 16 >= SEARCH_MIN_STEPS > (small["max_epochs"] - 1) * 200 // 16
    assert small["max_epochs"] == 20 and small["min_images_seen"] == SEARCH_MIN_STEPS * 16
    # ... never past the fit's own epochs, and --search-epochs rules.
    assert search_rungs(FitConfig.from_options(batch_size=64), 5, 1259)["max_epochs"] == 5
    assert search_rungs(FitConfig.from_options(batch_size=16, search_epochs=1), 15, 1259)["max_epochs"] == 1


# --- one config, nested, named by flat options ----------------------------------------------------


def test_flat_option_names_reach_their_group_and_back():
    config = FitConfig.from_options(target="pi4", epochs=3, loss=["ce", "kd"], device="local")
    assert (config.target, config.device) == ("pi4", "local")
    assert config.training == TrainingSettings(epochs=3)
    assert config.distillation == DistillSettings(loss=("ce", "kd"))
    assert [config.option(n) for n in ("target", "epochs", "loss")] == ["pi4", 3, ("ce", "kd")]
    changed = config.with_options(lr=0.1, temperature=2.0, threads=2)
    assert (changed.training.lr, changed.distillation.temperature, changed.threads) == (0.1, 2.0, 2)
    assert changed.training.epochs == 3 and config.training.lr is None  # the rest kept, the original too
    with pytest.raises(ConfigError, match=r"temperature \(--temperature\) must be a finite number above 0"):
        config.with_options(temperature=0.0)
    with pytest.raises(ConfigError, match=r"unknown field 'epoch'\. Did you mean 'epochs'"):
        FitConfig.from_options(epoch=3)


def test_every_option_is_a_field_of_one_group_only(monkeypatch):
    fields_of = {
        group: {f.name for f in dataclasses.fields(cls)} for group, cls in (("", FitConfig), *GROUPS.items())
    }
    assert set(OPTION_GROUPS) == set().union(*fields_of.values()) - set(GROUPS)
    for name, group in OPTION_GROUPS.items():
        assert name in fields_of[group or ""]

    @dataclasses.dataclass(frozen=True)
    class Clashing:
        epochs: int = 1

    monkeypatch.setitem(GROUPS, "clashing", Clashing)
    with pytest.raises(TypeError, match="option epochs is a field of training and of clashing"):
        _option_groups()


# The fit command's options that are no field of the config, and the config's fields that have no
# option of the fit command (none: every setting can be given on the command line).
CLI_ONLY = {"config": "names the YAML file the options come from", "resume": "names the run to continue"}
YAML_ONLY: dict[str, str] = {}


def test_every_option_of_fit_is_a_config_field_and_every_field_an_option():
    import typer

    from edgekd.cli import app

    command = typer.main.get_command(app).commands["fit"]
    options = {p.name: p.opts for p in command.params}
    assert set(options) - set(CLI_ONLY) == set(OPTION_GROUPS) - set(YAML_ONLY)
    for name in OPTION_GROUPS:  # errors name the option as the command line spells it
        assert "--" + name.replace("_", "-") in options[name], name


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--epochs", "0"], "epochs must be at least 1, got 0 (--epochs)"),
        (["--temperature", "0"], "temperature (--temperature) must be a finite number above 0"),
        (["--threads", "0"], "threads must be at least 1, got 0 (--threads)"),
    ],
    ids=["training", "distillation", "fit"],
)
def test_a_flat_option_of_each_group_is_checked_from_the_command_line(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *argv]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "runs").exists()


NESTED_YAML = """\
target: pi4
device: local
training:
  epochs: 3
  lr: 0.1
distillation:
  loss: [ce, kd]
  temperature: 2.0
"""
FLAT_YAML = "target: pi4\ndevice: local\nepochs: 3\nlr: 0.1\nloss: [ce, kd]\ntemperature: 2.0\n"


def test_config_yaml_is_read_nested_flat_or_mixed_and_written_nested(tmp_path):
    expected = FitConfig.from_options(
        target="pi4", device="local", epochs=3, lr=0.1, loss=("ce", "kd"), temperature=2.0
    )
    mixed = (
        "target: pi4\ndevice: local\nepochs: 3\nlr: 0.1\n" + NESTED_YAML[NESTED_YAML.index("distillation:") :]
    )
    for name, text in (("nested", NESTED_YAML), ("flat", FLAT_YAML), ("mixed", mixed)):
        (tmp_path / f"{name}.yaml").write_text(text)
        assert FitConfig.from_yaml(tmp_path / f"{name}.yaml") == expected, name
    assert FitConfig.from_yaml(tmp_path / "flat.yaml", epochs=5).training.epochs == 5  # flat overrides
    written = to_mapping(expected)
    assert written["training"]["epochs"] == 3 and written["distillation"]["temperature"] == 2.0
    assert "epochs" not in written and "temperature" not in written
    (tmp_path / "written.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    assert FitConfig.from_yaml(tmp_path / "written.yaml") == expected


def test_config_yaml_naming_an_option_twice_or_in_the_wrong_group_is_refused(tmp_path):
    path = tmp_path / "fit.yaml"
    for text, message in (
        (
            "epochs: 3\ntraining:\n  epochs: 4\n",
            r"fit\.yaml: epochs given both under training: and at the top",
        ),
        ("distillation:\n  epochs: 3\n", r"fit\.yaml: unknown field distillation\.'epochs'"),
        ("training:\n  epochs: 0\n", r"fit\.yaml: epochs must be at least 1, got 0 \(--epochs\)"),
        ("training: 3\n", r"fit\.yaml: training must be a mapping"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            FitConfig.from_yaml(path)


def test_a_run_with_a_flat_config_yaml_resumes_by_the_same_rule(tmp_path):
    """Run directories written before the groups have a flat config.yaml: resumed as they are, a new
    device is written back nested, a training option is refused."""
    run = tmp_path / "runs" / "20250101-000000-pi4"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(FLAT_YAML)
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"drop --temperature or start a new run"):
        resume_config(run, {"temperature": 3.0, "epochs": 3})  # epochs: the run's own
    assert (run / "config.yaml").read_text() == before
    config = resume_config(run, {"threads": 2, "lr": 0.1})
    assert (config.threads, config.training.lr, config.distillation.loss) == (2, 0.1, ("ce", "kd"))
    rewritten = yaml.safe_load((run / "config.yaml").read_text())
    assert rewritten["threads"] == 2 and rewritten["training"]["epochs"] == 3 and "epochs" not in rewritten
    assert FitConfig.from_yaml(run / "config.yaml") == config
