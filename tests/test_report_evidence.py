"""What the report says a run got: the headline against the teacher, per-class evidence, every artifact
in one table, the Pareto plot of trained candidates, and `edgekd report` / `edgekd export` writing it
again. The figures are drawn from real digits test images; the model outputs are made up and checked
against counts computed here independently."""

import json

import numpy as np
import pytest
import torch

from edgekd import report
from edgekd.cli import main
from edgekd.data import load_digits_splits, stack
from edgekd.fit_result import FitResult
from edgekd.plots import CandidatePoint, pareto_figure
from edgekd.report_evidence import (
    MAX_EXAMPLES,
    confusion_matrix,
    headline,
    per_class_table,
    predicted_against_measured,
    predictions_record,
    viewable,
)
from edgekd.rundir import RunDir
from tests.test_report import as_result, make_result

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits():
    splits = load_digits_splits(32)
    images, labels = stack(splits.test)
    return splits.preprocessing, images, labels.tolist()


def wrong_every(labels, step, shift):
    """Predictions: the label, except every `step`-th image, which gets the next class."""
    return [(y + shift) % 10 if i % step == 0 else y for i, y in enumerate(labels)]


def full_result(run_path, digits, **changes):
    """A result.json with every section filled: per-class predictions (their misclassified images
    written into `run_path`), the teacher timed here, a search of trained and untrained candidates."""
    preprocessing, images, labels = digits
    result = make_result()
    result["data"]["test"] = len(labels)
    result["export"]["parity"]["samples"] = len(labels)
    result["target"]["threads"] = 4
    result["test_predictions"] = predictions_record(
        run_path, preprocessing, images, labels, wrong_every(labels, 9, 1), wrong_every(labels, 30, 3)
    )
    result["teacher_latency"] = {
        "arch": "resnet18",
        "format": "tflite",
        "precision": "fp32",
        "size_bytes": 9_382_712,  # 4.0x the student's 2,345,678
        "latency": {**result["host_latency"], "median_ms": 4.567, "p90_ms": 4.9},
        "student_file": "exports/student-fp32.tflite",
    }
    result["search"] = {
        "objective": "accuracy",
        "min_retention": None,
        "trials": 3,
        "candidates": [
            _candidate("lcnet_035", 0.4, 0.70, front=True),
            _candidate("mobilenetv3_small_050", 1.2, 0.86, front=True, chosen=True),
            _candidate("resnet10t", 9.0, 0.84),
            _candidate("efficientnet_b0", 40.0, None, feasible=False),
            _candidate("convnext_atto", 25.0, None, feasible=False),
        ],
    }
    # the accuracies the headline states are those of these predictions, as in a real run
    for model in ("student", "teacher"):
        guesses = result["test_predictions"][model]
        result[model]["test_accuracy"] = sum(map(int.__eq__, labels, guesses)) / len(labels)
    result.update(changes)
    return result


def _candidate(name, ms, accuracy, front=False, chosen=False, feasible=True):
    return {
        "name": name,
        "predicted_latency_ms": {"pi5": ms},
        "peak_memory_mb": ms,
        "first_rung_accuracy": accuracy,
        "feasible": feasible,
        "on_front": front,
        "chosen": chosen,
    }


def test_confusion_matrix_counts_every_true_and_predicted_pair():
    rng = np.random.default_rng(0)
    true, predicted = rng.integers(0, 7, 500).tolist(), rng.integers(0, 7, 500).tolist()
    expected = [[0] * 7 for _ in range(7)]
    for t, p in zip(true, predicted, strict=True):
        expected[t][p] += 1
    assert confusion_matrix(true, predicted, 7).tolist() == expected


