"""The model catalog: `models/students.yaml` into `Candidate`s and `models/teachers.yaml` into recipes.

Example:
    >>> from edgekd.catalog import load_students
    >>> [c.arch for c in load_students()][:1]
    ['mobilenetv3_small_050']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd._config import from_mapping, load_yaml
from edgekd._registry import Registry
from edgekd._resources import shipped_dir
from edgekd.errors import ConfigError, TeacherError

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class Candidate:
    """One student architecture: a timm name plus the keyword arguments that pick its variant."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def name(self) -> str:
        return self.arch


@dataclass(frozen=True)
class TeacherRecipe:
    """How edgekd trains a teacher when the user brings none."""

    arch: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class _StudentsFile:
    students: tuple[Candidate, ...]


def student_registry(candidates: list[Candidate]) -> Registry[Candidate]:
    """Candidates by name; a duplicate raises, an unknown name lists the valid ones."""
    registry: Registry[Candidate] = Registry("student")
    for candidate in candidates:
        registry.add(candidate.name, candidate)
    return registry


def load_students(path: Path | None = None) -> list[Candidate]:
    path = path or shipped_dir("models") / "students.yaml"
    students = list(from_mapping(_StudentsFile, load_yaml(path), str(path)).students)
    student_registry(students)  # a duplicate entry raises here, naming it
    return students


def load_teacher_recipe(name: str = "default", path: Path | None = None) -> TeacherRecipe:
    path = path or shipped_dir("models") / "teachers.yaml"
    recipes = load_yaml(path)
    if not isinstance(recipes, dict):
        raise ConfigError(f"{path}: must map recipe names to recipes.")
    registry: Registry[Any] = Registry("teacher recipe")
    for key, value in recipes.items():
        registry.add(str(key), value)
    return from_mapping(TeacherRecipe, registry.get(name), str(path), f"{name}.")


def build_model(
    arch: str, num_classes: int, *, pretrained: bool = False, weights_file: Path | None = None, **kwargs: Any
) -> nn.Module:
    """A timm model with `num_classes` outputs. `weights_file` loads a local .pth/.safetensors through
    timm's own pretrained path (which drops a classifier of another size); `pretrained=True` alone
    downloads from the hub."""
    import timm

    if not timm.is_model(arch):
        from edgekd._registry import did_you_mean

        raise TeacherError(f"{arch!r} is not a timm model.{did_you_mean(arch, timm.list_models())}")
    if weights_file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
        pretrained = True
    return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)
