"""FitConfig's checks and `--resume` with options: every value is checked where the config is built, and
a resumed run applies the options that only touch the stages after training and refuses the rest."""

from __future__ import annotations

import logging

import pytest
import yaml

from edgekd._config import to_mapping
from edgekd.cli import main
from edgekd.errors import ConfigError, UnknownNameError
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
        ("ema_decay: 0\n", r"fit\.yaml: ema_decay \(--ema-decay\) must be between 0 and 1"),
        ("label_smoothing: .nan\n", r"fit\.yaml: label_smoothing .* between 0 and 1, got nan"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            FitConfig.from_yaml(path)
    assert (
        FitConfig.from_options(input_size=8).input_size == 8
        and FitConfig.from_options(input_size=1024).input_size == 1024
    )


def test_small_data_sets_get_a_smaller_batch_at_the_batch_64_rate():
    from edgekd.fit_recipe import default_batch_size, make_train_config

    # The largest of 64/32/16 that gives an epoch at least 50 steps.
    assert [default_batch_size(n) for n in (6000, 3200, 3199, 1600, 1599, 1259, 10)] == [
        64,
        64,
        32,
        32,
        16,
        16,
        16,
    ]
    small = make_train_config(FitConfig(), 32, train_images=1259)
    assert (small.batch_size, small.lr) == (16, 0.025)  # SGD's rate is not scaled below batch 64
    assert make_train_config(FitConfig(), 32, train_images=20000).batch_size == 64
    assert make_train_config(FitConfig.from_options(batch_size=128), 32).lr == pytest.approx(
        0.05
    )  # scaled above 64
    assert make_train_config(FitConfig.from_options(batch_size=16, lr=0.01), 32).lr == 0.01  # named: kept
    with pytest.raises(ValueError, match="train_images"):
        make_train_config(FitConfig(), 32)


def test_the_search_trains_small_data_long_enough_to_learn():
    from edgekd.training_time import SEARCH_MIN_STEPS, search_rungs

    # 6,000 images at batch 64: a fifth of 15 epochs, as before (the rung images carry the steps).
    assert search_rungs(FitConfig.from_options(batch_size=64), 15, 6000)["max_epochs"] == 3
    # 1,259 images at batch 16: raised until the last rung has SEARCH_MIN_STEPS steps ...
    small = search_rungs(FitConfig.from_options(batch_size=16), 15, 1259)
    assert small["max_epochs"] * 1259 // 16 >= SEARCH_MIN_STEPS > (small["max_epochs"] - 1) * 1259 // 16
    assert small["min_images_seen"] == SEARCH_MIN_STEPS * 16
    # ... never past the fit's own epochs, and --search-epochs rules.
    assert search_rungs(FitConfig.from_options(batch_size=64), 5, 1259)["max_epochs"] == 5
    assert search_rungs(FitConfig.from_options(batch_size=16, search_epochs=1), 15, 1259)["max_epochs"] == 1
