import dataclasses

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from edgekd.catalog import TeacherRecipe
from edgekd.checkpoint import ModelInfo, save_model
from edgekd.errors import TeacherError
from edgekd.teachers import resolve_teacher

RECIPE = TeacherRecipe("lcnet_050", epochs=1, batch_size=64, lr=3e-3)


@pytest.fixture(scope="module")
def small(digits):
    images, labels = digits.train.tensors
    return dataclasses.replace(digits, train=TensorDataset(images[:128], labels[:128]))


def test_default_teacher_is_trained_once_then_cached(small, tmp_path, caplog):
    first = resolve_teacher(None, None, small, cache_dir=tmp_path, recipe=RECIPE)
    assert not first.cached and first.info.provenance["trained_by"] == "edgekd"
    with caplog.at_level("INFO", logger="edgekd"):
        second = resolve_teacher(None, None, small, cache_dir=tmp_path, recipe=RECIPE)
    assert second.cached and "reusing cached teacher" in caplog.text
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    other_recipe = dataclasses.replace(RECIPE, lr=1e-3)
    assert not resolve_teacher(None, None, small, cache_dir=tmp_path, recipe=other_recipe).cached


def test_local_timm_weights_with_matching_head_are_used_as_is(small, tmp_path):
    model = timm.create_model("lcnet_050", num_classes=10)
    weights = tmp_path / "lcnet.safetensors"
    save_file(model.state_dict(), str(weights))
    teacher = resolve_teacher("lcnet_050", weights, small, cache_dir=tmp_path, recipe=RECIPE)
    for a, b in zip(model.state_dict().values(), teacher.model.state_dict().values()):
        assert torch.equal(a, b)
    assert "from" in teacher.source and not teacher.cached


def test_local_weights_with_another_head_are_fine_tuned(small, tmp_path):
    backbone = timm.create_model("lcnet_050", num_classes=1000)
    weights = tmp_path / "lcnet1000.pth"
    torch.save(backbone.state_dict(), weights)
    teacher = resolve_teacher("lcnet_050", weights, small, cache_dir=tmp_path, recipe=RECIPE)
    assert teacher.model.get_classifier().out_features == 10
    assert "fine-tuned" in teacher.source
    stem = backbone.state_dict()["conv_stem.weight"]
    assert not torch.equal(stem, teacher.model.state_dict()["conv_stem.weight"])  # it trained


def test_edgekd_checkpoint_and_bad_paths(small, tmp_path):
    model = timm.create_model("lcnet_050", num_classes=10)
    path = tmp_path / "teacher.safetensors"
    save_model(path, model, ModelInfo("lcnet_050", small.classes, 32, small.mean, small.std))
    assert resolve_teacher(str(path), None, small, cache_dir=tmp_path).info.arch == "lcnet_050"
    with pytest.raises(TeacherError, match="does not exist"):
        resolve_teacher(str(tmp_path / "missing.safetensors"), None, small, cache_dir=tmp_path)
    plain = tmp_path / "plain.safetensors"
    save_file(model.state_dict(), str(plain))
    with pytest.raises(TeacherError, match="not an edgekd checkpoint"):
        resolve_teacher(str(plain), None, small, cache_dir=tmp_path)
    with pytest.raises(TeacherError, match="not a timm model. Did you mean 'resnet18'"):
        resolve_teacher("resnet19", None, small, cache_dir=tmp_path)
    with pytest.raises(TeacherError, match=r"plain\.safetensors: does not fit resnet10t: missing"):
        resolve_teacher("resnet10t", plain, small, cache_dir=tmp_path)
