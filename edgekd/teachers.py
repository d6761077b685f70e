"""Where the teacher comes from: a checkpoint edgekd wrote, a timm model (local weights or the hub),
an ONNX file run by ONNX Runtime, or, with no teacher given, one trained here from
`models/teachers.yaml` and cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from edgekd import __version__
from edgekd._io import file_sha256, full_disk_as_error, move_aside
from edgekd.catalog import TeacherRecipe, build_model, load_teacher_recipe, load_weights
from edgekd.checkpoint import ModelInfo, load_model, read_info, save_model
from edgekd.data import DataSplits
from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import TrainConfig, accuracy, predict, train
from edgekd.errors import CheckpointError, TeacherError
from edgekd.onnx_teacher import load_onnx_teacher
from edgekd.progress import Observer, SilentObserver

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    model: nn.Module
    info: ModelInfo
    source: str  # what a person reads in the report: where the teacher came from
    cached: bool = False


def teacher_cache_key(data: DataSplits, recipe: TeacherRecipe, seed: int, start_id: str | None = None) -> str:
    """Same data, recipe, seed and starting weights give the same key, hence the same cached teacher."""
    payload = json.dumps(
        {
            "data": data.fingerprint,
            "recipe": recipe.key_fields(),
            "seed": seed,
            "start": start_id,
            "torch": torch.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def cached_teacher_path(
    cache_dir: Path, data: DataSplits, recipe: TeacherRecipe, seed: int, start_id: str | None = None
) -> Path:
    """Where `train_cached_teacher` keeps the teacher of `recipe` trained on `data`."""
    return (
        Path(cache_dir)
        / "teachers"
        / f"{recipe.arch}-{teacher_cache_key(data, recipe, seed, start_id)}.safetensors"
    )


def fine_tune_recipe(teacher: str, recipe: TeacherRecipe) -> TeacherRecipe:
    """The recipe that fine-tunes timm's `teacher` (pretrained weights, a new head) with `recipe`'s
    training settings: plain images, as the catalog's teacher is trained."""
    return TeacherRecipe(
        teacher, recipe.epochs, recipe.batch_size, recipe.lr, recipe.weight_decay, recipe.label_smoothing
    )


def _info(arch: str, data: DataSplits, **provenance) -> ModelInfo:
    return ModelInfo(arch, data.preprocessing, provenance=provenance)


def _fit_teacher(
    model: nn.Module,
    data: DataSplits,
    recipe: TeacherRecipe,
    seed: int,
    work_dir: Path,
    observer: Observer,
    accelerator: str,
) -> None:
    config = TrainConfig(
        recipe.epochs,
        recipe.batch_size,
        recipe.lr,
        recipe.weight_decay,
        seed,
        augmentation=recipe.augmentation,
        accelerator=accelerator,
    )
    train(
        model,
        data,
        config,
        loss=make_loss("ce", label_smoothing=recipe.label_smoothing),
        checkpoint_dir=work_dir,
        observer=observer,
        description=f"teacher {recipe.arch}",
    )


def train_cached_teacher(
    data: DataSplits,
    recipe: TeacherRecipe,
    cache_dir: Path,
    *,
    seed: int = 0,
    start: nn.Module | None = None,
    start_id: str | None = None,
    observer: Observer | None = None,
    accelerator: str = "cpu",
) -> Teacher:
    """Train `recipe` on `data` once; later calls with the same data, recipe and seed load the cache.
    `start` fine-tunes a given model (e.g. pretrained weights with a new head) instead of a fresh one;
    `start_id` names those weights in the cache key. It trains on `accelerator`
    (`edgekd.distill.accelerator`), which is no part of the key: the teacher comes back on the CPU."""
    observer = observer or SilentObserver()
    path = cached_teacher_path(cache_dir, data, recipe, seed, start_id)
    if path.exists():
        try:
            model, info = load_model(path)
        except TeacherError as e:  # truncated or foreign: retrain rather than block every later fit
            move_aside(path, f"cached teacher cannot be loaded ({str(e).removeprefix(f'{path}: ')})")
        else:
            log.info("reusing cached teacher %s", path)
            return Teacher(model, info, f"cached {recipe.arch} trained by edgekd ({path})", cached=True)
    torch.manual_seed(seed)
    model = start if start is not None else build_model(recipe.arch, data.num_classes)
    # Epoch checkpoints beside the cache entry make an interrupted teacher run resume.
    partial = path.with_suffix(".partial")
    initial = copy.deepcopy(model.state_dict())
    try:
        _fit_teacher(model, data, recipe, seed, partial, observer, accelerator)
    except CheckpointError as e:
        # The cache may be shared (--cache-dir on a network drive), so a file in it is not trusted:
        # a checkpoint that cannot be loaded safely is set aside with its folder (which is removed
        # once the teacher is cached) and the teacher trained from its start.
        move_aside(partial, f"{e.path} cannot be resumed from: {e.reason}")
        model.load_state_dict(initial)
        _fit_teacher(model, data, recipe, seed, partial, observer, accelerator)
    val = accuracy(*predict(model, data.val))
    info = _info(
        recipe.arch, data, trained_by="edgekd", recipe=asdict(recipe), val_accuracy=val, edgekd=__version__
    )
    with full_disk_as_error(path):
        save_model(path, model, info)
    shutil.rmtree(partial, ignore_errors=True)
    log.info("trained teacher %s (val accuracy %.4f), cached at %s", recipe.arch, val, path)
    return Teacher(model.eval(), info, f"{recipe.arch} trained by edgekd, cached at {path}")


