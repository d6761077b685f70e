"""The stages of `fit` after training, which rank 0 alone runs: each target's artifact exported, checked
against PyTorch on the whole test split and timed here, the first one profiled on `--device`, and the
reports and result.json written (last: a run directory with result.json finished).

Targets that need the same artifact (format, precision and options: pi5 and pi4 ship one TFLite fp32
file) share it: the stages are made for the first of them, and the others' records name it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgekd._io import write_json_atomic
from edgekd.errors import ExportError
from edgekd.fit_result import (
    DataSummary,
    ExportRecord,
    FitResult,
    StudentSummary,
    TargetResult,
    TargetSummary,
    TeacherSummary,
    search_summary,
)
from edgekd.fit_stages import FitContext, Stage
from edgekd.rundir import RunDir
from edgekd.stage_plan import compared

log = logging.getLogger(__name__)

STUDENT, POST_TRAINING = "student", "student-ptq"  # the artifacts' stems
# How long the teacher latency stage waits for the teacher's export beside the student's before it
# ends it and exports in process (resnet18 took 6 s; a child that hangs must not hang the fit).
TEACHER_AHEAD_TIMEOUT_S = 600.0


def _artifact_key(target) -> tuple[str, str, str]:
    """What decides a target's file: targets with equal keys ship the same one."""
    return (target.format, target.default_precision, repr(target.format_options))


def _shipped_model(context: FitContext, target):
    """The QAT graph for an int8 target when the student trained quantization-aware, else the float
    student."""
    quantized = context.quantized if target.default_precision == "int8" else None
    return quantized, (quantized if quantized is not None else context.student)


@dataclass(frozen=True)
class ExportStage:
    """One artifact for `target`: the shipped student (`stem` STUDENT) or, beside a quantization-aware
    one, the same float student quantized after training alone (POST_TRAINING), for comparison. Done
    when the file and its sidecar are there (both are written atomically). The export is `ship`'s own
    first step (`export_for`); `CheckStage` ships the file it made."""

    target: Any
    stem: str
    name: str = "export"

    @property
    def detail(self) -> str:
        return self.target.name

    def _path(self, run: RunDir):
        from edgekd.artifact import FORMATS

        suffix = FORMATS.get(self.target.format).suffix
        return run.artifact(self.target.name, self.stem, self.target.default_precision, suffix)

    def is_done(self, run: RunDir) -> bool:
        from edgekd.artifact import sidecar_path

        path = self._path(run)
        return path.exists() and sidecar_path(path).exists()

    def load(self, context: FitContext) -> None:
        from edgekd.artifact import load_artifact

        context.artifacts[self.target.name, self.stem] = load_artifact(self._path(context.run))

    def run(self, context: FitContext) -> None:
        from edgekd.export.ship import export_for

        target = self.target
        if self.stem == STUDENT:
            export_teacher_ahead(context)
            model, options = (
                _shipped_model(context, target)[1],
                target.format_options.get(target.format),
            )
        else:
            model, options = context.student, None
        context.artifacts[target.name, self.stem] = export_for(
            model,
            target.format,
            target.default_precision,
            _ship_inputs(context, target),
            arch=context.chosen.candidate.arch,
            out_dir=context.run.exports_for(target.name),
            stem=self.stem,
            options=options,
        )


