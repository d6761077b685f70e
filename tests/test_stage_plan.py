"""Predictable runs: the data summary (images per split, classes, native size read from real image
files), the input size fit picks without --input-size, the plan of every stage under the names the
progress display shows, and estimated against actual seconds in result.json and the report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from tests.test_report import as_result, make_result


def _image(path: Path, size: tuple[int, int], value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 40)).save(path)


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """train/{cat,dog} of 40x30 images (and a few others), val/ of 64x48 ones: every size counted."""
    root = tmp_path / "pets"
    for c, name in enumerate(("cat", "dog")):
        for i in range(10):
            _image(root / "train" / name / f"{i}.png", (40, 30) if i < 8 else (100, 20), 20 * i + c)
        for i in range(3):
            _image(root / "val" / name / f"{i}.jpg", (64, 48), 30 * i)
    return root


def test_the_summary_counts_the_splits_classes_and_native_sizes_of_real_files(mixed_folder):
    from edgekd.data_summary import summary_lines
    from edgekd.sources import scan_data

    scanned = scan_data(mixed_folder)
    # val/ is given, so only test is cut from train: 15 % of each class's 10 images, 1.5 rounded to 2
    assert scanned.counts == {"train": 16, "val": 6, "test": 4}
    assert scanned.classes == ("cat", "dog")
    assert scanned.native.counts == {(40, 30): 16, (100, 20): 4, (64, 48): 6}
    assert scanned.native.most_common == (40, 30) and scanned.native.side == 40
    assert scanned.native.to_json() == {
        "most_common": [40, 30],
        "images_at_most_common": 16,
        "distinct_sizes": 3,
        "width_range": [40, 100],
        "height_range": [20, 48],
    }
    lines = summary_lines(scanned.name, scanned.counts, scanned.classes, scanned.native)
    assert lines == (
        "pets: 16 train / 6 val / 4 test images",
        "2 classes: cat, dog",
        "native size mostly 40×30 (16 of 26 images); widths 40-100, heights 20-48",
    )
    splits = scanned.splits(24)  # the splits are made at the size decided afterwards
    assert splits.input_size == 24 and splits.native == scanned.native and len(splits.train) == 16
    assert splits.train[0][0].shape == (3, 24, 24)


def test_one_size_reads_as_one_size_and_many_classes_are_counted_not_named(tmp_path):
    from edgekd.data_summary import FEW_CLASSES, summary_lines
    from edgekd.sources import scan_data

    root = tmp_path / "many"
    for c in range(FEW_CLASSES + 1):
        for i in range(2):
            _image(root / "train" / f"c{c:02d}" / f"{i}.png", (16, 16), i)
    scanned = scan_data(root)
    assert scanned.native.describe() == "16×16"
    assert summary_lines(scanned.name, scanned.counts, scanned.classes, scanned.native)[1] == "13 classes"


def test_digits_are_8_pixel_images_split_as_they_are_trained():
    from edgekd.data import load_digits_splits
    from edgekd.sources import scan_data

    scanned = scan_data(None)
    splits = load_digits_splits(32)
    assert scanned.native.describe() == "8×8" and scanned.native.side == 8
    assert scanned.counts == {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    assert scanned.splits(32).fingerprint == splits.fingerprint


def _targets(*names):
    from edgekd.targets import get_target

    return [get_target(n) for n in names]


def test_the_native_size_is_kept_up_to_the_largest_the_target_allows():
    from edgekd.fit_config import decide_input_size

    # 64 px is not in pi5's list (96-224): the list bounds the size, fit trains at the data's own
    assert decide_input_size(None, 64, _targets("pi5")) == (
        64,
        "input size 64 px: the images' native size (pi5 allows up to 224 px)",
    )
    assert decide_input_size(None, 224, _targets("pi5"))[0] == 224


def test_larger_images_come_down_to_the_largest_shared_size_saying_what_that_saves():
    from edgekd.fit_config import decide_input_size

    size, why = decide_input_size(None, 512, _targets("pi5"))
    assert size == 224
    assert f"{(512 / 224) ** 2:.1f}x the pixels" in why and "5.2x" in why and "--input-size 512" in why
    # apple-ane allows up to 256, pi5 up to 224: the largest both allow
    assert decide_input_size(None, 300, _targets("apple-ane", "pi5"))[0] == 224
    assert decide_input_size(None, 300, _targets("apple-ane"))[0] == 256


def test_an_explicit_input_size_wins_and_tiny_images_train_at_32():
    from edgekd.fit_config import MIN_DEFAULT_INPUT_SIZE, decide_input_size

    assert decide_input_size(48, 512, _targets("pi5"))[0] == 48
    assert decide_input_size(8, 8, _targets("pi5"))[0] == 8
    size, why = decide_input_size(None, 8, _targets("pi5"))  # digits: `make fit` stays at 32 px
    assert size == MIN_DEFAULT_INPUT_SIZE == 32 and "16x their pixels" in why


def test_fit_keeps_no_input_size_in_config_yaml_and_decides_it_from_the_data(mixed_folder, tmp_path):
    import yaml

    from edgekd.distill.distributed import current_world
    from edgekd.fit_config import FitConfig
    from edgekd.pipeline import _checked_context
    from edgekd.progress import SilentObserver

    config = FitConfig.from_options(target="pi5", data=mixed_folder, runs_dir=tmp_path / "runs")
    context = _checked_context(config, None, SilentObserver(), current_world(), time.perf_counter())
    assert context.splits.input_size == 40 and context.config.input_size == 40
    assert "native size" in context.input_size_note
    assert yaml.safe_load(context.run.config.read_text())["input_size"] is None


@dataclasses.dataclass
class _Context:
    """What `shipping_stages` and `shipping_plan` read of a fit's context."""

    targets: list
    config: object
    plan: object
    data: object
    quantized: object = None
    student: object = None


