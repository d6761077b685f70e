"""Streaming data (edgekd.streaming) and saved Hugging Face data sets (edgekd.sources): real image
files written with PIL, real DataLoader workers, timm's own transforms."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.augment import Augmentation
from edgekd.data import DecodedDataset, ImageFileDataset, load_image_folder
from edgekd.distill.losses import make_loss, parse_loss_specs
from edgekd.distill.trainer import CHECKPOINT, TrainConfig, accuracy, predict, train
from edgekd.errors import ConfigError, DataError
from edgekd.sources import is_saved_dataset, scan_data
from edgekd.streaming import (
    EpochOrder,
    StreamRecipe,
    TrainingViews,
    choose_data_mode,
    decide_data_mode,
    decoded_size,
    streamed,
    training_loader,
)

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def _colour_folder(root, per_class=30, size=20, suffix=".png"):
    """A learnable ImageFolder: each class a colour, each image that colour under strong noise."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-60, 60, size=(size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i}{suffix}")
    return root


def _cnn(classes=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, classes),
    )


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return _colour_folder(tmp_path_factory.mktemp("colours") / "colours")


def test_streaming_trains_above_chance_with_worker_decoded_views(colours):
    data = streamed(load_image_folder(colours, input_size=16), workers=1)
    model = _cnn()
    config = TrainConfig(epochs=4, batch_size=16, lr=1e-2, augmentation=Augmentation(draws=1, max_shift=0))
    history = train(model, data, config, loss=make_loss("ce"))
    assert len(history) == 4
    test_accuracy = accuracy(*predict(model, data.test))
    assert test_accuracy >= 0.8, test_accuracy  # chance is 1/3


def test_workers_decode_with_timms_transform_and_every_process_makes_the_same_view(colours):
    from timm.data.transforms import RandomResizedCropAndInterpolation

    data = streamed(load_image_folder(colours, input_size=16), workers=2)
    recipe = StreamRecipe(hflip=True, rand_augment="rand-m9-mstd0.5", seed=5)
    views = TrainingViews(data.train, recipe)
    steps = [type(t) for t in views.transform.transforms]
    assert RandomResizedCropAndInterpolation in steps  # timm's own, not a rewrite
    assert any("RandAugment" in t.__name__ for t in steps)
    order = EpochOrder()
    loader = training_loader(data.train, recipe, order, batch_size=4, pin_memory=False)
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 4
    rows = [3, 0, 7, 5]
    order.set(rows, epoch=1)
    (from_workers, labels), *_ = list(loader)
    in_process = torch.stack([views[r, 1][0] for r in rows])
    assert torch.equal(from_workers, in_process)  # seeded by (seed, epoch, row), not by the process
    assert labels.tolist() == [data.train.samples[r][1] for r in rows]
    order.set(rows, epoch=2)
    assert not torch.equal(next(iter(loader))[0], from_workers)  # a fresh view each epoch


def test_mixup_and_cutmix_come_from_timm_and_mix_labels(colours):
    from timm.data import Mixup

    data = streamed(load_image_folder(colours, input_size=16), workers=0)
    mixer = StreamRecipe(mixup=0.4, cutmix=1.0).mixer(data.num_classes)
    assert isinstance(mixer, Mixup) and StreamRecipe().mixer(3) is None
    model = _cnn()
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-2, mixup=0.4, cutmix=1.0)
    history = train(model, data, config, loss=make_loss("kd"), teacher=_cnn(seed=1))
    assert np.isfinite(history[0].train_loss)
    with pytest.raises(ValueError, match="dkd needs hard labels"):
        train(_cnn(), data, config, loss=parse_loss_specs(["ce", "dkd"]), teacher=_cnn(seed=1))