@dataclass(frozen=True)
class CheckStage:
    """`target`'s artifact checked against PyTorch on the whole test split (and the post-training one
    beside it, ungated), and timed here when its runtime runs here, by `edgekd.export.ship.ship`
    (the path `edgekd export` takes too) given the exported file. Never done: the figures are
    measured on every attempt, and kept in result.json (and profile*.json) once the run finishes."""

    target: Any
    name: str = "parity"

    @property
    def detail(self) -> str:
        return self.target.name

    def is_done(self, run: RunDir) -> bool:
        return False

    def load(self, context: FitContext) -> None:  # pragma: no cover: never done, never loaded
        raise AssertionError("CheckStage keeps nothing to load")

    def run(self, context: FitContext) -> None:
        from edgekd.export.parity import load_gates
        from edgekd.export.ship import ship

        target, run, threads = self.target, context.run, context.config.threads
        artifact = context.artifacts[target.name, STUDENT]
        quantized, shipped = _shipped_model(context, target)
        inputs = _ship_inputs(context, target, calibration=False)
        checked = ship(
            shipped,
            target.format,
            target.default_precision,
            inputs,
            load_gates(),
            arch=context.chosen.candidate.arch,
            exported=artifact,
            threads=threads,
            observer=context.observer,
            label=target.name,
        )
        if checked.failed_parity:
            # fit ships only what passes its gate: the run stops here, naming the file and the metric.
            raise ExportError(checked.gate_message() + ".")
        # Core ML off macOS: the exporter validated the package's spec; nothing here can execute it.
        runs_here, parity = checked.cannot_run_here is None, checked.parity
        ptq, float_accuracy = (
            None,
            parity.torch_accuracy if parity is not None and quantized is None else None,
        )
        if quantized is not None:
            # What quantization-aware training bought: the same student quantized after training alone,
            # compared ungated (gates None) and not timed.
            ptq_artifact = context.artifacts[target.name, POST_TRAINING]
            ptq_parity = ship(
                context.student,
                target.format,
                target.default_precision,
                inputs,
                None,
                arch=context.chosen.candidate.arch,
                exported=ptq_artifact,
                threads=threads,
                latency=False,
            ).parity
            ptq = {
                "file": run.relative(ptq_artifact.path),
                "size_bytes": ptq_artifact.size_bytes,
                "parity": asdict(ptq_parity),
            }
            float_accuracy = ptq_parity.torch_accuracy
        latency = asdict(checked.latency) if checked.latency is not None else None
        if latency is not None:
            write_json_atomic(run.profile_for(target.name), latency)
        context.shipped[target.name] = {
            "float_accuracy": float_accuracy,
            "export": ExportRecord(
                file=run.relative(artifact.path),
                format=artifact.format,
                precision=artifact.contract.precision,
                layout=artifact.contract.layout,
                size_bytes=artifact.size_bytes,
                parity=asdict(parity) if parity is not None else None,
                parity_note=None
                if runs_here
                else f"{target.format} cannot run on this host: spec validated only",
                quantization_aware=quantized is not None,
                post_training_int8=ptq,
            ),
            "host_latency": latency,
        }


def _ship_inputs(context: FitContext, target, *, calibration: bool = True):
    """What `target`'s artifacts are built and checked with: the data's contract, the whole test split,
    and (when the precision is calibrated and `calibration`) training images for int8 calibration."""
    from edgekd.artifact import FORMATS
    from edgekd.data import representative_images
    from edgekd.export import MIN_CALIBRATION_IMAGES
    from edgekd.export.ship import ExportInputs

    data, precision = context.data, target.default_precision
    calibrated = calibration and precision in FORMATS.get(target.format).calibrated
    return ExportInputs(
        preprocessing=data.preprocessing,
        images=context.test_images,
        targets=context.test_labels,
        calibration=representative_images(
            data.train, MIN_CALIBRATION_IMAGES, seed=context.config.training.seed
        )
        if calibrated
        else None,
    )


@dataclass(frozen=True)
class BundleStage:
    """The app bundle of one platform (`edgekd.export.bundle`) for the targets that ship its format:
    Android from the first TFLite target's checked file when it takes float input (an int8 file is
    for integer NPUs, not an app's CPU), iOS a Core ML classifier converted from the student at the
    first Core ML target's precision (fp16 for int8, whose classifier the bundle does not make).
    Done when its README, written last, is there."""

    platform: str
    target: Any
    name: str = "bundle"

    @property
    def detail(self) -> str:
        return self.platform

    def is_done(self, run: RunDir) -> bool:
        return (run.bundle(self.platform) / "README.md").exists()

    def load(self, context: FitContext) -> None:
        pass  # nothing later reads it: the bundle is for the app

    def run(self, context: FitContext) -> None:
        from edgekd.export.bundle import android_bundle, ios_bundle

        target, out_dir = self.target, context.run.bundle(self.platform)
        if self.platform == "android":
            android_bundle(context.artifacts[target.name, STUDENT], out_dir)
            return
        precision = target.default_precision if target.default_precision != "int8" else "fp16"
        ios_bundle(
            context.student,
            context.chosen.candidate.arch,
            context.data.preprocessing,
            out_dir,
            stem=STUDENT,
            precision=precision,
            deployment_target=target.format_options.get("coreml", {}).get("deployment_target"),
        )