def resolve_teacher(
    teacher: str | None,
    weights: Path | None,
    data: DataSplits,
    *,
    cache_dir: Path,
    recipe: TeacherRecipe | None = None,
    seed: int = 0,
    observer: Observer | None = None,
    accelerator: str = "cpu",
) -> Teacher:
    """Turn the user's `--teacher` / `--teacher-weights` into a ready teacher, trained or fine-tuned
    on `accelerator` when it needs training.

    - nothing: train `models/teachers.yaml`'s default recipe (cached);
    - a path to an edgekd checkpoint: use it as is;
    - a path ending in `.onnx`: run it with ONNX Runtime as is (needs `edgekd[onnx]`; logits only, so
      losses on feature maps or embeddings need a timm teacher);
    - a timm name with `weights` whose classifier has one row per class: use it as is;
    - a timm name with other weights (or none: timm's hub weights): fine-tune on `data` (cached).
    """
    recipe = recipe or load_teacher_recipe()
    if teacher is None:
        if weights is not None:
            raise TeacherError(
                "--teacher-weights needs --teacher naming the timm architecture of the weights."
            )
        return train_cached_teacher(
            data, recipe, cache_dir, seed=seed, observer=observer, accelerator=accelerator
        )
    as_path = Path(teacher)
    if as_path.suffix.lower() == ".onnx":
        if weights is not None:
            raise TeacherError(
                f"{as_path}: an ONNX teacher carries its own weights; --teacher-weights is for a timm "
                "architecture given as --teacher."
            )
        model, info = load_onnx_teacher(as_path, data)
        return Teacher(model, info, f"ONNX model {as_path} run by ONNX Runtime {model.runtime_version}")
    if as_path.suffix in (".safetensors", ".pt", ".pth") or as_path.exists():
        if not as_path.exists():
            raise TeacherError(f"{as_path}: teacher checkpoint does not exist.")
        info = read_info(as_path)
        if info is None:
            raise TeacherError(
                f"{as_path}: not an edgekd checkpoint. For timm weights, pass the architecture "
                f"as --teacher and the file as --teacher-weights."
            )
        if info.preprocessing.labels != data.preprocessing.labels:
            raise TeacherError(
                f"{as_path}: teacher classes {list(info.preprocessing.labels)} differ from "
                f"the data's {list(data.preprocessing.labels)}."
            )
        model, info = load_model(as_path)
        return Teacher(model, info, f"edgekd checkpoint {as_path}")
    if weights is not None and not weights.exists():
        raise TeacherError(f"{weights}: teacher weights file does not exist.")
    model = build_model(teacher, data.num_classes, pretrained=weights is None)
    if weights is not None and load_weights(model, weights):
        log.info(
            "teacher %s: %s has a %d-class head, used without fine-tuning", teacher, weights, data.num_classes
        )
        return Teacher(
            model.eval(), _info(teacher, data, weights=str(weights)), f"timm {teacher} from {weights}"
        )
    fine_tune = fine_tune_recipe(teacher, recipe)
    origin = str(weights) if weights is not None else "timm hub weights"
    log.info("teacher %s: fine-tuning %s on %d classes", teacher, origin, data.num_classes)
    start_id = file_sha256(weights) if weights is not None else f"timm-hub:{teacher}"
    result = train_cached_teacher(
        data,
        fine_tune,
        cache_dir,
        seed=seed,
        start=model,
        start_id=start_id,
        observer=observer,
        accelerator=accelerator,
    )
    result.source = f"timm {teacher} ({origin}) fine-tuned by edgekd"
    return result