def test_streamed_training_resumes_to_identical_weights(colours, tmp_path):
    from tests.test_trainer import _InterruptAtEpoch

    data = streamed(load_image_folder(colours, input_size=16), workers=1)
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, seed=3, augmentation=Augmentation(draws=1))
    reference = _cnn()
    train(reference, data, config, loss=make_loss("ce"))
    resumed = _cnn()
    with pytest.raises(KeyboardInterrupt):
        train(
            resumed,
            data,
            config,
            loss=make_loss("ce"),
            checkpoint_dir=tmp_path,
            observer=_InterruptAtEpoch(3),
        )
    assert (tmp_path / CHECKPOINT).exists()
    fresh = _cnn(seed=99)
    history = train(fresh, data, config, loss=make_loss("ce"), checkpoint_dir=tmp_path)
    assert [m.epoch for m in history] == [1, 2, 3]
    for (name, a), b in zip(reference.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_corrupt_image_in_streaming_names_the_file(tmp_path):
    root = _colour_folder(tmp_path / "colours", per_class=6)
    data = streamed(load_image_folder(root, input_size=16), workers=1)
    bad = data.train.samples[2][0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # damaged after the scan, as a failing disk would
    with pytest.raises(DataError) as caught:
        train(_cnn(), data, TrainConfig(epochs=1, batch_size=4, lr=1e-2), loss=make_loss("ce"))
    assert str(caught.value).startswith(f"{bad}: cannot be decoded as an image")
    assert "\n" not in str(caught.value)  # the worker's traceback is not the message


def test_the_auto_choice_follows_the_cache_budget(colours, monkeypatch, tmp_path):
    splits = load_image_folder(colours, input_size=16)
    size = decoded_size(splits)
    assert size == 90 * 16 * 16 * 3  # every split's uint8 pixels
    assert choose_data_mode("auto", decoded_bytes=size, budget_bytes=size).mode == "decode"
    assert choose_data_mode("auto", decoded_bytes=size, budget_bytes=size - 1).mode == "stream"
    assert choose_data_mode("auto", decoded_bytes=1, budget_bytes=10, fresh_views="--mixup").mode == "stream"
    assert choose_data_mode("stream", decoded_bytes=1, budget_bytes=10).mode == "stream"
    assert choose_data_mode("decode", decoded_bytes=10, budget_bytes=1).mode == "decode"
    with pytest.raises(ConfigError, match="--mixup needs fresh random views"):
        choose_data_mode("decode", decoded_bytes=1, budget_bytes=10, fresh_views="--mixup")
    import edgekd.streaming as streaming

    monkeypatch.setattr(streaming, "available_memory", lambda: 2 * size - 2)  # half of it: one byte short
    assert decide_data_mode(splits, "auto", tmp_path).mode == "stream"
    monkeypatch.setattr(streaming, "available_memory", lambda: 2 * size)
    assert decide_data_mode(splits, "auto", tmp_path).mode == "decode"


def _data_stage(config, cache_dir):
    from edgekd.distill.distributed import World
    from edgekd.fit_stages import DataStage, FitContext
    from edgekd.progress import SilentObserver

    splits = scan_data(config.data).splits(16)
    context = FitContext(config, None, SilentObserver(), World(0, 1), [], None, [], splits, 0.0, cache_dir)
    DataStage().run(context)
    assert context.data_mode == ("stream" if isinstance(context.data.train, ImageFileDataset) else "decode")
    return context.data


def test_fit_streams_when_asked_or_over_budget_and_says_so(colours, tmp_path, caplog, monkeypatch):
    from edgekd.fit_config import FitConfig

    caplog.set_level(logging.INFO)
    data = _data_stage(FitConfig.from_options(data=colours), tmp_path)
    assert isinstance(data.train, DecodedDataset)  # 69 kB of pixels fit any budget
    assert "data: decoded once into the cache (the decoded images (0 MB) fit the cache budget" in caplog.text
    data = _data_stage(FitConfig.from_options(data=colours, data_mode="stream"), tmp_path)
    assert isinstance(data.train, ImageFileDataset) and data.train.workers >= 1
    assert "data: streamed by" in caplog.text and "(--data-mode stream)" in caplog.text
    import edgekd.streaming as streaming

    monkeypatch.setattr(streaming, "available_memory", lambda: 1000)
    data = _data_stage(FitConfig.from_options(data=colours), tmp_path)
    assert not isinstance(data.train, DecodedDataset)
    assert "exceed the cache budget (0 MB)" in caplog.text
    with pytest.raises(ConfigError, match="--rand-augment needs fresh random views"):
        FitConfig.from_options(data=colours, data_mode="decode", rand_augment="rand-m9")
    with pytest.raises(ConfigError, match="--rand-augment"):
        FitConfig.from_options(rand_augment="cutout")
    with pytest.raises(ConfigError, match="--data-mode"):
        FitConfig.from_options(data_mode="lazy")
    with pytest.raises(ConfigError, match="--data-mode stream needs image files"):
        _data_stage(FitConfig.from_options(data_mode="stream"), tmp_path)


def _saved_dataset(root, splits=("train",), per_class=12):
    import datasets

    rng = np.random.default_rng(1)
    names = ["forest", "river", "sea"]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    tables, images = {}, {}
    for split in splits:
        rows = {"img": [], "label": []}
        for label in range(len(names)):
            for _ in range(per_class):
                pixels = rng.integers(0, 255, size=(10, 14, 3), dtype=np.uint8)
                rows["img"].append(Image.fromarray(pixels))
                rows["label"].append(label)
        tables[split] = datasets.Dataset.from_dict(rows, features=features)
        images[split] = rows
    saved = datasets.DatasetDict(tables) if len(splits) > 1 else tables[splits[0]]
    saved.save_to_disk(str(root))
    return names, images


def test_a_saved_hugging_face_dataset_round_trips_labels_and_class_names(tmp_path):
    names, images = _saved_dataset(tmp_path / "hf", splits=("train", "validation", "test"))
    assert is_saved_dataset(tmp_path / "hf")
    scanned = scan_data(tmp_path / "hf")
    assert scanned.classes == tuple(names) and scanned.counts == {"train": 36, "val": 36, "test": 36}
    assert scanned.native.describe() == "14×10"
    splits = scanned.splits(8)
    assert splits.preprocessing.labels == tuple(names)
    for ours, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
        dataset = getattr(splits, ours)
        assert [label for _, label in dataset.samples] == images[theirs]["label"]
    # the row's pixels, resized as the contract says, independent of edgekd's reader
    expected = (
        np.asarray(images["test"]["img"][5].resize((8, 8), Image.Resampling.BILINEAR), np.float32) / 255
    )
    image, label = splits.test[5]
    want = torch.from_numpy(expected).permute(2, 0, 1) - torch.tensor(splits.preprocessing.mean).view(3, 1, 1)
    want = want / torch.tensor(splits.preprocessing.std).view(3, 1, 1)
    torch.testing.assert_close(image, want)
    assert label == images["test"]["label"][5]
    # streamed through a worker: the rows travel to the worker process and are read there
    data = streamed(splits, workers=1)
    order = EpochOrder()
    order.set(range(6), epoch=1)
    x, y = next(iter(training_loader(data.train, StreamRecipe(), order, batch_size=6, pin_memory=False)))
    assert x.shape == (6, 3, 8, 8) and y.tolist() == [label for _, label in data.train.samples[:6]]


def test_a_lone_saved_dataset_is_split_and_a_wrong_one_is_refused(tmp_path):
    import datasets

    _saved_dataset(tmp_path / "one", splits=("train",), per_class=20)
    scanned = scan_data(tmp_path / "one")
    assert scanned.counts == {"train": 42, "val": 9, "test": 9}  # 15 % of each class carved, as ImageFolder
    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DataError, match="one Image column and one ClassLabel column"):
        scan_data(tmp_path / "plain")