def test_per_class_accuracy_of_student_and_teacher_and_their_overall_row():
    predictions = {
        "labels": ["cat", "dog", "fox"],
        "true": [0, 0, 0, 0, 1, 1, 2, 2],
        "student": [0, 0, 1, 2, 1, 1, 2, 0],
        "teacher": [0, 0, 0, 0, 1, 0, 2, 2],
    }
    table = per_class_table(predictions)
    assert table.header == ("class", "test images", "student accuracy", "teacher accuracy")
    assert table.rows == (
        ("cat", "4", "50.00 %", "100.00 %"),
        ("dog", "2", "100.00 %", "50.00 %"),
        ("fox", "2", "50.00 %", "100.00 %"),
        ("all classes", "8", "62.50 %", "87.50 %"),
    )
    no_teacher = per_class_table({**predictions, "teacher": None})
    assert no_teacher.header[-1] == "student accuracy" and no_teacher.rows[-1][-1] == "62.50 %"


def test_misclassified_images_are_kept_as_the_model_saw_them(tmp_path, digits):
    preprocessing, images, labels = digits
    student = wrong_every(labels, 5, 2)
    record = predictions_record(tmp_path, preprocessing, images, labels, student, None)
    wrong = [i for i, (t, s) in enumerate(zip(labels, student, strict=True)) if t != s]
    assert len(wrong) > MAX_EXAMPLES
    assert [e["index"] for e in record["examples"]] == wrong[:MAX_EXAMPLES]
    assert record["split"] == "test" and record["labels"] == CLASSES and record["teacher"] is None
    from PIL import Image

    first = record["examples"][0]
    with Image.open(tmp_path / first["file"]) as image:
        pixels = np.asarray(image)
    assert pixels.shape == (32, 32, 3) and pixels.max() > pixels.min()
    # normalising the written pixels again gives the image the model was checked on
    again = preprocessing.normalise(torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous())[0]
    assert torch.allclose(again, images[first["index"]], atol=0.5 / 255 / min(preprocessing.std) + 1e-6)
    assert np.array_equal(viewable(again, preprocessing), pixels)


def test_the_headline_divides_the_teacher_by_the_student_on_the_same_format_and_threads(tmp_path, digits):
    top = headline(as_result(full_result(tmp_path, digits)))
    rows = {row[0]: row[1:] for row in top.table.rows}
    assert rows["parameters"] == ("11,181,642", "577,000", "×19.4 fewer")  # 11181642 / 577000 = 19.38
    assert rows["file (tflite fp32)"] == ("9.38 MB", "2.35 MB", "×4.0 smaller")
    latency = rows["latency on this host (median, litert 2.0.1, 1 thread)"]
    assert latency == ("4.567 ms", "0.457 ms", "×10.0 faster")  # 4.567 / 0.4567
    # 239 and 260 of 269 right: 88.85 % against 96.65 %, 7.81 points less, 239 / 260 = 91.9 % kept
    assert rows["accuracy (test, 269 images)"] == ("96.65 %", "88.85 %", "-7.81 points, keeps 91.9 %")
    assert top.notes == ()
    # timed with other threads than the student: not divided
    other = full_result(tmp_path, digits)
    other["teacher_latency"]["latency"] = {**other["teacher_latency"]["latency"], "threads": 4}
    other_top = headline(as_result(other))
    assert not any(row[0].startswith("latency") for row in other_top.table.rows)
    assert "timed with other settings than the student's file" in other_top.notes[0]
    why = {"note": "the teacher is an ONNX model: edgekd exports only PyTorch models"}
    (note,) = headline(as_result(full_result(tmp_path, digits, teacher_latency=why))).notes
    assert note.endswith("not measured: the teacher is an ONNX model: edgekd exports only PyTorch models.")


