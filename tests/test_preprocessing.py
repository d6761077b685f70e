"""`Preprocessing`, the one input contract: its validation, JSON, shapes per layout and normalisation,
and where it is carried: checkpoints (old flat headers included), artifact contracts and the check
`edgekd export` makes between a checkpoint and its data."""

import json

import numpy as np
import pytest
import torch

from edgekd.artifact import make_contract
from edgekd.checkpoint import ModelInfo, load_model, read_info, save_model
from edgekd.errors import ConfigError, DataError
from edgekd.preprocessing import Preprocessing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LABELS = ("cat", "dog", "fox")
ARCH = "test_efficientnet"  # timm's tiny test network: a real model that builds in milliseconds


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_size": 0}, r"input_size must be a whole number >= 1, not 0"),
        ({"input_size": 32.0}, r"input_size must be a whole number >= 1, not 32\.0"),
        ({"input_size": True}, r"input_size must be a whole number >= 1, not True"),
        ({"mean": (0.5, 0.5)}, r"mean \[0\.5, 0\.5\] and std .* need one value per RGB channel"),
        ({"std": (0.2,) * 4}, r"std \[0\.2, 0\.2, 0\.2, 0\.2\] need one value per RGB channel"),
        ({"std": (0.2, 0.0, 0.2)}, r"std \[0\.2, 0\.0, 0\.2\] must be positive in every channel"),
        ({"std": (0.2, -0.1, 0.2)}, r"must be positive in every channel"),
        ({"labels": ()}, r"no labels"),
        ({"labels": ("cat", "dog", "cat", "fox", "dog")}, r"labels \['cat', 'dog'\] appear more than once"),
        ({"layout": "CHW"}, r"layout 'CHW' is none of \['NCHW', 'NHWC'\]"),
    ],
)
def test_an_impossible_contract_is_refused_naming_the_field(fields, message):
    good = {"input_size": 32, "mean": MEAN, "std": STD, "labels": LABELS}
    with pytest.raises(ConfigError, match=message):
        Preprocessing(**{**good, **fields})


def test_json_round_trips_and_lists_become_tuples():
    p = Preprocessing(48, MEAN, STD, LABELS, layout="NHWC")
    assert Preprocessing.from_json(p.to_json()) == p
    raw = json.loads(p.to_json())
    assert raw == {
        "input_size": 48,
        "mean": list(MEAN),
        "std": list(STD),
        "labels": list(LABELS),
        "layout": "NHWC",
    }
    from_lists = Preprocessing(48, list(MEAN), list(STD), list(LABELS), "NHWC")
    assert from_lists == p and hash(from_lists) == hash(p)
    assert Preprocessing(8, (0, 0, 0), (1, 1, 1), ("a",)).mean == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"input_size": 8}', '{"size": 8, "mean": []}'])
def test_from_json_refuses_what_is_not_a_contract(text):
    with pytest.raises(ConfigError, match="preprocessing"):
        Preprocessing.from_json(text)


def test_input_shape_follows_the_layout():
    p = Preprocessing(40, MEAN, STD, LABELS)
    assert p.layout == "NCHW" and p.input_shape == (1, 3, 40, 40)
    nhwc = p.with_layout("NHWC")
    assert nhwc.input_shape == (1, 40, 40, 3) and nhwc.layout == "NHWC"
    assert nhwc.with_layout("NCHW") == p and p.num_classes == 3


def _expected(pixels: np.ndarray, channel_axis: int) -> np.ndarray:
    """(x - mean) / std in float64, channel by channel: the maths written out independently."""
    x = pixels.astype(np.float64) / (255.0 if pixels.dtype == np.uint8 else 1.0)
    out = np.empty_like(x)
    for c in range(3):
        index = [slice(None)] * x.ndim
        index[channel_axis] = c
        out[tuple(index)] = (x[tuple(index)] - MEAN[c]) / STD[c]
    return out


def test_normalise_matches_the_maths_in_every_layout_dtype_and_array_kind():
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (4, 3, 5, 6), dtype=np.uint8)
    p = Preprocessing(5, MEAN, STD, LABELS)
    for batch, layout, axis in ((nchw, "NCHW", 1), (nchw.transpose(0, 2, 3, 1), "NHWC", 3)):
        contract = p.with_layout(layout)
        expected = _expected(batch, axis)
        for images in (batch, batch.astype(np.float32) / np.float32(255)):
            got = contract.normalise(images)
            assert isinstance(got, np.ndarray) and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
            tensor = contract.normalise(torch.from_numpy(np.ascontiguousarray(images)))
            assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
            assert np.array_equal(tensor.numpy(), got)  # numpy and torch: the same float32 figures
        one = contract.normalise(batch[0])  # a single image broadcasts the same way
        np.testing.assert_allclose(one, expected[0], rtol=1e-5, atol=1e-5)
    assert p.normalise(np.zeros((1, 3, 1, 1), np.uint8))[0, :, 0, 0] == pytest.approx(
        [-m / s for m, s in zip(MEAN, STD)], rel=1e-6
    )