def bundle_stages(targets) -> list[BundleStage]:
    """One bundle per platform that a target's format serves (see `BundleStage`)."""
    stages = []
    android = next((t for t in targets if t.format == "tflite" and t.default_precision != "int8"), None)
    if android is not None:
        stages.append(BundleStage("android", android))
    ios = next((t for t in targets if t.format == "coreml"), None)
    if ios is not None:
        stages.append(BundleStage("ios", ios))
    return stages


class DeviceStage:
    """The first target's artifact timed on `--device`, beside the latency predicted for that target;
    kept in device-profile.json, so a resumed run does not measure again."""

    name, detail = "device", ""

    def is_done(self, run: RunDir) -> bool:
        return run.device_profile.exists()

    def load(self, context: FitContext) -> None:
        import json

        context.device_latency = json.loads(context.run.device_profile.read_text())

    def run(self, context: FitContext) -> None:
        from edgekd.devices import ProfileSettings
        from edgekd.devices.registry import connect

        config, first = context.config, context.targets[0]
        predicted_ms = context.chosen.per_target[first.name].predicted_latency_ms
        device = connect(config.device)
        artifact = context.artifacts[first.name, STUDENT]  # the first target ships first
        measurement = device.profile(artifact.path, ProfileSettings(threads=config.threads))
        measured = measurement.latency.central_ms
        context.device_latency = {
            "device": config.device,
            "uri": measurement.device,
            "device_target": _device_target(config.device),
            "measurement": asdict(measurement),
            "measured_ms": measured,
            "statistic": measurement.statistic,
            "predicted_ms": predicted_ms,
            "predicted_for": first.name,
            "measured_over_predicted": measured / predicted_ms,
        }
        write_json_atomic(context.run.device_profile, context.device_latency)


def _device_target(spec: str) -> str | None:
    """The target `--device` is, as far as edgekd knows: "host" for local, the target a registered
    device was added for, None for a bare URI. The report sets a prediction beside a measurement only
    when this is not another target."""
    from edgekd.devices.registry import load_devices

    if spec == "local":
        return "host"
    if "://" in spec:
        return None
    entry = load_devices().get(spec)
    return entry.target if entry is not None else None


class TeacherTimingStage:
    """The teacher exported in the format and precision of the first student artifact timed here, and
    timed here with the same threads through the same path (`export_for`, then `measure_latency`):
    what the report's "x faster than the teacher" and "x smaller file" divide. Kept in the edgekd
    cache (`teacher-latency/<key>.json`), keyed by the teacher's weights, the format, precision,
    options, threads and this host, so a teacher is exported and timed once. Never done in the run
    directory: the cache decides."""

    name, detail = "teacher latency", ""

    def is_done(self, run: RunDir) -> bool:
        return False

    def load(self, context: FitContext) -> None:  # pragma: no cover: never done, never loaded
        raise AssertionError("TeacherTimingStage keeps nothing to load")

    def run(self, context: FitContext) -> None:
        context.teacher_latency = time_teacher(context)


