import base64
import copy
import html
import io
import re
import subprocess
import sys

import pytest
from PIL import Image

from edgekd import report
from edgekd.fit_result import FitResult
from edgekd.plots import curve_panels, training_curves
from edgekd.rundir import RunDir
from tests.conftest import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _epoch(epoch, loss, accuracy, agreement, kl, lr):
    return {
        "epoch": epoch,
        "train_loss": loss,
        "val_accuracy": accuracy,
        "val_teacher_agreement": agreement,
        "seconds": 3.25,
        "val_teacher_kl": kl,
        "val_ece": 0.05 / epoch,
        "lr": lr,
    }


def make_result(**changes):
    """A result.json as pipeline.fit writes it, with made-up numbers."""
    result = {
        "run": "runs/20250101-120000-pi5",
        "config": {"target": "pi5", "epochs": 3},
        "target": {
            "name": "pi5",
            "description": "Raspberry Pi 5, 4x Cortex-A76",
            "default_precision": "int8",
            "format": "tflite",
            "budget_ms": 20.0,
        },
        "data": {
            "name": "digits",
            "num_classes": 10,
            "input_size": 32,
            "train": 1257,
            "val": 271,
            "test": 269,
        },
        "teacher": {
            "arch": "resnet18",
            "source": "trained here for 2 epochs",
            "cached": True,
            "params": 11_181_642,
            "macs": 148_000_000,
            "test_accuracy": 0.9591,
        },
        "student": {
            "arch": "mobilenetv3_small_050",
            "params": 577_000,
            "macs": 3_100_000,
            "test_accuracy": 0.8736,
            "predicted_latency_ms": 1.234,
            "predicted_for": "pi5",
            "predicted_by": "uncalibrated: profiles/pi5.csv has no litert rows",
            "peak_memory_mb": 0.8,
            "reason": "mobilenetv3_small_050 has the most MACs.",
            "checkpoint": "student.safetensors",
            "distillation": None,
            "scheme": "offline",
            "loss": ["kd"],
        },
        "export": {
            "file": "exports/student-fp32.tflite",
            "format": "tflite",
            "precision": "fp32",
            "layout": "NHWC",
            "size_bytes": 2_345_678,
            "parity": {
                "samples": 269,
                "top1_agreement": 1.0,
                "max_abs_diff": 3.1e-6,
                "torch_accuracy": 0.8736,
                "artifact_accuracy": 0.8736,
            },
        },
        "host_latency": {
            "device": "x86_64 test host",
            "runtime": "litert",
            "runtime_version": "2.0.1",
            "threads": 1,
            "runs": 200,
            "median_ms": 0.4567,
            "p90_ms": 0.5123,
            "cold_start_ms": 12.34,
        },
        "history": [
            _epoch(1, 1.9, 0.41, None, 0.9, 3e-4),  # agreement missing in one epoch only
            _epoch(2, 1.1, 0.72, 0.75, 0.5, 3e-3),
            _epoch(3, 0.6, 0.86, 0.88, 0.2, 1e-6),
        ],
    }
    result.update(changes)
    return result


def as_result(result: dict) -> FitResult:
    """`make_result`'s dict as the FitResult fit returns: its top-level target, export and host latency
    are its one target's record (which result.json repeats at the top level)."""
    student = result["student"]
    record = {
        "target": result["target"],
        "predicted_latency_ms": student["predicted_latency_ms"],
        "predicted_by": student["predicted_by"],
        "peak_memory_mb": student["peak_memory_mb"],
        "model_mb": 2.2,
        "fallback_ops": [],
        "export": result["export"],
        "host_latency": result["host_latency"],
    }
    return FitResult.from_json({**result, "targets": [record]})


def write_reports(directory, result: dict):
    return report.write_reports(RunDir(directory, ("pi5",)), as_result(result))


def render_markdown(result: dict) -> str:
    return report.render_markdown(as_result(result))


def render_html(result: dict) -> str:
    return report.render_html(as_result(result))