def test_differences_name_each_field_that_differs():
    p = Preprocessing(32, MEAN, STD, LABELS)
    assert p.differences(p) == ()
    other = Preprocessing(64, MEAN, (0.5,) * 3, ("cat", "dog", "owl"))
    assert p.differences(other) == (
        "input_size 32 vs 64",
        f"std {STD} vs (0.5, 0.5, 0.5)",
        "labels ['cat', 'dog', 'fox'] vs ['cat', 'dog', 'owl']",
    )


def test_make_contract_lays_the_preprocessing_out_as_the_format_takes_it():
    p = Preprocessing(32, MEAN, STD, LABELS)
    tflite, onnx = make_contract("net", "tflite", p, "int8"), make_contract("net", "onnx", p)
    assert (tflite.layout, tflite.input_shape, tflite.precision) == ("NHWC", (1, 32, 32, 3), "int8")
    assert (onnx.layout, onnx.input_shape, onnx.precision) == ("NCHW", (1, 3, 32, 32), "fp32")
    for contract in (tflite, onnx):
        assert (contract.mean, contract.std, contract.labels) == (MEAN, STD, LABELS)


def _model(num_classes: int = 3):
    from edgekd.catalog import build_model

    return build_model(ARCH, num_classes)


def test_a_checkpoint_carries_its_preprocessing(tmp_path):
    p = Preprocessing(32, MEAN, STD, LABELS)
    info = ModelInfo(ARCH, p, kwargs={"drop_rate": 0.0}, provenance={"trained_by": "test"})
    save_model(tmp_path / "m.safetensors", _model(), info)
    assert read_info(tmp_path / "m.safetensors") == info
    model, loaded = load_model(tmp_path / "m.safetensors")
    assert loaded == info and model(torch.zeros(p.input_shape)).shape == (1, 3)


def _save_flat(path, model, header: dict) -> None:
    """A checkpoint as edgekd wrote it before `Preprocessing`: the contract flat in the "info" header."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "edgekd-model/1", "info": json.dumps(header)})


def test_a_checkpoint_written_the_old_flat_way_still_loads(tmp_path):
    model = _model().eval()
    flat = {
        "arch": ARCH,
        "classes": list(LABELS),
        "input_size": 24,
        "mean": list(MEAN),
        "std": list(STD),
        "kwargs": {},
        "provenance": {"teacher": "resnet18"},
    }
    _save_flat(tmp_path / "old.safetensors", model, flat)
    loaded, info = load_model(tmp_path / "old.safetensors")
    assert info == ModelInfo(ARCH, Preprocessing(24, MEAN, STD, LABELS), {}, {"teacher": "resnet18"})
    images = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))  # the weights came back too
    # A flat header that is not a contract edgekd could have written is not a checkpoint.
    _save_flat(tmp_path / "bad.safetensors", model, {**flat, "std": [0.2, 0.0, 0.2]})
    assert read_info(tmp_path / "bad.safetensors") is None


def test_export_refuses_data_whose_preprocessing_differs_and_says_how(tmp_path):
    from edgekd.export_source import load_export_source

    letters = tuple("abcdefghij")  # the embedded digits are labelled "0".."9"
    checkpoint = tmp_path / "letters.safetensors"
    save_model(checkpoint, _model(10), ModelInfo(ARCH, Preprocessing(32, MEAN, STD, letters)))
    with pytest.raises(DataError) as refused:
        load_export_source(checkpoint, cache_dir=tmp_path / "cache")
    message = str(refused.value)
    assert message.startswith("the embedded digits: its preprocessing differs from the checkpoint's")
    assert "labels ['a', 'b', 'c'" in message and "vs ['0', '1', '2'" in message
    assert "input_size" not in message and "mean" not in message
    assert message.endswith(f"pass --data with the images {checkpoint.name} was trained on.")
    save_model(checkpoint, _model(10), ModelInfo(ARCH, Preprocessing(32, MEAN, STD, tuple("0123456789"))))
    assert load_export_source(checkpoint, cache_dir=tmp_path / "cache").data.preprocessing.labels[0] == "0"