def test_the_plan_names_the_stages_after_training_as_the_progress_display_does():
    from edgekd.fit_config import FitConfig
    from edgekd.fit_recipe import make_distill_plan
    from edgekd.fit_shipping import shipping_plan, shipping_stages

    targets = _targets("pi5", "pi4", "ethos-u55", "apple-ane")  # pi4 shares pi5's file
    config = FitConfig.from_options(target=[t.name for t in targets], device="local")
    data = type("Data", (), {"test": range(150)})()
    context = _Context(targets, config, make_distill_plan(config, targets), data, quantized=object())
    banners = []
    for stage in shipping_stages(context):
        label = f"{stage.name} ({stage.detail})" if stage.detail else stage.name
        if label not in banners:
            banners.append(label)
    rows = shipping_plan(context, student_rate=300.0)
    assert [r.label for r in rows] == banners
    assert banners[-2:] == ["teacher latency", "report"] and "parity (ethos-u55)" in banners
    by_label = {r.label: r for r in rows}
    # the int8 target's QAT file and the post-training one beside it: two conversions
    assert by_label["export (ethos-u55)"].seconds == 2 * by_label["export (pi5)"].seconds
    assert by_label["device"].seconds is None and by_label["parity (pi5)"].seconds > 0
    assert by_label["teacher latency"].seconds > 0
    # exported beside the student where a fork may be used, its stage is then the timing alone
    from edgekd.forked_call import can_fork
    from edgekd.stage_plan import rule

    ahead = by_label["teacher latency"].seconds == rule("parity")
    assert ahead == can_fork() and ("beside the student" in by_label["teacher latency"].basis) == ahead
    cached = {r.label: r for r in shipping_plan(context, 300.0, teacher_cached=True)}
    assert cached["teacher latency"].seconds == 0.0  # the fit that trained it timed it too


def test_run_stages_times_each_banner_and_the_plan_compares_it():
    from edgekd.fit_stages import FitContext, run_stages
    from edgekd.progress import SilentObserver
    from edgekd.stage_plan import StageEstimate, compared, comparison_table, plan_table

    class Work:
        def __init__(self, name, detail, seconds):
            self.name, self.detail, self.seconds = name, detail, seconds

        def is_done(self, run):
            return False

        def run(self, context):
            time.sleep(self.seconds)

    context = FitContext(None, None, SilentObserver(), None, [], None, [], None, 0.0)
    run_stages([Work("export", "pi5", 0.05), Work("export", "pi5", 0.05), Work("report", "", 0.02)], context)
    assert set(context.stage_seconds) == {"export (pi5)", "report"}
    assert 0.1 <= context.stage_seconds["export (pi5)"] < 1.0  # both parts of one banner
    rows = [
        StageEstimate("export", "pi5", 0.2, "rule"),
        StageEstimate("report", "", 0.01, "rule"),
        StageEstimate("device", "", None, "not estimated"),
    ]
    table = str(plan_table(rows))
    assert all(label in table for label in ("export (pi5)", "report", "device", "total"))
    stages = compared(rows, context.stage_seconds)
    assert [s["stage"] for s in stages] == ["export", "report", "device"]
    assert stages[0]["actual_s"] == round(context.stage_seconds["export (pi5)"], 1)
    assert stages[1]["actual_over_estimated"] == round(context.stage_seconds["report"] / 0.01, 2)
    assert stages[2]["estimated_s"] is None and stages[2]["actual_over_estimated"] is None
    assert "actual/estimated" in str(comparison_table(stages)) and "export (pi5)" in str(
        comparison_table(stages)
    )


