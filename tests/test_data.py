import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import load_data, load_digits_splits, load_image_folder
from edgekd.errors import DataError


def test_digits_split_is_stratified_disjoint_and_fixed(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1259, 269, 269)
    assert digits.train[0][0].shape == (3, 32, 32)
    images = [d.tensors[0] for d in (digits.train, digits.val, digits.test)]
    flat = torch.cat(images).flatten(1)
    assert len(torch.unique(flat, dim=0)) >= len(flat) - 20  # digits has a few duplicate images
    for split in (digits.val, digits.test):
        counts = np.bincount(split.tensors[1].numpy(), minlength=10)
        assert counts.min() >= 25
    again = load_digits_splits(32)
    assert torch.equal(again.test.tensors[0], digits.test.tensors[0])
    assert again.fingerprint == digits.fingerprint
    assert load_digits_splits(32, seed=1).fingerprint != digits.fingerprint


def _make_folder(root, splits=("train",), classes=("cat", "dog"), per_class=8, size=12):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_image_folder_loads_and_carves_missing_splits(tmp_path):
    root = _make_folder(tmp_path / "pets", splits=("train", "valid"), per_class=20)
    splits = load_image_folder(root, input_size=16)
    assert splits.classes == ("cat", "dog")
    assert len(splits.val) == 40  # valid/ used as is
    assert len(splits.test) == 6 and len(splits.train) == 34  # 15 % of each class carved from train
    image, label = splits.train[0]
    assert image.shape == (3, 16, 16) and label in (0, 1)


def test_missing_or_empty_folders_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nope", None)
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty/train/cat: class folder holds no images"):
        load_image_folder(tmp_path / "empty", 16)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="expected a train/ folder"):
        load_image_folder(tmp_path / "flat", 16)


def test_corrupt_image_is_named(tmp_path):
    root = _make_folder(tmp_path / "d")
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        load_image_folder(root, 16)


def test_mismatched_class_sets_are_named(tmp_path):
    root = _make_folder(tmp_path / "d", splits=("train",))
    _make_folder(tmp_path / "d", splits=("test",), classes=("cat", "bird"))
    with pytest.raises(
        DataError, match=r"d/test: class folders differ from train/ \(missing \['dog'\], extra \['bird'\]\)"
    ):
        load_image_folder(root, 16)


def test_decode_once_matches_per_file_decoding_and_is_reused(tmp_path):
    from edgekd.data import DecodedDataset, decode_once, load_image_folder

    _make_folder(tmp_path / "imgs", splits=("train", "test"), per_class=6)
    splits = load_image_folder(tmp_path / "imgs", 16)
    decoded = decode_once(splits, tmp_path / "cache")
    assert isinstance(decoded.train, DecodedDataset) and decoded.fingerprint == splits.fingerprint
    for name in ("train", "val", "test"):
        original, fast = getattr(splits, name), getattr(decoded, name)
        assert len(original) == len(fast)
        for i in range(len(original)):
            (x, y), (x2, y2) = original[i], fast[i]
            assert y == y2 and torch.allclose(x, x2, atol=1e-6)
    written = sorted(p.name for p in (tmp_path / "cache" / "decoded").rglob("*.npy"))
    assert written == sorted(f"{n}-{k}.npy" for n in ("train", "val", "test") for k in ("images", "labels"))
    again = decode_once(splits, tmp_path / "cache")  # read back, not decoded again
    assert isinstance(again.train.images, np.memmap)
