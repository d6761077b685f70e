import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import load_digits_splits, load_image_folder
from edgekd.errors import DataError
from edgekd.preprocessing import Preprocessing
from edgekd.sources import load_data


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


def test_digits_are_read_from_scikit_learns_file_as_its_loader_reads_them(monkeypatch):
    """The CSV read without importing scikit-learn gives its `load_digits` arrays exactly (the digits
    fingerprint, hence every cached digits teacher, depends on them); where the file is not found, its
    loader is the fallback."""
    import importlib.util

    from sklearn.datasets import load_digits

    import edgekd.data

    bunch = load_digits()
    for digits in (
        edgekd.data._load_digits(),
        _with_no_file_found(monkeypatch, importlib.util, edgekd.data._load_digits),
    ):
        assert digits.images.dtype == bunch.images.dtype and np.array_equal(digits.images, bunch.images)
        assert np.array_equal(digits.target, bunch.target) and digits.target.dtype == bunch.target.dtype
        assert list(digits.target_names) == list(bunch.target_names)


def _with_no_file_found(monkeypatch, importlib_util, load):
    with monkeypatch.context() as patched:
        patched.setattr(importlib_util, "find_spec", lambda name: None)
        return load()


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
    assert splits.preprocessing.labels == ("cat", "dog")
    assert len(splits.val) == 40  # valid/ used as is
    assert len(splits.test) == 6 and len(splits.train) == 34  # 15 % of each class carved from train
    image, label = splits.train[0]
    assert image.shape == (3, 16, 16) and label in (0, 1)


def test_missing_or_empty_folders_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nope", 32)
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


def _sixteen_bit_folder(root, size=8):
    """Two classes of 16-bit grey PNGs whose samples are multiples of 257: k * 257 is exactly k in 8
    bits by either convention (divide by 257, or keep the high byte)."""
    levels = {}
    for c, base in (("dark", 10), ("bright", 200)):
        (root / "train" / c).mkdir(parents=True)
        for i in range(7):
            k = (np.arange(size * size).reshape(size, size) + base + i) % 256
            Image.fromarray((k * 257).astype(np.uint16)).save(root / "train" / c / f"{i}.png")
            levels[(c, f"{i}.png")] = k.astype(np.uint8)
    return root, levels


def test_sixteen_bit_pngs_keep_their_levels_instead_of_turning_white(tmp_path):
    from edgekd.data import decode_once

    root, levels = _sixteen_bit_folder(tmp_path / "scans")
    with Image.open(root / "train" / "dark" / "0.png") as img:
        assert img.mode in ("I;16", "I"), img.mode  # the file really is 16-bit
    splits = load_image_folder(root, input_size=8)
    decoded = decode_once(splits, tmp_path / "cache")
    contract = splits.preprocessing
    mean, std = torch.tensor(contract.mean).view(3, 1, 1), torch.tensor(contract.std).view(3, 1, 1)
    for name in ("train", "val", "test"):
        files, fast = getattr(splits, name), getattr(decoded, name)
        for i, (path, _) in enumerate(files.samples):
            expected = torch.from_numpy(levels[(path.parent.name, path.name)]).float() / 255
            for image, _label in (files[i], fast[i]):  # per-file decoding and the decoded cache agree
                pixels = image * std + mean
                assert torch.allclose(pixels, expected.expand(3, -1, -1), atol=1e-5), path


def test_other_wide_modes_scale_by_their_range_and_odd_modes_are_named(tmp_path):
    from edgekd.data import as_rgb

    ramp = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)  # 32896 = 128 * 257 + 0
    big_endian = Image.frombytes("I;16B", (4, 1), ramp.astype(">u2").tobytes())
    assert np.asarray(as_rgb(big_endian, tmp_path / "a.tif"))[0, :, 0].tolist() == [0, 1, 255, 128]
    wide = Image.fromarray(np.array([[-1000, 0, 1000, 3000]], dtype=np.int32), "I")  # past 16 bits' range
    assert np.asarray(as_rgb(wide, tmp_path / "b.tif"))[0, :, 1].tolist() == [0, 64, 128, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.2]], dtype=np.float32), "F")
    assert np.asarray(as_rgb(unit, tmp_path / "c.tif"))[0, :, 2].tolist() == [0, 128, 255, 51]
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [200, 100, 50, 255], [200, 100, 50, 51]]], np.uint8))
    composited = np.asarray(as_rgb(rgba, tmp_path / "d.png"))[0].astype(int)
    assert composited[:2].tolist() == [[0, 0, 0], [200, 100, 50]]  # transparent: black; opaque: itself
    assert np.abs(composited[2] - np.array([200, 100, 50]) * 51 / 255).max() <= 1  # a fifth: on black
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([90, 90, 90, 10, 200, 10])
    palette.info["transparency"] = 0
    assert np.asarray(as_rgb(palette, tmp_path / "p.png"))[0].tolist() == [[0, 0, 0], [10, 200, 10]]
    with pytest.raises(DataError, match=r"e\.png: image mode 'La' cannot be read as colour"):
        as_rgb(Image.new("La", (2, 2)), tmp_path / "e.png")
    with pytest.raises(DataError, match=r"f\.tif: float image \(mode F\) holds NaN"):
        as_rgb(Image.fromarray(np.array([[np.nan, 1]], dtype=np.float32), "F"), tmp_path / "f.tif")


