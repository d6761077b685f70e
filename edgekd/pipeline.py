"""`fit()`: target → student choice → distillation → export → parity → latency → report, in a run
directory. A stage whose outputs are complete is skipped on re-run, so an interrupted fit resumes.

Example:
    >>> # result = fit(FitConfig(target="pi5"))
    >>> # result["student"]["test_accuracy"]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekd._config import from_mapping, load_yaml, to_mapping
from edgekd._io import write_json_atomic, write_text_atomic
from edgekd.errors import ConfigError
from edgekd.progress import Observer, SilentObserver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """Everything `edgekd fit` needs. Field names equal the CLI's option names and config.yaml's keys."""

    target: str = "pi5"
    teacher: str | None = None
    teacher_weights: Path | None = None
    data: Path | None = None
    input_size: int | None = None
    student: str | None = None
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.003
    weight_decay: float = 0.0001
    loss: tuple[str, ...] = ("kd",)  # "name[:weight]" terms of a weighted sum (edgekd.distill.losses)
    temperature: float = 4.0
    alpha: float = 0.9
    teacher_epochs: int | None = None
    seed: int = 0
    threads: int = 1
    runs_dir: Path = Path("runs")
    cache_dir: Path | None = None
    targets_dir: tuple[Path, ...] = ()  # directories of the user's own target YAML files

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.teacher_weights is not None and self.teacher is None:
            raise ValueError("teacher_weights needs teacher (the timm architecture those weights are for)")

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> FitConfig:
        config = from_mapping(cls, load_yaml(path) or {}, str(path))
        return dataclasses.replace(config, **overrides)


def _prediction_basis(target) -> str:
    """How the target's latency was predicted, in words: which profile rows calibrated it, or that
    none did (the report shows it beside the figure)."""
    from edgekd.latency import calibrate

    if target.latency_model.estimator == "vela":
        return "Vela's estimate on the int8 TFLite file"
    return calibrate(target).provenance


def _new_run_dir(config: FitConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = config.runs_dir / f"{stamp}-{config.target}"
    suffix = 1
    while run.exists():
        suffix += 1
        run = config.runs_dir / f"{stamp}-{config.target}-{suffix}"
    run.mkdir(parents=True)
    return run


def fit(config: FitConfig, *, resume: Path | None = None, observer: Observer | None = None) -> dict[str, Any]:
    """Distil a student for `config.target` and write everything into a run directory.

    With `resume`, the run directory's own `config.yaml` is used and finished stages are skipped.
    Returns the content of `result.json`.
    """
    import torch

    from edgekd.analysis import analyze
    from edgekd.catalog import build_model, load_students, load_teacher_recipe, student_registry
    from edgekd.checkpoint import ModelInfo, load_model, save_model
    from edgekd.data import decode_once, load_data, stack
    from edgekd.devices.local import measure_latency
    from edgekd.distill.losses import parse_loss_specs
    from edgekd.distill.trainer import TrainConfig, accuracy, predict, train
    from edgekd.export import FORMATS, Contract, export, load_artifact, sidecar_path
    from edgekd.export.parity import check_parity
    from edgekd.report import write_metrics_csv, write_report
    from edgekd.search import assess, choose_student, write_search_csv
    from edgekd.targets import get_target
    from edgekd.teachers import default_cache_dir, resolve_teacher

    observer = observer or SilentObserver()
    if resume is not None:
        if not (resume / "config.yaml").exists():
            raise ConfigError(f"{resume}: not an edgekd run directory (no config.yaml).")
        config = FitConfig.from_yaml(resume / "config.yaml")
    target = get_target(config.target, config.targets_dir)  # a bad name fails before anything is created
    parse_loss_specs(config.loss, temperature=config.temperature, alpha=config.alpha)  # so does a bad loss
    if resume is not None:
        run = resume
    else:
        run = _new_run_dir(config)
        write_text_atomic(run / "config.yaml", yaml.safe_dump(to_mapping(config), sort_keys=False))
    log.info("run directory %s", run)

    observer.stage("data")
    # Images are decoded once into the cache, so every epoch after the first reads plain arrays.
    data = decode_once(
        load_data(config.data, config.input_size), config.cache_dir or default_cache_dir(), observer
    )

    observer.stage("teacher")
    recipe = load_teacher_recipe()
    if config.teacher_epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=config.teacher_epochs)
    teacher = resolve_teacher(
        config.teacher,
        config.teacher_weights,
        data,
        cache_dir=config.cache_dir or default_cache_dir(),
        recipe=recipe,
        seed=config.seed,
        observer=observer,
    )
    teacher_test = accuracy(*predict(teacher.model, data.test))

    observer.stage("choice")
    candidates = load_students()
    if config.student is not None:
        candidates = [student_registry(candidates).get(config.student)]
    assessments = assess(candidates, target, data.input_size, data.num_classes)
    chosen = choose_student(assessments)
    write_search_csv(run / "search.csv", assessments, chosen)
    feasible = sum(a.feasible for a in assessments)
    reason = (
        f"{chosen.candidate.arch} has the most MACs ({chosen.macs:,}) of the {feasible} of "
        f"{len(assessments)} "
        f"candidates predicted to fit {target.name}'s {target.budgets.latency_ms:g} ms budget "
        f"({chosen.predicted_latency_ms:.2f} ms predicted at {data.input_size} px)."
    )
    log.info("student: %s", reason)

    student_path = run / "student.safetensors"
    history_path = run / "history.json"
    if student_path.exists() and history_path.exists():
        observer.stage("distill", "done in an earlier attempt")
        student, _ = load_model(student_path)
        history = json.loads(history_path.read_text())
    else:
        observer.stage("distill")
        torch.manual_seed(config.seed)
        student = build_model(chosen.candidate.arch, data.num_classes, **chosen.candidate.kwargs)
        epochs = train(
            student,
            data,
            TrainConfig(config.epochs, config.batch_size, config.lr, config.weight_decay, config.seed),
            loss=parse_loss_specs(config.loss, temperature=config.temperature, alpha=config.alpha),
            teacher=teacher.model,
            checkpoint_dir=run / "checkpoints",
            observer=observer,
            description=f"distil {chosen.candidate.arch}",
        )
        history = [asdict(m) for m in epochs]
        info = ModelInfo(
            chosen.candidate.arch,
            data.classes,
            data.input_size,
            data.mean,
            data.std,
            kwargs=dict(chosen.candidate.kwargs),
            provenance={"teacher": teacher.source},
        )
        save_model(student_path, student, info)
        write_json_atomic(history_path, history)
    write_metrics_csv(run / "metrics.csv", history)

    observer.stage("export")
    contract = Contract(
        arch=chosen.candidate.arch,
        input_name="input",
        input_shape=(1, data.input_size, data.input_size, 3),
        layout="NHWC",
        mean=data.mean,
        std=data.std,
        labels=data.classes,
        precision="fp32",
    )
    artifact_path = run / "exports" / f"student-{contract.precision}{FORMATS.get(target.format).suffix}"
    if artifact_path.exists() and sidecar_path(artifact_path).exists():
        artifact = load_artifact(artifact_path)
    else:
        artifact = export(student, target.format, run / "exports", contract=contract, stem="student")

    observer.stage("parity")
    test_images, test_labels = stack(data.test)
    parity = check_parity(artifact, student, test_images, test_labels, threads=config.threads)
    student_test = parity.torch_accuracy  # the PyTorch student on the whole test split

    observer.stage("latency")
    latency = measure_latency(artifact, threads=config.threads, observer=observer)
    write_json_atomic(run / "profile.json", asdict(latency))

    teacher_cost = analyze(teacher.model, data.input_size)
    result = {
        "run": str(run),
        "config": to_mapping(config),
        "target": {
            "name": target.name,
            "description": target.description,
            "default_precision": target.default_precision,
            "budget_ms": target.budgets.latency_ms,
        },
        "data": {
            "name": data.name,
            "num_classes": data.num_classes,
            "input_size": data.input_size,
            "train": len(data.train),
            "val": len(data.val),
            "test": len(data.test),
        },
        "teacher": {
            "arch": teacher.info.arch,
            "source": teacher.source,
            "cached": teacher.cached,
            "params": teacher_cost.params,
            "macs": teacher_cost.macs,
            "test_accuracy": teacher_test,
        },
        "student": {
            "arch": chosen.candidate.arch,
            "params": chosen.params,
            "macs": chosen.macs,
            "test_accuracy": student_test,
            "predicted_latency_ms": chosen.predicted_latency_ms,
            "predicted_for": target.name,
            "predicted_by": _prediction_basis(target),
            "peak_memory_mb": chosen.peak_memory_mb,
            "reason": reason,
            "checkpoint": student_path.name,
        },
        "export": {
            "file": str(artifact.path.relative_to(run)),
            "format": artifact.format,
            "precision": artifact.contract.precision,
            "layout": artifact.contract.layout,
            "size_bytes": artifact.size_bytes,
            "parity": asdict(parity),
        },
        "host_latency": asdict(latency),
        "history": history,
    }
    write_json_atomic(run / "result.json", result)
    observer.stage("report")
    write_report(run / "report.md", result)
    return result
