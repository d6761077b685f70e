"""What the report says a run got: the headline against the teacher, per-class evidence from the test
split, and every artifact of the run in one table. Each is a block of the report's document model
(`edgekd.report_markup`) computed from a `FitResult` (and the run's `exports.json`); `edgekd.report`
places them.

Every accuracy names its split and image count: the fit measures the teacher, the student and its
artifacts on the whole test split; `edgekd export` checks parity on a sample of the validation split.

Example:
    >>> confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 3).tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd._io import write_bytes_atomic
from edgekd.data_summary import FEW_CLASSES
from edgekd.plots import confusion_plot, examples_grid
from edgekd.report_markup import Code, Plot, Section, Table

if TYPE_CHECKING:
    import numpy as np

    from edgekd.fit_result import FitResult, TargetResult

MAX_EXAMPLES = 24  # misclassified test images kept and drawn: a grid that still reads at a glance
EXAMPLES_DIR = "misclassified"  # beside report.html in the run directory


def predictions_record(
    run_path: Path,
    preprocessing: Any,
    images: Any,
    true: Sequence[int],
    student: Sequence[int],
    teacher: Sequence[int] | None,
) -> dict[str, Any]:
    """result.json's `test_predictions`: the test labels, each model's top-1 class, and the student's
    first `MAX_EXAMPLES` misclassified images written as PNG files into `run_path/misclassified/`
    (un-normalised, at the input size the model saw), so `edgekd report` can draw them again.

    Args:
        run_path: the run directory.
        preprocessing: the data's `Preprocessing` (labels, mean and std).
        images: the test split as a normalised NCHW float tensor, in test order.
        true, student, teacher: the label and the student's and teacher's class of every test image.
    """
    wrong = [i for i, (label, guess) in enumerate(zip(true, student, strict=True)) if label != guess]
    examples = []
    for index in wrong[:MAX_EXAMPLES]:
        file = f"{EXAMPLES_DIR}/test-{index:05d}.png"
        write_bytes_atomic(run_path / file, _png(viewable(images[index], preprocessing)))
        examples.append({"index": index, "file": file})
    return {
        "split": "test",
        "labels": list(preprocessing.labels),
        "true": list(true),
        "student": list(student),
        "teacher": None if teacher is None else list(teacher),
        "examples": examples,
    }


def viewable(image: Any, preprocessing: Any) -> np.ndarray:
    """One normalised CHW image back to uint8 HWC RGB: `x * std + mean`, scaled from [0, 1]."""
    import numpy as np

    array = np.asarray(image, dtype=np.float32)
    mean = np.asarray(preprocessing.mean, np.float32)[:, None, None]
    std = np.asarray(preprocessing.std, np.float32)[:, None, None]
    return np.clip(np.rint((array * std + mean) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """Counts: row = the true class, column = the predicted one."""
    import numpy as np

    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def per_class_table(predictions: dict[str, Any]) -> Table:
    """Per class: its test images and the student's (and teacher's) accuracy on them; the row that
    sums them is the overall accuracy."""
    labels, true = predictions["labels"], predictions["true"]
    models = [("student", predictions["student"])]
    if predictions.get("teacher") is not None:
        models.append(("teacher", predictions["teacher"]))
    matrices = [confusion_matrix(true, guesses, len(labels)) for _, guesses in models]
    rows = []
    for k, label in enumerate(labels):
        count = int(matrices[0][k].sum())
        rows.append(
            (Code(label), str(count), *(_share(int(m[k, k]), count) for m in matrices))  # type: ignore[arg-type]
        )
    total = len(true)
    rows.append(("all classes", str(total), *(_share(int(m.trace()), total) for m in matrices)))
    return Table(("class", "test images", *(f"{name} accuracy" for name, _ in models)), tuple(rows))


def _share(part: int, whole: int) -> str:
    return "n/a" if not whole else f"{100 * part / whole:.2f} %"


def split_phrase(split: str, images: int | None) -> str:
    """'test, 269 images': which split an accuracy is measured on, and on how many images."""
    return split if images is None else f"{split}, {images:,} image{'s' if images != 1 else ''}"


# Per class -------------------------------------------------------------------------------------------

CONFUSION, EXAMPLES = "confusion-matrix.png", "misclassified.png"  # the per-class section's figures


def class_plots(result: FitResult, run_path: Path | None) -> list[Plot]:
    """The confusion matrices (student, teacher beside it) and the grid of misclassified examples."""
    predictions = result.test_predictions
    if not predictions:
        return []
    labels, true = predictions["labels"], predictions["true"]
    test = split_phrase("test", len(true))
    panels = [("student " + result.student.arch, confusion_matrix(true, predictions["student"], len(labels)))]
    if predictions.get("teacher") is not None:
        teacher = confusion_matrix(true, predictions["teacher"], len(labels))
        panels.append(("teacher " + result.teacher.arch, teacher))
    plots = [Plot(f"Confusion matrices ({test}): rows true class, columns predicted", CONFUSION,
                  confusion_plot(labels, panels))]  # fmt: skip
    examples = _examples(predictions, run_path)
    if examples:
        shown = len(examples)
        wrong = sum(t != s for t, s in zip(true, predictions["student"], strict=True))
        plots.append(
            Plot(
                f"Misclassified by the student: {shown} of its {wrong} errors on the test split "
                "(true → predicted)",
                EXAMPLES,
                examples_grid(examples),
            )
        )
    return plots


def _examples(predictions: dict[str, Any], run_path: Path | None) -> list[tuple[Any, str]]:
    """The kept misclassified images with their captions; one whose file is gone is left out."""
    if run_path is None:
        return []
    import numpy as np
    from PIL import Image

    labels, shown = predictions["labels"], []
    for example in predictions.get("examples", ()):
        path = run_path / example["file"]
        if not path.is_file():
            continue
        index = example["index"]
        true, guess = labels[predictions["true"][index]], labels[predictions["student"][index]]
        with Image.open(path) as image:
            shown.append((np.asarray(image.convert("RGB")), f"{true} → {guess}"))
    return shown


def class_section(result: FitResult, figures: Sequence[Plot]) -> Section:
    """Per-class accuracy of the student and the teacher on the test split, their confusion matrices
    and the student's misclassified examples."""
    predictions = result.test_predictions
    if not predictions:
        return Section(
            "Per class",
            ("This run kept no per-class predictions (its fit predates them): fit again to see them.",),
        )
    test = split_phrase("test", len(predictions["true"]))
    examples = () if any(p.filename == EXAMPLES for p in figures) else (
        ("The student misclassified no test image." if not predictions.get("examples")
         else "The misclassified examples' images are no longer in the run directory."),
    )  # fmt: skip
    return Section(f"Per class ({test})", (per_class_table(predictions), *figures, *examples))