def test_the_plan_is_drawn_as_a_table_at_80_columns_and_written_as_text_to_the_log():
    """On the terminal the plan is a table whose stage names stay whole and whose long `how` column
    wraps inside its own column; a plain handler (the run's edgekd.log) gets the aligned text."""
    import io
    import logging

    from rich.console import Console

    import edgekd._console as rich_console
    from edgekd.stage_plan import StageEstimate, plan_table

    basis = "rule 1.5 s/candidate traced (30 of 30), profile model traced (12): measured rates from the probe"
    plan = plan_table(
        [StageEstimate("export", "pi5", 25.0, basis), StageEstimate("teacher latency", "", 14.0, basis)]
    )
    screen = Console(file=io.StringIO(), width=80, color_system=None)
    handler = rich_console._TableHandler(console=screen, show_time=False, show_path=False)
    text = logging.StreamHandler(io.StringIO())
    log = logging.getLogger("edgekd.test_plan_table")
    log.addHandler(handler), log.addHandler(text)
    try:
        log.warning("%s", plan, extra={"table": plan})
    finally:
        log.removeHandler(handler), log.removeHandler(text)
    drawn = screen.file.getvalue()
    assert max(len(line) for line in drawn.splitlines()) <= 80
    assert "export (pi5)" in drawn and "teacher latency" in drawn and "total" in drawn
    # the long basis wrapped within its column: no line starts with a piece of it
    assert not any(line.startswith(("traced", "profile", "measured")) for line in drawn.splitlines())
    assert text.stream.getvalue().startswith("plan (estimated wall time per stage):\n  stage")


def test_result_json_and_the_report_keep_the_data_summary_and_the_stage_times(tmp_path):
    from edgekd.fit_result import FitResult
    from edgekd.report import render_markdown

    keys = ("stage", "detail", "estimated_s", "actual_s", "actual_over_estimated", "basis")
    stages = [
        dict(zip(keys, ("search", "", 100.0, 150.0, 1.5, "rates"), strict=True)),
        dict(zip(keys, ("parity", "pi5", 12.0, 6.0, 0.5, "rule"), strict=True)),
    ]
    result = as_result(make_result())
    data = dataclasses.replace(
        result.data,
        classes=("cat", "dog"),
        native_size={
            "most_common": [64, 64],
            "images_at_most_common": 900,
            "distinct_sizes": 2,
            "width_range": [32, 64],
            "height_range": [32, 64],
        },
        input_size_reason="input size 64 px: the images' native size (pi5 allows up to 224 px)",
        mode="stream",
        reading="streamed by 2 DataLoader workers (--data-mode stream): fresh random-resized crops",
    )
    result = dataclasses.replace(result, data=data, stages=stages)
    again = FitResult.from_json(result.to_json())
    assert again.stages == stages and again.data == data
    text = render_markdown(again)
    assert "## Data" in text and "Native size: 64×64 for 900 images (widths 32-64, heights 32-64)." in text
    assert "Input size 64 px: the images' native size" in text
    assert "Streamed by 2 DataLoader workers (--data-mode stream): fresh random-resized crops." in text
    assert "## Stage times" in text and "| parity (pi5) | 12 s | 6.0 s | 0.50x |" in text
    assert "| total | 1.9 min | 2.6 min | 1.39x |" in text


def test_a_result_without_them_reads_and_reports_as_before():
    from edgekd.fit_result import FitResult
    from edgekd.report import render_markdown

    old = as_result(make_result()).to_json()
    del old["stages"]
    for key in ("classes", "native_size", "input_size_reason", "mode", "reading"):
        del old["data"][key]
    result = FitResult.from_json(old)
    assert result.stages is None and result.data.native_size is None
    assert "## Stage times" not in render_markdown(result)


def test_search_trials_are_named_trial_k_of_n_with_the_candidate_and_rung():
    from edgekd.search.evidence import Named, planned_trials
    from edgekd.search.halving import RungPlan

    rungs = (RungPlan(4, 1, 500), RungPlan(2, 1, 500), RungPlan(2, 3, 1000))
    assert planned_trials(rungs) == 6  # the second rung repeats the first: its scores are reused
    seen = []

    class Recorder:
        def stage(self, name, detail=""):
            seen.append(("stage", name))

        def task(self, description, total):
            seen.append(("task", description))

    Named(Recorder(), "trial 2/6 lcnet_050 rung 1/3").task("distil epoch 1/1", 10)
    assert seen == [("task", "trial 2/6 lcnet_050 rung 1/3: distil epoch 1/1")]