def time_teacher(context: FitContext) -> dict[str, Any]:
    """The teacher's host latency and file size beside the student's (see `TeacherTimingStage`), or
    `{"note": why not}`; a failure is not cached."""
    import json
    import shutil
    import tempfile

    from edgekd.devices.local import measure_latency
    from edgekd.errors import EdgeKDError

    ahead, context.teacher_export_ahead = context.teacher_export_ahead, None
    timed = [t for t in context.targets if (context.shipped.get(t.name) or {}).get("host_latency")]
    if not timed:
        _drop(ahead)
        return {"note": "no student artifact could be timed on this host, so the teacher was not either"}
    target, threads = timed[0], context.config.threads
    fmt, precision = target.format, target.default_precision
    weights = weights_sha256(context.teacher.model)
    if weights is None:
        _drop(ahead)
        return {"note": "the teacher is an ONNX model: edgekd exports only PyTorch models"}
    cached = _teacher_latency_path(context, target, weights)
    if cached.is_file():
        try:
            record = {**json.loads(cached.read_text()), "cached": str(cached)}
        except (OSError, ValueError):
            pass  # a damaged entry is measured again and replaced, from the export ahead if any
        else:
            _drop(ahead)
            return record
    context.observer.stage("teacher latency", f"{context.teacher.info.arch} as {fmt} {precision}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as scratch:
            artifact = _ahead_artifact(ahead, target) or _export_teacher(context, target, Path(scratch))
            latency = measure_latency(artifact, threads=threads, observer=context.observer)
            record = {
                "arch": context.teacher.info.arch,
                "format": fmt,
                "precision": precision,
                "size_bytes": artifact.size_bytes,
                "latency": asdict(latency),
                "student_file": context.shipped[target.name]["export"].file,
                "weights_sha256": weights,
            }
    except EdgeKDError as e:
        return {"note": f"the teacher could not be exported as {fmt} {precision} and timed here: {e}"}
    finally:
        if ahead is not None:
            shutil.rmtree(ahead.scratch, ignore_errors=True)
    write_json_atomic(cached, record)
    return record


def _teacher_latency_path(context: FitContext, target, weights: str) -> Path:
    """Where `time_teacher` keeps the teacher's figures for `target`'s format on this host: keyed by
    the teacher's weights (`weights_sha256`), the format, precision and options, the threads and this
    host."""
    import json

    from edgekd.devices.local import host_description

    options = target.format_options.get(target.format)
    key = hashlib.sha256(
        json.dumps(
            [
                weights,
                target.format,
                target.default_precision,
                repr(options),
                context.config.threads,
                host_description(),
            ]
        ).encode()
    ).hexdigest()[:20]
    return Path(context.cache_dir) / "teacher-latency" / f"{key}.json"


def _export_teacher(context: FitContext, target, out_dir):
    from edgekd.export.ship import export_for

    return export_for(
        context.teacher.model,
        target.format,
        target.default_precision,
        _ship_inputs(context, target),
        arch=context.teacher.info.arch,
        out_dir=out_dir,
        stem="teacher",
        options=target.format_options.get(target.format),
    )


def export_teacher_ahead(context: FitContext) -> None:
    """Start the teacher's export for `time_teacher` in a forked process (`edgekd.forked_call`) as the
    first student export begins, in the format of the first target whose runtime runs here (the one
    `time_teacher` will time, unless its check fails): both conversions are single-threaded Python,
    and on `make fit` (two cores) the teacher's took 6 s after the student's 8-9 s. Nothing starts
    where the teacher's figures are cached, the teacher is ONNX, or a fork may not be used; where the
    target `time_teacher` times turns out to need another file, or the child fails, it exports in
    process as before."""
    import atexit
    import shutil
    import tempfile

    from edgekd.forked_call import ForkedCall, can_fork
    from edgekd.runtimes import can_run_here

    if context.teacher is None or context.teacher_export_ahead is not None or not can_fork():
        return
    target = next((t for t in context.targets if can_run_here(t.format)), None)
    if target is None:
        return
    weights = weights_sha256(context.teacher.model)
    cached = _teacher_latency_path(context, target, weights) if weights is not None else None
    if cached is None or cached.is_file():
        return
    cached.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cached.parent))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # an interrupted fit leaves none behind
    call = ForkedCall(lambda: _export_teacher(context, target, scratch))
    context.teacher_export_ahead = TeacherExportAhead(target, scratch, call)


