"""No checkpoint edgekd reads can run code, and a damaged one never blocks a later fit: a crafted pickle
or a truncated file in a run directory is refused with a one-line error naming it; in the cache it is
moved aside with a warning naming it and the teacher is trained again."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shlex

import pytest
import torch
from torch.utils.data import TensorDataset

from edgekd.catalog import TeacherRecipe
from edgekd.checkpoint import load_model
from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import CHECKPOINT, TrainConfig, train
from edgekd.errors import CheckpointError, TeacherError
from edgekd.teachers import resolve_teacher, teacher_cache_key, train_cached_teacher

RECIPE = TeacherRecipe("test_efficientnet", epochs=1, batch_size=32, lr=3e-3)
CONFIG = TrainConfig(epochs=1, batch_size=32, lr=1e-2)


class _RunsCode:
    """Unpickling this runs `touch MARKER`, as a crafted checkpoint would run anything."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def plant_code_checkpoint(path, marker, as_zip=True):
    """A checkpoint that runs `touch marker` when loaded with pickle: torch.save's zip format or a plain
    pickle stream, both of which torch.load accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": _RunsCode(marker), "history": []}
    if as_zip:
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    return path


@pytest.fixture(scope="module")
def small(digits):
    return dataclasses.replace(
        digits,
        train=TensorDataset(*(t[:64] for t in digits.train.tensors)),
        val=TensorDataset(*(t[:64] for t in digits.val.tensors)),
    )


def _cnn():
    torch.manual_seed(0)
    layers = [
        torch.nn.Conv2d(3, 4, 3, stride=4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(256, 10),
    ]
    return torch.nn.Sequential(*layers)


def test_the_planted_checkpoint_runs_code_when_unpickled(tmp_path):
    """The control: without weights_only the file below does create its marker, so the tests that
    show the marker absent are testing something."""
    marker = tmp_path / "MARKER"
    torch.load(plant_code_checkpoint(tmp_path / "last.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("as_zip", [True, False], ids=["torch.save zip", "plain pickle"])
def test_a_run_checkpoint_that_would_run_code_is_refused_unread(small, tmp_path, as_zip):
    marker = tmp_path / "MARKER"
    checkpoints = tmp_path / "run" / "checkpoints" / "student"
    planted = plant_code_checkpoint(checkpoints / CHECKPOINT, marker, as_zip)
    with pytest.raises(CheckpointError) as refused:
        train(_cnn(), small, CONFIG, loss=make_loss("ce"), checkpoint_dir=checkpoints)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{planted}: cannot be resumed from")
    assert "pickled Python objects besides tensors" in message and "it was not unpickled" in message
    assert "Delete it" in message
    assert not marker.exists()
    assert planted.exists()  # a run's own checkpoint is the user's to delete, not edgekd's


@pytest.mark.parametrize("as_zip", [True, False], ids=["torch.save zip", "plain pickle"])
def test_teacher_weights_that_would_run_code_are_refused_unread(small, tmp_path, as_zip):
    marker = tmp_path / "MARKER"
    weights = plant_code_checkpoint(tmp_path / "weights.pth", marker, as_zip)
    with pytest.raises(TeacherError) as refused:
        resolve_teacher("test_efficientnet", weights, small, cache_dir=tmp_path / "cache")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{weights}: holds pickled Python objects")
    assert not marker.exists()


def test_a_truncated_run_checkpoint_is_refused_by_name(small, tmp_path):
    config = dataclasses.replace(CONFIG, epochs=2)
    train(_cnn(), small, config, loss=make_loss("ce"), checkpoint_dir=tmp_path)
    checkpoint = tmp_path / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt: cannot be resumed from: it is damaged") as refused:
        train(_cnn(), small, config, loss=make_loss("ce"), checkpoint_dir=tmp_path)
    assert "\n" not in str(refused.value)


def test_bad_cache_entries_are_moved_aside_and_the_teacher_retrained(small, tmp_path, caplog):
    """A code-running checkpoint planted in a teacher's `.partial/` folder (its key is predictable) and
    then a cached teacher cut in half: each is moved aside with a warning naming it, and the teacher is
    trained again instead of blocking every later fit."""
    marker = tmp_path / "MARKER"
    key = teacher_cache_key(small, RECIPE, seed=0)
    cached = tmp_path / "teachers" / f"{RECIPE.arch}-{key}.safetensors"
    partial = cached.with_suffix(".partial")
    planted = plant_code_checkpoint(partial / CHECKPOINT, marker)
    with caplog.at_level("WARNING", logger="edgekd"):
        first = train_cached_teacher(small, RECIPE, tmp_path)
    assert not marker.exists()
    assert not first.cached and cached.exists() and not partial.exists()
    [aside] = (tmp_path / "teachers").glob(f"{partial.name}.corrupt-*")
    assert (aside / CHECKPOINT).is_file()  # kept for a post-mortem, never loaded
    assert f"{planted} cannot be resumed from" in caplog.text and aside.name in caplog.text

    caplog.clear()
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="edgekd"):
        second = train_cached_teacher(small, RECIPE, tmp_path)
    assert not second.cached
    [cut] = (tmp_path / "teachers").glob(f"{cached.name}.corrupt-*")
    assert f"{cached}: cached teacher cannot be loaded" in caplog.text and cut.name in caplog.text
    load_model(cached)  # the retrained teacher is whole again
    assert train_cached_teacher(small, RECIPE, tmp_path).cached
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # retrained from the same seed: the same teacher