def test_a_float_tiff_decodes_from_disk(tmp_path):
    from edgekd.data import decode_image

    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values, "F").save(tmp_path / "depth.tif")
    image = decode_image(tmp_path / "depth.tif", Preprocessing(8, (0, 0, 0), (1, 1, 1), ("depth",)))
    assert torch.equal(image[0], torch.from_numpy(np.round(values * 255) / 255).float())


def test_one_class_is_refused_naming_the_folder_and_class(tmp_path):
    root = _make_folder(tmp_path / "pets", classes=("cat",))
    with pytest.raises(
        DataError, match=r"pets/train: one class folder \('cat'\); a classifier needs at least"
    ):
        load_data(root, 16)


def test_a_sixteen_bit_pgm_opened_as_mode_i_keeps_its_scale(tmp_path):
    from edgekd.data import decode_image

    samples = np.array([[0, 257, 128 * 257, 65535]], dtype=">u2")
    (tmp_path / "scan.pgm").write_bytes(b"P5\n4 1\n65535\n" + samples.tobytes())
    with Image.open(tmp_path / "scan.pgm") as img:
        assert img.mode == "I"
    image = decode_image(tmp_path / "scan.pgm", Preprocessing(4, (0, 0, 0), (1, 1, 1), ("scan",)))
    assert torch.equal(image[:, 0, :] * 255, torch.tensor([[0.0, 1.0, 128.0, 255.0]] * 3))


def test_a_batch_is_sliced_whole_yet_equals_the_samples_stacked_one_by_one():
    from torch.utils.data import Subset, TensorDataset

    from edgekd.data import DecodedDataset, batch_of

    rng = np.random.default_rng(0)
    decoded = DecodedDataset(
        rng.integers(0, 256, (50, 9, 7, 3), dtype=np.uint8),
        rng.integers(0, 5, 50),
        Preprocessing(9, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), tuple("abcde")),
    )
    subset = Subset(decoded, rng.permutation(50)[:30].tolist())
    tensors = TensorDataset(torch.randn(20, 3, 5, 5), torch.arange(20))
    for dataset in (decoded, subset, tensors):
        indices = torch.as_tensor(rng.permutation(len(dataset))[:11])  # unsorted, as a shuffled epoch's
        images, labels = batch_of(dataset, indices)
        assert torch.equal(images, torch.stack([dataset[int(i)][0] for i in indices]))
        assert labels.tolist() == [int(dataset[int(i)][1]) for i in indices]


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_the_batched_augmentation_gives_each_image_its_own_shifted_and_mirrored_crop(padding):
    import torch.nn.functional as F

    from edgekd.augment import Augmentation

    augmentation = Augmentation(draws=3, max_shift=2, hflip=True, padding=padding)
    images, indices, s = torch.randn(40, 3, 9, 7), torch.arange(40), 2
    dx, dy, flip = augmentation.params(indices, draw=1)
    assert 0 < flip.sum() < 40 and len(set(dx.tolist())) == 5
    padded = F.pad(images, (s, s, s, s), mode="reflect" if padding == "reflect" else "constant")
    crops = [
        image[:, s + y : s + y + 9, s + x : s + x + 7] for image, x, y in zip(padded, dx, dy, strict=True)
    ]
    expected = torch.stack(
        [crop.flip(-1) if mirrored else crop for crop, mirrored in zip(crops, flip, strict=True)]
    )
    assert torch.equal(augmentation.apply(images, indices, draw=1), expected)


