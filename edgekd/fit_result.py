"""What `fit` returns and writes as `result.json`: frozen records with `to_json()` and `from_json()`.

result.json's keys are read by other tools, so they stay as they were; `schema_version` says which
layout a file has and rises when a key changes meaning or goes away. The measurements inside (parity,
host and device latency, the search summary, the baseline, the training-time plan, the epochs) stay
JSON mappings: they are each made by the part that measured them and only passed through here.

Example:
    >>> stats = TargetSummary("pi5", "Raspberry Pi 5", "fp32", "tflite", 20.0)
    >>> stats.to_json()["budget_ms"]
    20.0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# 1: the first versioned layout (edgekd 0.1): result.json as 0.1.0 wrote it, plus this key.
# 2: `config` is config.yaml's nested form: the training and distillation options moved under its
#    `training` and `distillation` keys (`config.epochs` is `config.training.epochs`).
# Keys added since (no key changed meaning, so no new version; a file without them still reads):
#    `test_predictions` (per-class evidence), `teacher_latency` (the teacher timed here), each
#    target's `threads` (what its latency was predicted for), `stages` (estimated and actual seconds
#    per stage) and `data`'s `classes`, `native_size`, `input_size_reason`, `mode` and `reading`.
SCHEMA_VERSION = 2

Json = dict[str, Any]


class _Record:
    """to_json / from_json for a frozen dataclass whose fields are JSON values or other records."""

    def to_json(self) -> Json:
        return {
            f.name: _to_json(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    @classmethod
    def from_json(cls, data: Json):
        return cls(**data)


def _to_json(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


@dataclass(frozen=True)
class TargetSummary(_Record):
    """The target as the run saw it."""

    name: str
    description: str
    default_precision: str
    format: str
    budget_ms: float | None
    threads: int | None = None  # what the latency was predicted for; None in runs before it was kept


@dataclass(frozen=True)
class ExportRecord(_Record):
    """One shipped artifact: its file (relative to the run directory), what it is, and its parity with
    the PyTorch student on the whole test split (None where its runtime cannot run here: then
    `parity_note` says why)."""

    file: str
    format: str
    precision: str
    layout: str
    size_bytes: int
    parity: Json | None
    parity_note: str | None = None
    quantization_aware: bool = False
    post_training_int8: Json | None = None  # beside a QAT artifact: the student quantized after training


@dataclass(frozen=True)
class TargetResult(_Record):
    """One target's part of a fit: the prediction for the student on it, its artifact and the host's
    latency of it. `shared_with` names the target whose identical artifact it reuses."""

    target: TargetSummary
    predicted_latency_ms: float
    predicted_by: str
    peak_memory_mb: float
    model_mb: float
    fallback_ops: tuple[str, ...]
    export: ExportRecord
    host_latency: Json | None
    shared_with: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> TargetResult:
        return cls(
            **{
                **data,
                "target": TargetSummary.from_json(data["target"]),
                "export": ExportRecord.from_json(data["export"]),
                "fallback_ops": tuple(data.get("fallback_ops", ())),
            }
        )


@dataclass(frozen=True)
class DataSummary(_Record):
    """The data the run trained on: its split, classes, the images' stored size and the input size
    they were resized to, with how it was decided."""

    name: str
    num_classes: int
    input_size: int
    train: int
    val: int
    test: int
    classes: tuple[str, ...] | None = None
    native_size: Json | None = None  # edgekd.data.NativeSizes.to_json(): most common, ranges
    input_size_reason: str | None = None
    mode: str | None = None  # "decode" or "stream" (edgekd.streaming.decide_data_mode)
    reading: str | None = None  # how the images were read, and why (data_summary.data_mode_line)

    @classmethod
    def from_json(cls, data: Json) -> DataSummary:
        classes = data.get("classes")
        return cls(**{**data, "classes": None if classes is None else tuple(classes)})


@dataclass(frozen=True)
class TeacherSummary(_Record):
    arch: str
    source: str
    cached: bool
    params: int
    macs: int | None  # an ONNX teacher cannot be traced
    test_accuracy: float


@dataclass(frozen=True)
class StudentSummary(_Record):
    """The chosen student: what it costs, why it was chosen and how it was distilled. The predicted
    figures are for the first target (`predicted_for`)."""

    arch: str
    params: int
    macs: int
    test_accuracy: float
    predicted_latency_ms: float
    predicted_for: str
    predicted_by: str
    peak_memory_mb: float
    reason: str
    checkpoint: str
    distillation: str | None
    scheme: str
    loss: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Json) -> StudentSummary:
        return super().from_json({**data, "loss": tuple(data["loss"])})


@dataclass(frozen=True)
class FitResult(_Record):
    """Everything a fit found, as result.json holds it. `target`, `export` and `host_latency` are the
    first target's (result.json keeps them at the top level for tools written before several targets)."""

    run: str
    config: Json  # the run's config.yaml as a mapping (nested since schema_version 2)
    targets: tuple[TargetResult, ...]
    data: DataSummary
    teacher: TeacherSummary
    student: StudentSummary
    history: tuple[Json, ...]
    search: Json | None = None
    device_latency: Json | None = None
    augmentation: Json | None = None
    baseline: Json | None = None
    plan: Json | None = None  # the training-time plan (edgekd.training_time)
    # The test split's labels and both models' top-1 classes, and the misclassified examples kept as
    # images in the run directory (edgekd.report.test_predictions).
    test_predictions: Json | None = None
    # The teacher exported in the student's host format and precision and timed here, or why not.
    teacher_latency: Json | None = None
    # Every stage's estimated seconds (the plan before training) beside what it took (edgekd.stage_plan).
    stages: list[Json] | None = None

    @property
    def target(self) -> TargetSummary:
        return self.targets[0].target

    @property
    def export(self) -> ExportRecord:
        return self.targets[0].export

    @property
    def host_latency(self) -> Json | None:
        return self.targets[0].host_latency

    def to_json(self) -> Json:
        own = super().to_json()
        first = own["targets"][0]
        # result.json's key order as before, the schema version first.
        order = (
            "run", "config", "target", "targets", "data", "teacher", "student", "search", "export",
            "host_latency", "device_latency", "history", "augmentation", "baseline", "plan",
            "test_predictions", "teacher_latency", "stages",
        )  # fmt: skip
        own.update(target=first["target"], export=first["export"], host_latency=first["host_latency"])
        return {"schema_version": SCHEMA_VERSION, **{key: own[key] for key in order}}

    @classmethod
    def from_json(cls, data: Json) -> FitResult:
        """A result.json's content read back; the top-level copies of the first target are derived."""
        version = data.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"result.json has schema_version {version}; this edgekd reads up to {SCHEMA_VERSION}: "
                "upgrade edgekd to read it."
            )
        return cls(
            run=data["run"],
            config=data["config"],
            targets=tuple(TargetResult.from_json(t) for t in data["targets"]),
            data=DataSummary.from_json(data["data"]),
            teacher=TeacherSummary.from_json(data["teacher"]),
            student=StudentSummary.from_json(data["student"]),
            history=tuple(data["history"]),
            **{k: data.get(k) for k in _OPTIONAL},
        )