def test_a_prediction_is_compared_only_with_a_measurement_on_its_device_and_threads(tmp_path, digits):
    result = full_result(tmp_path, digits)
    assert "is not checked against a measurement: this host is not that device" in (
        predicted_against_measured(as_result(result))
    )
    result["device_latency"] = {
        "device": "pi5-desk",
        "uri": "ssh://pi@pi5",
        "measurement": {"fingerprint": {}, "latency": {"runs": 100, "threads": 4}},
        "measured_ms": 1.5,
        "statistic": "median",
        "predicted_ms": 1.234,
        "predicted_for": "pi5",
        "measured_over_predicted": 1.5 / 1.234,
    }
    assert predicted_against_measured(as_result(result)) == (
        "Predicted against measured on pi5 (4 threads): 1.234 ms predicted, 1.500 ms median measured on "
        "pi5-desk (measured / predicted = 1.22)."
    )
    result["device_latency"]["device_target"] = "pi5"  # registered for pi5: the same answer
    assert predicted_against_measured(as_result(result)).startswith("Predicted against measured on pi5")
    for known, says in (("host", "(this host) is not a pi5"), ("pi4", "(registered as a pi4) is not a pi5")):
        result["device_latency"]["device_target"] = known
        assert f"pi5-desk {says}: its 1.500 ms is not set beside" in predicted_against_measured(
            as_result(result)
        )
    result["device_latency"]["device_target"] = None
    result["device_latency"]["measurement"]["latency"]["threads"] = 1
    assert "measured with 1 thread: the two are not set side by side" in (
        predicted_against_measured(as_result(result))
    )


def test_the_pareto_plot_draws_trained_candidates_only_with_front_choice_and_budget(tmp_path, digits):
    result = as_result(full_result(tmp_path, digits))
    points = [
        CandidatePoint(c["name"], c["predicted_latency_ms"]["pi5"], c["peak_memory_mb"],
                       c["first_rung_accuracy"], c["feasible"], c["on_front"], c["chosen"])
        for c in result.search["candidates"]
    ]  # fmt: skip
    axes = pareto_figure(points, budget_ms=20.0, target="pi5").axes[0]
    drawn = {round(float(x), 3) for c in axes.collections for x, _ in c.get_offsets()}
    assert drawn == {0.4, 1.2, 9.0}  # never the untrained 25 and 40 ms candidates
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == [
        "trained, within the budgets",
        "trained, over a budget",
        "Pareto front (2)",
        "chosen: mobilenetv3_small_050",
        "latency budget 20 ms",
    ]
    assert "3 trained candidates (2 not trained, not drawn)" in axes.get_title()
    front = axes.get_lines()[0]  # the staircase through the front
    assert list(front.get_xdata()) == [0.4, 1.2] and list(front.get_ydata()) == [70.0, 86.0]
    assert axes.get_xlabel() == "predicted latency on pi5 (ms, log scale)"
    assert pareto_figure([CandidatePoint("a", 1.0, 1.0, None, True, False)]) is None


def test_every_section_and_split_is_in_the_report(tmp_path, digits):
    result = full_result(tmp_path, digits)
    paths = report.write_reports(RunDir(tmp_path, ("pi5",)), as_result(result))
    names = [p.name for p in paths]
    assert names[:2] == ["confusion-matrix.png", "misclassified.png"] and names[-2:] == [
        "report.md",
        "report.html",
    ]
    assert "search-pareto.png" in names and "training-curves.png" in names
    md = (tmp_path / "report.md").read_text()
    for heading in (
        "## Per class (test, 269 images)",
        "## Artifacts",
        "## Latency",
        "## Distillation",
        "## Figures",
    ):
        assert heading in md, heading
    predictions = result["test_predictions"]
    zeros = [i for i, y in enumerate(predictions["true"]) if y == 0]
    right = [sum(predictions[m][i] == 0 for i in zeros) for m in ("student", "teacher")]
    shares = " | ".join(f"{100 * r / len(zeros):.2f} %" for r in right)
    assert f"| `0` | {len(zeros)} | {shares} |" in md  # class 0's images and both models on them
    wrong = sum(
        t != s for t, s in zip(result["test_predictions"]["true"], result["test_predictions"]["student"])
    )
    assert f"Misclassified by the student: 24 of its {wrong} errors on the test split" in md
    assert "| val accuracy (validation, 271 images) |" in md.replace(" | train loss", "")
    assert "87.36 % (test, 269 images)" in md
    assert "| x86_64 test host | `teacher resnet18 (tflite fp32)` | median, litert 2.0.1, 1 thread" in md
    assert "| pi5 | 4 | int8 | 1.23 |" in md