# The headline ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """What the student is against the teacher; a figure not measured is None and `notes` say why."""

    table: Table
    notes: tuple[str, ...]


def headline(result: FitResult) -> Headline:
    """Accuracy (points and retention), parameters, MACs, file size and latency on this host, teacher
    beside student, each with the student's gain; file and latency only where the teacher was exported
    in the student's format and precision and timed here with the same threads."""
    t, s, data = result.teacher, result.student, result.data
    test = split_phrase("test", data.test)
    gap = 100 * (s.test_accuracy - t.test_accuracy)
    kept = f", keeps {100 * s.test_accuracy / t.test_accuracy:.1f} %" if t.test_accuracy else ""
    rows: list[tuple[str, ...]] = [
        ("model", t.arch, s.arch, ""),
        (
            f"accuracy ({test})",
            _pct(t.test_accuracy),
            _pct(s.test_accuracy),
            f"{gap:+.2f} points{kept}",
        ),
        ("parameters", f"{t.params:,}", f"{s.params:,}", _fewer(t.params, s.params)),
        ("MACs", "n/a" if t.macs is None else f"{t.macs:,}", f"{s.macs:,}", _fewer(t.macs, s.macs)),
    ]
    notes: list[str] = []
    timed = result.teacher_latency or {}
    record = _timed_student(result, timed)
    if record is not None and "latency" in timed:
        from edgekd.devices import central_figure, runtime_description

        what = f"{timed['format']} {timed['precision']}"
        student_bytes = record.export.size_bytes
        rows.append(
            (
                f"file ({what})",
                f"{timed['size_bytes'] / 1e6:.2f} MB",
                f"{student_bytes / 1e6:.2f} MB",
                _times(timed["size_bytes"], student_bytes, "smaller"),
            )
        )
        statistic, teacher_ms = central_figure(timed["latency"])
        _, student_ms = central_figure(record.host_latency)
        rows.append(
            (
                f"latency on this host ({statistic}, {runtime_description(record.host_latency)})",
                f"{teacher_ms:.3f} ms",
                f"{student_ms:.3f} ms",
                _times(teacher_ms, student_ms, "faster"),
            )
        )
    else:
        why = timed.get("note") or (
            "the teacher was timed with other settings than the student's file"
            if "latency" in timed
            else "the run was written before edgekd timed the teacher"
        )
        notes.append(f"File size and latency against the teacher: not measured: {why}.")
    return Headline(Table(("", "teacher", "student", "student against teacher"), tuple(rows)), tuple(notes))


