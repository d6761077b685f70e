import copy
import dataclasses
import hashlib
import sys

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from edgekd.analysis import analyze
from edgekd.catalog import TeacherRecipe
from edgekd.checkpoint import ModelInfo, save_model
from edgekd.distill.cache import weights_digest
from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import EdgeKDError, TeacherError
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
    save_model(path, model, ModelInfo("lcnet_050", small.preprocessing))
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


# ONNX teachers: real exports run by the real ONNX Runtime.


def _tiny_net(classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    )


class _ChannelsLast(nn.Module):
    """Takes NHWC images, as a TensorFlow-born model would."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def _gap_model(path, input_shape, classes=10, *, inputs=1, seed=0):
    """A hand-built ONNX classifier (global average pool, then a 3 x classes matrix) with any declared
    input shape: instant to write, and its logits are easy to compute independently."""
    from onnx import TensorProto, helper, numpy_helper, save

    channels = input_shape[1] if len(input_shape) == 4 else 3
    weight = np.random.default_rng(seed).normal(size=(channels, classes)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    declared = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))]
    declared += [
        helper.make_tensor_value_info(f"extra{i}", TensorProto.FLOAT, [1]) for i in range(inputs - 1)
    ]
    batch = input_shape[0]
    graph = helper.make_graph(
        nodes,
        "gap",
        declared,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(weight, "w")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return path, weight


@pytest.fixture(scope="module")
def onnx_teachers(digits, tmp_path_factory):
    """A tiny net trained a few steps on digits (so that its logits mean something), exported with a
    dynamic batch (NCHW) and with a fixed batch of 1 taking NHWC input."""
    root = tmp_path_factory.mktemp("onnx")
    net = _tiny_net()
    images, labels = digits.train.tensors
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(30):
        batch = slice(64 * step % 1024, 64 * step % 1024 + 64)
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(images[batch]), labels[batch]).backward()
        optimizer.step()
    net.eval()
    example = images[:2]
    dynamic = root / "dynamic.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(net, (example,), dynamic, dynamo=True, dynamic_shapes=({0: batch},), verbose=False)
    nhwc = root / "nhwc1.onnx"
    torch.onnx.export(
        _ChannelsLast(net), (example[:1].permute(0, 2, 3, 1),), nhwc, dynamo=True, verbose=False
    )
    return net, dynamic, nhwc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dynamic", "nhwc1"])
def test_onnx_teacher_logits_match_torch(onnx_teachers, digits, tmp_path, name):
    net, dynamic, nhwc = onnx_teachers
    path = dynamic if name == "dynamic" else nhwc
    teacher = resolve_teacher(str(path), None, digits, cache_dir=tmp_path)
    images = digits.val.tensors[0][:48]
    with torch.no_grad():
        expected = net(images)
    logits = teacher.model(images)
    assert logits.dtype == torch.float32 and logits.shape == (48, 10)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert float(expected.std()) > 0.1  # real, distinct logits, not a constant
    assert teacher.model.channels_last == (name == "nhwc1")
    assert teacher.model.batch_size == (1 if name == "nhwc1" else None)
    assert not any(p.requires_grad for p in teacher.model.parameters()) and not teacher.model.training
    teacher.model.train()
    assert not teacher.model.training  # stays frozen
    info = teacher.info
    assert info.arch == f"onnx:{path.stem}" and info.preprocessing == digits.preprocessing
    assert info.preprocessing.input_size == 32
    assert info.provenance["onnx"] == str(path)
    assert info.provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.provenance["external_data"] == {  # torch's exporter puts the conv weights beside the graph
        f"{path.name}.data": hashlib.sha256(path.with_name(f"{path.name}.data").read_bytes()).hexdigest()
    }
    assert teacher.source.startswith(f"ONNX model {path} run by ONNX Runtime ") and not teacher.cached
    # A copy (deepcopy, another process) opens its own session.
    torch.testing.assert_close(copy.deepcopy(teacher.model)(images[:3]), expected[:3], atol=1e-5, rtol=1e-5)


def test_fixed_batch_larger_than_one_runs_in_padded_chunks(digits, tmp_path):
    path, weight = _gap_model(tmp_path / "batch4.onnx", [4, 3, 32, 32])
    teacher = resolve_teacher(str(path), None, digits, cache_dir=tmp_path)
    images = digits.val.tensors[0][:10]  # chunks of 4, 4 and 2 (padded to 4)
    expected = images.mean((2, 3)) @ torch.from_numpy(weight)
    torch.testing.assert_close(teacher.model(images), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_cache_digest_differs_per_onnx_file(onnx_teachers, digits, tmp_path):
    import onnx

    _, dynamic, nhwc = onnx_teachers
    digest = {
        p: weights_digest(resolve_teacher(str(p), None, digits, cache_dir=tmp_path).model)
        for p in (dynamic, nhwc)
    }
    assert digest[dynamic] != digest[nhwc]
    assert (
        weights_digest(resolve_teacher(str(dynamic), None, digits, cache_dir=tmp_path).model)
        == digest[dynamic]
    )
    # Two exports of one architecture with every weight in .onnx.data: the .onnx files are identical,
    # and the digest must still tell them apart.
    paths = []
    for seed in (1, 2):
        model = onnx.load(str(dynamic))
        for tensor in model.graph.initializer:
            values = onnx.numpy_helper.to_array(tensor)
            if values.dtype == np.float32:  # the weights; integer shape constants stay in the graph
                noise = np.random.default_rng(seed).normal(size=values.shape).astype(values.dtype)
                tensor.CopyFrom(onnx.numpy_helper.from_array(values + noise, tensor.name))
                onnx.external_data_helper.set_external_data(tensor, "w.data")
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        onnx.save(model, str(folder / "t.onnx"))
        paths.append(folder / "t.onnx")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    first, second = (resolve_teacher(str(p), None, digits, cache_dir=tmp_path).model for p in paths)
    assert weights_digest(first) != weights_digest(second)


@pytest.mark.slow
def test_onnx_teacher_errors_name_the_file_and_the_mismatch(onnx_teachers, digits, tmp_path, monkeypatch):
    _, dynamic, _ = onnx_teachers

    def refused(path, match):
        with pytest.raises(TeacherError, match=match):
            resolve_teacher(str(path), None, digits, cache_dir=tmp_path)

    refused(tmp_path / "missing.onnx", r"missing\.onnx: ONNX teacher file does not exist")
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model")
    refused(fake, r"fake\.onnx: not a valid ONNX model, ONNX Runtime cannot load it")
    refused(
        _gap_model(tmp_path / "seven.onnx", ["n", 3, 32, 32], classes=7)[0], r"has 7 classes .* data has 10"
    )
    refused(
        _gap_model(tmp_path / "small.onnx", ["n", 3, 28, 28])[0],
        r"small\.onnx: the ONNX teacher takes 28x28 images .* the data is 32x32 px; pass --input-size 28",
    )
    refused(_gap_model(tmp_path / "two.onnx", ["n", 3, 32, 32], inputs=2)[0], r"two\.onnx: .* has 2 inputs")
    refused(_gap_model(tmp_path / "flat.onnx", ["n", 3, 32])[0], r"flat\.onnx: .* must be 4-D")
    refused(_gap_model(tmp_path / "grey.onnx", ["n", 1, 32, 32])[0], r"grey\.onnx: .* has 1 channels")
    with pytest.raises(TeacherError, match="carries its own weights"):
        resolve_teacher(str(dynamic), tmp_path / "w.pth", digits, cache_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    refused(dynamic, r"pip install 'edgekd\[onnx\]'")


@pytest.mark.slow
def test_distillation_from_an_onnx_teacher(onnx_teachers, small, tmp_path):
    _, dynamic, _ = onnx_teachers
    teacher = resolve_teacher(str(dynamic), None, small, cache_dir=tmp_path)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    history = train(
        student,
        small,
        TrainConfig(epochs=2, batch_size=64, lr=1e-2),
        loss=make_loss("kd"),
        teacher=teacher.model,
    )
    assert len(history) == 2 and 0 <= history[-1].val_teacher_agreement <= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "missing"), [("fitnet", "forward_intermediates"), ("rkd", "get_classifier")]
)
def test_feature_and_embedding_losses_refuse_an_onnx_teacher(onnx_teachers, small, tmp_path, loss, missing):
    _, dynamic, _ = onnx_teachers
    teacher = resolve_teacher(str(dynamic), None, small, cache_dir=tmp_path)
    student = timm.create_model("lcnet_050", num_classes=10)
    with pytest.raises(EdgeKDError, match=f"OnnxTeacher has no timm {missing}"):
        train(
            student,
            small,
            TrainConfig(epochs=1, batch_size=64, lr=1e-3),
            loss=make_loss(loss),
            teacher=teacher.model,
        )


def test_an_onnx_teacher_counts_its_weights_and_says_it_cannot_be_traced(digits, tmp_path):
    path, weight = _gap_model(tmp_path / "gap.onnx", ["n", 3, 32, 32])
    teacher = resolve_teacher(str(path), None, digits, cache_dir=tmp_path)
    assert teacher.model.parameter_count == weight.size
    with pytest.raises(TeacherError, match="torch.export and torch.compile cannot trace it"):
        analyze(teacher.model, digits.input_size)


def test_an_augmented_teachers_cache_key_names_the_fill_of_its_views():
    # Teachers trained on zero-filled views before the fill changed to reflect must not be reused.
    assert "augment_padding" not in RECIPE.key_fields()  # no views: nothing to fill
    augmented = dataclasses.replace(RECIPE, augment_draws=2)
    assert augmented.key_fields()["augment_padding"] == augmented.augmentation.padding == "reflect"