def test_flips_are_on_only_for_classes_that_survive_mirroring():
    from torch.utils.data import TensorDataset

    from edgekd.augment import VIEW_RETENTION, mirror_check

    # class 1: the left half is the brighter one; mirroring swaps the halves, hence the class
    images = torch.rand(300, 3, 6, 6)
    labels = torch.randint(0, 2, (300,))
    images[labels == 1, :, :, :3] += 1.0
    images[labels == 0, :, :, 3:] += 1.0
    data = TensorDataset(images, labels)

    class Halves(torch.nn.Module):  # reads which half is brighter: right answers, but not mirror-proof
        def forward(self, x):
            return torch.stack([x[..., 3:].mean((1, 2, 3)), x[..., :3].mean((1, 2, 3))], 1)

    class Contrast(torch.nn.Module):  # reads only how unequal the halves are: the same on mirrored images
        def forward(self, x):
            gap = (x[..., :3].mean((1, 2, 3)) - x[..., 3:].mean((1, 2, 3))).abs()
            return torch.stack([gap, torch.full_like(gap, 0.5)], 1)

    asymmetric = mirror_check(Halves(), data, images=200)
    assert (asymmetric.accuracy, asymmetric.view_accuracy, asymmetric.images) == (1.0, 0.0, 200)
    assert not asymmetric.survives and "horizontal flips off" in asymmetric.sentence()
    symmetric = mirror_check(Contrast(), data)
    assert symmetric.images == 300 and symmetric.view_accuracy == symmetric.accuracy
    assert symmetric.survives and "horizontal flips on" in symmetric.sentence()
    assert 0.8 < VIEW_RETENTION < 1


def test_shifts_are_on_only_when_the_teacher_answers_the_shifted_views_right():
    from torch.utils.data import TensorDataset

    from edgekd.augment import decide_views, shift_check

    # the class is which column of a 16-px image holds a bright stripe: shifts move it to another class
    labels = torch.randint(0, 4, (200,))
    images = torch.zeros(200, 3, 16, 16)
    images[torch.arange(200), :, :, 4 * labels + 2] = 1.0
    data = TensorDataset(images, labels)

    class Column(torch.nn.Module):  # right on the originals, and reads the stripe's position
        def forward(self, x):
            return x.mean((1, 2)).reshape(len(x), 4, 4)[..., 2]

    class Count(torch.nn.Module):  # answers the same whatever the position: blind to shifts
        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3))] * 4, 1)

    moved = shift_check(Column(), data, max_shift=2)
    assert moved.accuracy == 1.0 and moved.view_accuracy < 0.5 and not moved.survives
    assert "shifts of up to 2 px off" in moved.sentence()
    blind = shift_check(Count(), data, max_shift=2)
    assert blind.view_accuracy == blind.accuracy and blind.survives

    decided = decide_views(Column(), data, hflip=None, max_shift=None, default_shift=2)
    assert decided.max_shift == 0 and len(decided.checks) == 2 and "shifts of up to 2 px off" in decided.why
    kept = decide_views(Count(), data, hflip=None, max_shift=None, default_shift=2)
    assert kept.max_shift == 2
    # what the user set is kept without a check
    asked = decide_views(Column(), data, hflip=True, max_shift=3, default_shift=2)
    assert (asked.hflip, asked.max_shift, asked.checks) == (True, 3, ())
    assert asked.why == "horizontal flips on: as asked; shifts of up to 3 px: as asked"


def test_a_per_class_subset_takes_each_classs_first_images_in_the_seeded_order():
    from edgekd.data import labels_of, with_train_subset_per_class

    digits = load_digits_splits(16)
    labels = np.asarray([int(y) for _, y in digits.train])  # read image by image: independent of labels_of
    subset = with_train_subset_per_class(digits, 20, seed=3)

    order = np.random.default_rng(3).permutation(len(labels))
    for label in range(10):
        expected = [int(i) for i in order if labels[i] == label][:20]
        assert sorted(i for i in subset.train.indices if labels[i] == label) == sorted(expected)
    assert len(subset.train) == 200
    assert (labels_of(subset.train) == labels[subset.train.indices]).all()
    assert subset.fingerprint not in (
        digits.fingerprint,
        with_train_subset_per_class(digits, 21, 3).fingerprint,
    )
    # a class with fewer images than asked for gives all it has
    assert len(with_train_subset_per_class(digits, 10_000).train) == len(labels)