class TeacherExportAhead(NamedTuple):
    """The teacher's export running beside the student's (`export_teacher_ahead`)."""

    target: Any  # the target whose file format it is exporting
    scratch: Path  # its output folder, removed once the teacher is timed
    call: Any  # the edgekd.forked_call.ForkedCall making it


def _ahead_artifact(ahead, target):
    """The artifact the forked export made for `target`, or None (no export ahead, another target, or
    it failed: logged, and the caller exports in process)."""
    from edgekd.forked_call import ForkedCallError

    if ahead is None:
        return None
    if _artifact_key(ahead.target) != _artifact_key(target):
        ahead.call.cancel()
        return None
    try:
        return ahead.call.result(timeout=TEACHER_AHEAD_TIMEOUT_S)
    except ForkedCallError as e:
        log.info("teacher export beside the student's failed (%s); exporting it here", e)
        return None


def _drop(ahead) -> None:
    """End an export ahead that will not be used, and remove its folder."""
    import shutil

    if ahead is not None:
        ahead.call.cancel()
        shutil.rmtree(ahead.scratch, ignore_errors=True)


def weights_sha256(model) -> str | None:
    """sha256 over a model's parameter and buffer bytes, by name (None when it has none: an ONNX
    teacher): the same weights give the same hash wherever they were loaded from."""
    import torch

    digest, state = hashlib.sha256(), model.state_dict()
    if not state:
        return None
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(state[name].shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ReportStage:
    """The FitResult, the reports and result.json. Never done: a resumed run reports what it measured."""

    name, detail = "report", ""

    def is_done(self, run: RunDir) -> bool:
        return False

    def load(self, context: FitContext) -> None:  # pragma: no cover: never done, never loaded
        raise AssertionError("ReportStage keeps nothing to load")

    def run(self, context: FitContext) -> None:
        from edgekd.report import write_reports

        context.result = fit_result(context)
        write_reports(context.run, context.result)
        write_json_atomic(context.run.result, context.result.to_json())  # last: the run finished


def shipping_stages(context: FitContext) -> list[Stage]:
    """Per distinct artifact: export it (and its post-training comparison), check and time it; then
    the device profile, if asked, and the report."""
    stages: list[Stage] = []
    keys = set()
    for target in context.targets:
        if _artifact_key(target) in keys:
            continue
        keys.add(_artifact_key(target))
        stages.append(ExportStage(target, STUDENT))
        if _shipped_model(context, target)[0] is not None:
            stages.append(ExportStage(target, POST_TRAINING))
        stages.append(CheckStage(target))
    stages += bundle_stages(context.targets)
    if context.config.device is not None:
        stages.append(DeviceStage())
    return [*stages, TeacherTimingStage(), ReportStage()]


def shipping_plan(context: FitContext, student_rate: float | None, teacher_cached: bool = False) -> list:
    """The plan's rows for the stages `shipping_stages` will run (`edgekd.stage_plan`), by the same
    names; before training, a post-training file is expected beside each int8 target's QAT one."""
    from edgekd.forked_call import can_fork
    from edgekd.stage_plan import shipping_estimates

    distinct, keys = [], set()
    for target in context.targets:
        if _artifact_key(target) not in keys:
            keys.add(_artifact_key(target))
            beside = target.default_precision == "int8" and bool(context.plan.qat_epochs)
            distinct.append((target, 2 if beside else 1))
    return shipping_estimates(
        context.targets,
        distinct,
        [stage.platform for stage in bundle_stages(context.targets)],
        student_rate,
        len(context.data.test),
        teacher_latency=True,
        device=context.config.device is not None,
        teacher_cached=teacher_cached,
        teacher_ahead=can_fork(),
    )


def _prediction_basis(target) -> str:
    """How the target's latency was predicted, in words: which profile rows calibrated it, or that
    none did (the report shows it beside the figure)."""
    from edgekd.latency import calibrate

    if target.latency_model.estimator == "vela":
        return "Vela's estimate on the int8 TFLite file"
    return calibrate(target).provenance


def _target_results(context: FitContext) -> tuple[TargetResult, ...]:
    """Each target's record, in the order named; one that shares an artifact names its owner."""
    owners: dict[tuple[str, str, str], str] = {}
    records = []
    for target in context.targets:
        owner = owners.setdefault(_artifact_key(target), target.name)
        shipped, costed = context.shipped[owner], context.chosen.per_target[target.name]
        records.append(
            TargetResult(
                target=TargetSummary(
                    target.name,
                    target.description,
                    target.default_precision,
                    target.format,
                    target.budgets.latency_ms,
                    target.threads,
                ),
                predicted_latency_ms=costed.predicted_latency_ms,
                predicted_by=_prediction_basis(target),
                peak_memory_mb=costed.peak_memory_mb,
                model_mb=costed.model_mb,
                fallback_ops=tuple(costed.fallback_ops),
                export=shipped["export"],
                host_latency=shipped["host_latency"],
                shared_with=None if owner == target.name else owner,
            )
        )
    return tuple(records)


def _test_predictions(context: FitContext) -> dict[str, Any]:
    """The test split's labels, the student's and the teacher's top-1 class for each image, and the
    student's first misclassified images written into the run directory (`edgekd.report`)."""
    import torch

    from edgekd.report_evidence import predictions_record

    context.student.eval()
    with torch.no_grad():
        student = torch.cat([context.student(x).argmax(1) for x in context.test_images.split(256)])
    return predictions_record(
        context.run.path,
        context.data.preprocessing,
        context.test_images,
        context.test_labels.tolist(),
        student.tolist(),
        context.teacher_test_top1,
    )


def fit_result(context: FitContext) -> FitResult:
    from edgekd._config import to_mapping
    from edgekd.distill.trainer import accuracy, predict

    data, chosen, teacher, first = context.data, context.chosen, context.teacher, context.targets[0]
    records = _target_results(context)
    measured = [s["float_accuracy"] for s in context.shipped.values() if s["float_accuracy"] is not None]
    # The float PyTorch student on the whole test split, from a parity run that had it as reference.
    student_test = measured[0] if measured else accuracy(*predict(context.student, data.test))
    return FitResult(
        run=str(context.run),
        config=to_mapping(context.config),
        targets=records,
        data=DataSummary(
            data.name,
            data.num_classes,
            data.input_size,
            len(data.train),
            len(data.val),
            len(data.test),
            classes=data.preprocessing.labels,
            native_size=data.native.to_json() if data.native is not None else None,
            input_size_reason=context.input_size_note or None,
            mode=context.data_mode or None,
            reading=context.data_reading or None,
        ),
        teacher=TeacherSummary(
            arch=teacher.info.arch,
            source=teacher.source,
            cached=teacher.cached,
            params=context.teacher_params,
            macs=context.teacher_macs,
            test_accuracy=context.teacher_test,
        ),
        student=StudentSummary(
            arch=chosen.candidate.arch,
            params=chosen.params,
            macs=chosen.macs,
            test_accuracy=student_test,
            predicted_latency_ms=records[0].predicted_latency_ms,
            predicted_for=first.name,
            predicted_by=records[0].predicted_by,
            peak_memory_mb=chosen.peak_memory_mb,
            reason=context.search.reason,
            checkpoint=context.run.student.name,
            distillation=context.distillation,
            scheme=context.plan.scheme,
            loss=tuple(context.plan.loss),
        ),
        history=tuple(context.history),
        search=search_summary(context.assessments, context.search),
        device_latency=context.device_latency,
        augmentation=context.views.to_json() if context.views else None,
        baseline=context.baseline,
        plan=context.timed,
        test_predictions=_test_predictions(context),
        teacher_latency=context.teacher_latency,
        stages=compared(context.estimates, context.stage_seconds) if context.estimates else None,
    )