def _timed_student(result: FitResult, timed: dict[str, Any]) -> TargetResult | None:
    """The student's record the teacher was timed beside: same file, same threads."""
    for record in result.targets:
        if record.shared_with or not record.host_latency:
            continue
        same_file = timed.get("student_file") in (None, record.export.file)
        same_threads = timed.get("latency", {}).get("threads") == record.host_latency.get("threads")
        if same_file and same_threads:
            return record
    return None


def _fewer(teacher: float | None, student: float | None) -> str:
    return _times(teacher, student, "fewer")


def _times(teacher: float | None, student: float | None, word: str) -> str:
    if not teacher or not student:
        return "n/a"
    ratio = teacher / student
    return f"×{ratio:.1f} {word}" if ratio >= 1 else f"×{1 / ratio:.1f} {_opposite[word]}"


_opposite = {"fewer": "more", "smaller": "larger", "faster": "slower"}


def predicted_against_measured(result: FitResult) -> str:
    """The prediction beside a measurement only where both are for the same device and threads: the
    `--device` profile of the first target's artifact, on a device that is not known to be another
    (this host, or one registered for another target). This host's own figure is never held against a
    target's prediction."""
    device, first = result.device_latency, result.targets[0]
    name, threads = first.target.name, first.target.threads
    if not device:
        return (
            f"The latency predicted for {name} is not checked against a measurement: this host is not "
            f"that device. Profile the artifact on a {name} (edgekd profile ARTIFACT --device URI, or "
            "fit --device) with the target's threads to compare."
        )
    measured_threads = device["measurement"].get("latency", {}).get("threads")
    known = device.get("device_target")
    if known is not None and known != name:
        is_not = "this host" if known == "host" else f"registered as a {known}"
        return (
            f"{device['device']} ({is_not}) is not a {name}: its {device['measured_ms']:.3f} ms is not set "
            f"beside the {name} prediction."
        )
    if threads is None or measured_threads != threads:
        return (
            f"The {name} prediction is for {_threads(threads)} and {device['device']} was measured with "
            f"{_threads(measured_threads)}: the two are not set side by side."
        )
    return (
        f"Predicted against measured on {name} ({_threads(threads)}): {device['predicted_ms']:.3f} ms "
        f"predicted, {device['measured_ms']:.3f} ms {device['statistic']} measured on {device['device']} "
        f"(measured / predicted = {device['measured_over_predicted']:.2f})."
    )


def _threads(count: int | None) -> str:
    if count is None:
        return "threads unknown"
    return f"{count} thread{'s' if count != 1 else ''}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


# Every artifact ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaterExports:
    """`edgekd export`'s rows for this run (its `exports.json`), and what their parity was run on."""

    file: str  # exports.json, relative to the run directory
    rows: tuple[dict[str, Any], ...]
    split: str = "validation"
    images: int | None = None


# What each app bundle holds besides its model and labels (edgekd.export.bundle writes them).
BUNDLE_KINDS = {
    "android": "for an Android app: the .tflite carries TFLite Metadata (labels, normalisation); "
    "README.md has the Kotlin snippet",
    "ios": "for an iOS app: a Core ML classifier (labels, image input); "
    "README.md has the Swift/Vision snippet",
}