def test_an_old_run_without_per_class_evidence_still_renders(tmp_path):
    report.write_reports(RunDir(tmp_path, ("pi5",)), as_result(make_result()))
    md = (tmp_path / "report.md").read_text()
    assert "This run kept no per-class predictions (its fit predates them)" in md
    assert "not measured: the run was written before edgekd timed the teacher." in md


def _finished_run(tmp_path, digits):
    run = tmp_path / "run"
    run.mkdir()
    result = full_result(run, digits)
    (run / "result.json").write_text(json.dumps(as_result(result).to_json()))
    return run


def test_edgekd_report_writes_the_report_again_from_the_run_directory(tmp_path, digits, capsys):
    run = _finished_run(tmp_path, digits)
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    assert page.count("<img") == 4 and "Per class (test, 269 images)" in page
    (run / "misclassified" / "test-00000.png").unlink()  # an example gone: the grid shows the rest
    assert main(["report", str(run)]) == 0
    assert "Misclassified by the student: 23 of its" in (run / "report.md").read_text()
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'result.json'}: no result.json" in capsys.readouterr().err


def test_edgekd_exports_rows_join_the_runs_artifacts_table(tmp_path, digits):
    run = _finished_run(tmp_path, digits)
    exports = run / "exports"
    exports.mkdir()
    rows = [
        {"format": "pytorch", "precision": "fp32", "status": "reference", "file": None},
        {"format": "onnx", "precision": "fp32", "status": "ok", "file": "/elsewhere/exports/model-fp32.onnx",
         "size_mb": 2.31, "accuracy": 0.8711, "top1_agreement": 1.0, "max_abs_diff": 2e-6, "latency_ms": 0.3},
        {"format": "coreml", "precision": "fp32", "status": "failed to export", "file": None},
    ]  # fmt: skip
    (exports / "exports.json").write_text(json.dumps({"arch": "mobilenetv3_small_050", "rows": rows}))
    assert report.update_after_export(exports, parity_images=256) == run / "report.html"
    assert json.loads((exports / "exports.json").read_text())["parity"] == {
        "split": "validation",
        "images": 256,
    }
    md = (run / "report.md").read_text()
    assert (
        "| `exports/model-fp32.onnx` | edgekd export | onnx, fp32 | ok | 2.31 MB | 100.00 % | 2.00e-06 | "
        "87.11 % (validation, 256 images) | 0.300 |" in md
    )
    assert "| `(none)` | edgekd export | coreml, fp32 | failed to export |" in md
    assert "| `exports/student-fp32.tflite` | fit |" in md and "pytorch" not in md.split("## Artifacts")[1]
    assert "edgekd export (exports/exports.json) checks on validation, 256 images" in md
    # an export directory outside any run: its exports.json is annotated, no report is written
    elsewhere = tmp_path / "loose"
    elsewhere.mkdir()
    (elsewhere / "exports.json").write_text(json.dumps({"arch": "x", "rows": []}))
    assert report.update_after_export(elsewhere, parity_images=8) is None


def test_a_result_with_the_new_keys_reads_back_and_one_without_them_too(tmp_path, digits):
    result = as_result(full_result(tmp_path, digits))
    again = FitResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result and again.targets[0].target.threads == 4
    old = as_result(make_result())
    assert old.test_predictions is None and old.teacher_latency is None and old.target.threads is None


def test_the_teachers_weights_hash_follows_its_weights_wherever_they_came_from():
    from edgekd.fit_shipping import weights_sha256

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    copy = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    copy.load_state_dict(model.state_dict())
    assert weights_sha256(model) == weights_sha256(copy)
    with torch.no_grad():
        copy[0].weight[0, 0, 0, 0] += 1e-3
    assert weights_sha256(model) != weights_sha256(copy)
    assert weights_sha256(torch.nn.ReLU()) is None  # no weights: nothing to key a cache entry on