# Keys a result.json may lack: written by later versions, or only by runs that measured them.
_OPTIONAL = (
    "search", "device_latency", "augmentation", "baseline", "plan", "test_predictions", "teacher_latency",
    "stages",
)  # fmt: skip


def search_summary(assessments, search) -> Json:
    """What result.json and the report keep of the search: the objective it chose by, its cost and
    every candidate's point on the Pareto plot (latency: by target; accuracy: the first rung's, the
    only one every candidate ran, with its 95 % interval)."""

    def first_interval(name: str) -> list[float] | None:
        first = (search.trials_of(name) or [None])[0]
        return None if first is None or first.ci_low is None else [first.ci_low, first.ci_high]

    return {
        "objective": search.objective,
        "mode": search.mode,  # "confirm": the first rung is the final recipe's full trainings
        "min_retention": search.min_retention,
        "chance": search.chance,
        "at_chance": search.at_chance,
        "trials": len(search.trials),
        "rungs": search.rungs,
        "seconds": search.seconds,
        "mac_images": search.mac_images,
        "stopped_early": search.stopped_early,
        "candidates": [
            {
                "name": a.candidate.name,
                "predicted_latency_ms": {name: x.predicted_latency_ms for name, x in a.per_target.items()},
                "peak_memory_mb": a.peak_memory_mb,
                "first_rung_accuracy": (search.accuracies(a.candidate.name) or [None])[0],
                "first_rung_ci95": first_interval(a.candidate.name),
                "feasible": a.feasible,
                "on_front": a.candidate.name in search.front,
                "chosen": a.candidate.name == search.chosen,
            }
            for a in assessments
        ],
    }