def bundle_lines(run_path: Path) -> tuple[str, ...]:
    """One sentence per app bundle in the run (`exports/android/`, `exports/ios/`, from `fit` or
    `edgekd export --bundle`): its folder, what it is for and each file with its size."""
    lines = []
    for platform, kind in BUNDLE_KINDS.items():
        folder = run_path / "exports" / platform
        if not folder.is_dir():
            continue
        files = ", ".join(
            f"{p.name} ({_megabytes(p)})" for p in sorted(folder.iterdir()) if not p.name.startswith(".")
        )
        lines.append(f"App bundle exports/{platform}/, {kind}: {files}.")
    return tuple(lines)


def _megabytes(path: Path) -> str:
    """A file's or a package folder's size."""
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    return f"{size / 1e6:.2f} MB" if size >= 10_000 else f"{size:,} bytes"


def read_later_exports(run_path: Path) -> LaterExports | None:
    """The run's `exports.json` files (one under `exports/`, or one per target's folder), merged in
    order; None when `edgekd export` never wrote into the run. A file that is not readable JSON is
    reported as a row saying so rather than hiding the rest of the report."""
    import json

    found = sorted((run_path / "exports").glob("**/exports.json"))
    if not found:
        return None
    rows: list[dict[str, Any]] = []
    images = None
    for path in found:
        relative = str(path.relative_to(run_path))
        try:
            summary = json.loads(path.read_text())
            parity = summary.get("parity") or {}
            images = parity.get("images", images)
            folder = path.parent.relative_to(run_path)
            for row in summary["rows"]:
                if row.get("format") == "pytorch":
                    continue  # the eager reference: no artifact
                # export names its files as it was given --out; the table names them from the run
                file = row.get("file")
                rows.append({**row, "file": str(folder / Path(file).name) if file else None})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            rows.append({"file": relative, "status": f"unreadable ({e})"})
    return LaterExports(", ".join(str(p.relative_to(run_path)) for p in found), tuple(rows), images=images)


def later_export_rows(later: LaterExports) -> tuple[tuple[str, ...], ...]:
    """`edgekd export`'s artifacts as rows of the artifacts table."""
    rows = []
    for row in later.rows:
        size = row.get("size_mb")
        latency = row.get("latency_ms")
        rows.append(
            (
                Code(row.get("file") or "(none)"),
                "edgekd export",
                ", ".join(str(row[k]) for k in ("format", "precision") if row.get(k)),
                row.get("status", ""),
                "" if size is None else f"{size:.2f} MB",
                _pct(row.get("top1_agreement")),
                "" if row.get("max_abs_diff") is None else f"{row['max_abs_diff']:.2e}",
                _pct(row.get("accuracy"))
                + ("" if row.get("accuracy") is None else f" ({split_phrase(later.split, later.images)})"),
                "" if latency is None else f"{latency:.3f}",
            )
        )
    return tuple(rows)


def data_section(result: FitResult) -> Section:
    """What the run trained on: images per split, the classes, the images' stored size, the input
    size they were resized to and how they were read, with how each was decided (older runs kept only
    the counts)."""
    data = result.data
    classes = f": {', '.join(data.classes)}" if data.classes and len(data.classes) <= FEW_CLASSES else ""
    lines = [
        f"{data.name}: {data.train:,} train / {data.val:,} val / {data.test:,} test images, "
        f"{data.num_classes} classes{classes}."
    ]
    native = data.native_size
    if native:
        (w, h), (w0, w1), (h0, h1) = native["most_common"], native["width_range"], native["height_range"]
        varies = "" if native["distinct_sizes"] == 1 else f" (widths {w0}-{w1}, heights {h0}-{h1})"
        lines.append(f"Native size: {w}×{h} for {native['images_at_most_common']:,} images{varies}.")
    for how in (data.input_size_reason or f"input size {data.input_size} px", data.reading):
        if how:
            lines.append(f"{how[:1].upper()}{how[1:]}.")
    return Section("Data", tuple(lines))