def retention_sentence(result: dict) -> str | None:
    return report.retention_sentence(as_result(result))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One run directory with the reports written, shared because drawing is the slow part."""
    run = tmp_path_factory.mktemp("run")
    paths = write_reports(run, make_result())
    return run, paths


def test_writes_markdown_html_and_the_training_curves(written):
    run, paths = written
    assert paths == [run / "training-curves.png", run / "report.md", run / "report.html"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_leaves_no_temporary_files(written):
    run, paths = written
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in paths)


def test_training_curves_png_is_a_sane_image(written):
    run, _ = written
    with Image.open(run / "training-curves.png") as image:
        image.verify()
    with Image.open(run / "training-curves.png") as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 600 <= width <= 3000 and 300 <= height <= 2000 and width > height


def test_html_is_self_contained_and_inlines_the_same_png(written):
    run, _ = written
    page = (run / "report.html").read_text()
    (data,) = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    png = base64.b64decode(data, validate=True)
    assert png.startswith(PNG_SIGNATURE) and png == (run / "training-curves.png").read_bytes()
    Image.open(io.BytesIO(png)).verify()
    assert "<script" not in page and "<link" not in page and "http" not in page
    assert "<style>" in page


def test_markdown_links_the_png_beside_it(written):
    run, _ = written
    assert "![Training curves](training-curves.png)" in (run / "report.md").read_text()


def test_both_reports_carry_the_results_numbers(written):
    run, _ = written
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    for text in (
        "edgekd fit: mobilenetv3_small_050 for pi5",
        "87.36 %",  # student test accuracy
        "95.91 %",  # teacher test accuracy
        "exports/student-fp32.tflite",
        "2.35 MB",
        "3.10e-06",  # max abs logit diff
        "0.457",  # host median latency
        "1.23",  # predicted latency
        "11,181,642",  # teacher params
        "uncalibrated: profiles/pi5.csv has no litert rows",
        "0.6000",  # last epoch's train loss
        "88.00 %",  # last epoch's agreement with the teacher
    ):
        assert text in md, text
        assert text in page, text
    assert "<title>edgekd fit: mobilenetv3_small_050 for pi5</title>" in page
    assert "| accuracy (test, 269 images) | 95.91 % | 87.36 % | -8.55 points, keeps 91.1 % |" in md


def test_an_epoch_without_agreement_reads_not_available(written):
    run, _ = written
    page = (run / "report.html").read_text()
    (first_epoch,) = re.findall(r"<tr><td>1</td>.*?</tr>", page)
    assert "<td>41.00 %</td><td>n/a</td>" in first_epoch


def test_text_from_the_result_is_escaped_in_html(tmp_path):
    target = dict(make_result()["target"], description="<script>alert('pwned')</script> & co")
    write_reports(tmp_path, make_result(target=target, history=[]))
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; co" in page


def test_an_empty_history_gives_reports_without_figures(tmp_path):
    paths = write_reports(tmp_path, make_result(history=[]))
    assert [p.name for p in paths] == ["report.md", "report.html"]
    assert "<img" not in (tmp_path / "report.html").read_text()
    assert "![" not in (tmp_path / "report.md").read_text()
    assert training_curves([]) is None


def test_a_series_no_epoch_recorded_is_left_out():
    history = copy.deepcopy(make_result()["history"])
    for m in history:
        m["val_teacher_agreement"] = m["val_teacher_kl"] = None  # trained without a teacher
    panels = {p.title: [s.label for s in p.series] for p in curve_panels(history)}
    assert panels == {
        "train loss": ["train loss"],
        "val accuracy (%)": ["accuracy"],
        "val ECE": ["expected calibration error"],
        "learning rate": ["learning rate"],
    }
    assert training_curves(history).startswith(PNG_SIGNATURE)


def test_curves_keep_a_gap_for_a_partly_missing_series_and_show_fractions_as_percent():
    (accuracy,) = (p for p in curve_panels(make_result()["history"]) if p.title == "val accuracy (%)")
    assert [s.values for s in accuracy.series] == [(41.0, 72.0, 86.0), (None, 75.0, 88.0)]


def test_the_scratch_baseline_is_drawn_beside_the_distilled_curve_and_its_gain_stated():
    result = make_result()
    baseline_history = [
        {"epoch": e, "val_accuracy": a} for e, a in ((1, 0.30), (2, 0.55), (3, 0.61), (4, 0.7))
    ]
    result["baseline"] = {
        "kind": "scratch",
        "description": "the same student trained on the labels alone",
        "test_accuracy": result["student"]["test_accuracy"] - 0.0425,
        "seconds": 12.0,
        "history": baseline_history,
    }
    (accuracy,) = (
        p for p in curve_panels(result["history"], baseline_history) if p.title == "val accuracy (%)"
    )
    assert [s.label for s in accuracy.series][-1] == "accuracy without the teacher"
    assert accuracy.series[-1].values == pytest.approx((30.0, 55.0, 61.0, 70.0))  # 4 baseline epochs beside 3
    assert training_curves(result["history"], baseline_history).startswith(PNG_SIGNATURE)
    markdown = render_markdown(result)
    assert "distillation added 4.25 points" in markdown and "in 12 s of training" in markdown
    result["baseline"]["test_accuracy"] = result["student"]["test_accuracy"] + 0.01
    assert "distillation cost 1.00 points" in render_markdown(result)
    assert "Without the teacher" not in render_markdown(make_result())


def test_a_failed_write_keeps_the_old_report_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    write_reports(tmp_path, make_result(history=[]))
    before = (tmp_path / "report.html").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(report, "render_html", broken)
    with pytest.raises(RuntimeError):
        write_reports(tmp_path, make_result())
    assert (tmp_path / "report.html").read_text() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_importing_edgekd_and_its_help_load_no_matplotlib():
    code = (
        "import sys, edgekd, edgekd.report, edgekd.plots\n"
        "from edgekd.cli import main\n"
        "rc = main(['--help'])\n"
        "print('LOADED', [m for m in sys.modules if m.split('.')[0] == 'matplotlib'], rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert "LOADED [] 0" in out


def test_a_quantization_aware_artifact_is_shown_beside_post_training_int8(tmp_path):
    result = make_result(history=[])
    parity = result["export"]["parity"]
    result["export"].update(precision="int8", quantization_aware=True)
    result["export"]["post_training_int8"] = {
        "file": "exports/student-ptq-int8.tflite",
        "size_bytes": 1_500_000,
        "parity": {**parity, "top1_agreement": 0.9665, "artifact_accuracy": 0.6208},
    }
    result["student"]["distillation"] = "distilled offline, then fine-tuned int8 quantization-aware"
    markdown = render_markdown(result)
    shipped = "| `exports/student-fp32.tflite` | fit | tflite, int8 quantization-aware, NHWC | shipped |"
    assert shipped in markdown
    assert (
        "| `exports/student-ptq-int8.tflite` | fit | tflite, int8 post-training (comparison), NHWC | "
        "comparison, not shipped | 1.50 MB | 96.65 % | 3.10e-06 | 62.08 % (test, 269 images) |" in markdown
    )
    assert "62.08 %" in markdown and "Distillation: distilled offline, then fine-tuned" in markdown
    assert "int8 post-training (comparison)" in render_html(result)


def test_a_device_measurement_reads_against_the_prediction_with_its_slowest_layers():
    result = make_result(history=[])
    result["device_latency"] = {
        "device": "pi5-desk",
        "uri": "ssh://pi@raspberrypi.local",
        "measurement": {
            "fingerprint": {"cpu": "Cortex-A76", "os": "Linux 6.6"},
            "latency": {"runs": 240},
            "layers": [
                {"layer": "stages.0/conv", "type": "Convolution", "ms": 0.75},
                {"layer": "head/fc", "type": "FullyConnected", "ms": 0.25},
            ],
        },
        "measured_ms": 2.5,
        "statistic": "median",
        "predicted_ms": 2.0,
        "predicted_for": "pi5",
        "measured_over_predicted": 1.25,
    }
    markdown = render_markdown(result)
    assert (
        "Measured on pi5-desk (ssh://pi@raspberrypi.local; Cortex-A76, Linux 6.6): 2.500 ms median over "
        "240 runs." in markdown
    )
    assert "| `stages.0/conv` | Convolution | 0.750 | 75.0 % |" in markdown
    assert "Measured on pi5-desk" not in render_markdown(make_result(history=[]))


def test_hostile_names_stay_literal_text_in_markdown(tmp_path):
    """A data folder, target description, class-like model name and file name built to inject a link,
    a script, emphasis and a list: a CommonMark renderer shows each as the text it is."""
    from markdown_it import MarkdownIt

    hostile = "x](javascript:alert(1))<script>alert(1)</script>"
    result = make_result(history=[])  # no figures: the report's own <img> would hide an injected one
    result["data"]["name"] = hostile
    result["target"] = dict(result["target"], description="1. *loud* [click](http://evil) `tick`")
    result["student"]["arch"] = "<img src=x onerror=alert(1)>_net_"
    result["export"] = dict(result["export"], file="exports/a`b|<i>.tflite")
    write_reports(tmp_path, result)
    markdown = (tmp_path / "report.md").read_text()
    rendered = MarkdownIt("commonmark").enable("table").render(markdown)
    for tag in ("<a ", "<script", "<img", "<em>", "<ol", "<i>"):
        assert tag not in rendered, tag
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    for literal in (hostile, "1. *loud* [click](http://evil) `tick`", "<img src=x onerror=alert(1)>_net_"):
        assert literal in text, literal
    assert "exports/a`b|<i>.tflite" in text  # the file name, whole, in one code span of its cell


def test_the_finished_students_retention_is_held_against_what_was_asked():
    # 0.8736 / 0.9591 = 91.1 % of the teacher's accuracy.
    plain = retention_sentence(make_result())
    assert plain == "The student keeps 91.1 % of the teacher's test accuracy (87.36 % against 95.91 %)."
    asked = make_result(search={"objective": "retention", "min_retention": 0.97, "trials": 6})
    short = retention_sentence(asked)
    assert short.startswith(
        "The student keeps 91.1 % of the teacher's test accuracy (87.36 % against 95.91 %), "
    )
    asked_for = "short of the 97 % asked for (--min-retention)"
    assert f"{asked_for}: the trials judged it against the best trial" in short
    # a search that passed the student on its full training judged it against the teacher, on validation
    confirmed = make_result(search={"objective": "retention", "min_retention": 0.97, "mode": "confirm"})
    short = retention_sentence(confirmed)
    assert f"{asked_for}: the search passed it after its full training" in short
    assert "best trial" not in short
    # a student no trial measured (named with --student, or the only feasible one) was judged by none
    untried = make_result(search={"objective": "retention", "min_retention": 0.97, "trials": 0})
    short = retention_sentence(untried)
    assert f"{asked_for}: no trial measured it before its final training" in short
    assert "best trial" not in short
    met = make_result(search={"objective": "retention", "min_retention": 0.9})
    assert retention_sentence(met).endswith("meeting the 90 % asked for (--min-retention).")
    # Another objective asked for no share: the figure alone.
    other = make_result(search={"objective": "accuracy", "min_retention": None})
    assert retention_sentence(other) == plain


def test_the_report_states_the_retention(tmp_path):
    result = make_result(search={"objective": "retention", "min_retention": 0.97})
    write_reports(tmp_path, result)
    assert "short of the 97 % asked for" in (tmp_path / "report.md").read_text()


def test_the_host_latency_names_its_statistic_and_the_runtime_settings_it_was_timed_with():
    result = make_result(history=[])
    result["host_latency"] = {
        **result["host_latency"],
        "runtime": "openvino",
        "runtime_version": "2026.4.1",
        "statistic": "median",
        "settings": {"inference_precision": "bf16", "streams": "1"},
    }
    markdown = render_markdown(result)
    assert (
        "| x86_64 test host | `exports/student-fp32.tflite` | median, openvino 2026.4.1 (inference precision "
        "bf16, streams 1), 1 thread, 200 runs | 0.457 | 0.512 |" in markdown
    )
    # A run written before latencies named their statistic and settings held the median.
    assert "| median, litert 2.0.1, 1 thread, 200 runs | 0.457 |" in render_markdown(make_result())


def test_the_artifacts_section_lists_each_app_bundle_with_its_files_and_sizes(tmp_path):
    from edgekd.report_evidence import bundle_lines

    android = tmp_path / "exports" / "android"
    android.mkdir(parents=True)
    (android / "student-fp32.tflite").write_bytes(b"\0" * 1_580_000)
    (android / "labels.txt").write_text("0\n1\n")
    package = tmp_path / "exports" / "ios" / "student-fp32.mlpackage" / "Data"
    package.mkdir(parents=True)
    (package / "weights.bin").write_bytes(b"\0" * 30_000)
    (package / "model.mlmodel").write_bytes(b"\0" * 20_000)
    lines = bundle_lines(tmp_path)
    assert lines == (
        "App bundle exports/android/, for an Android app: the .tflite carries TFLite Metadata (labels, "
        "normalisation); README.md has the Kotlin snippet: labels.txt (4 bytes), "
        "student-fp32.tflite (1.58 MB).",
        "App bundle exports/ios/, for an iOS app: a Core ML classifier (labels, image input); README.md has "
        "the Swift/Vision snippet: student-fp32.mlpackage (0.05 MB).",
    )
    artifacts = (
        report.render_markdown(as_result(make_result()), bundles=lines)
        .split("## Artifacts")[1]
        .split("\n## ")[0]
    )
    assert all(line in artifacts for line in lines)
    assert bundle_lines(tmp_path / "elsewhere") == ()
