"""Datasets: the embedded digits default and ImageFolder directories, split and normalised.

Example:
    >>> from edgekd.data import load_digits_splits
    >>> splits = load_digits_splits(input_size=32)
    >>> splits.num_classes, splits.train[0][0].shape
    (10, torch.Size([3, 32, 32]))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from edgekd.data_summary import NativeSizes
from edgekd.errors import DataError
from edgekd.preprocessing import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# timm's ImageNet defaults (timm.data.IMAGENET_DEFAULT_MEAN/STD): what pretrained teachers expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_SEED = 0
VAL_NAMES = ("val", "valid", "validation")


@dataclass(frozen=True)
class DataSplits:
    """Train/val/test datasets of (CHW float tensor, label) and the preprocessing they share."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    preprocessing: Preprocessing
    fingerprint: str  # changes when the images, the split or the preprocessing change
    native: NativeSizes | None = None  # the images' stored sizes, before resizing to input_size

    # Read by every stage that builds or times a model; the rest of the contract is read through
    # `preprocessing`.
    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    @property
    def num_classes(self) -> int:
        return self.preprocessing.num_classes


@dataclass(frozen=True)
class ScannedData:
    """A data set looked over before its size is decided: its name, images per split, classes and
    native sizes; `splits(input_size)` makes the `DataSplits` (`scan_data`)."""

    name: str
    counts: dict[str, int]  # train/val/test images, after the fixed split
    classes: tuple[str, ...]
    native: NativeSizes
    make: Callable[[int], DataSplits]

    def splits(self, input_size: int) -> DataSplits:
        return self.make(input_size)


def stratified_split(labels: np.ndarray, fractions: tuple[float, float], seed: int):
    """Indices for train/val/test: per class, shuffle with `seed`, cut val and test fractions off."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = round(len(idx) * fractions[0]), round(len(idx) * fractions[1])
        parts[1].extend(idx[:n_val])
        parts[2].extend(idx[n_val : n_val + n_test])
        parts[0].extend(idx[n_val + n_test :])
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)


@dataclass(frozen=True)
class _Digits:
    images: np.ndarray  # (1797, 8, 8) float64, 0-16, as scikit-learn's load_digits gives them
    target: np.ndarray
    target_names: np.ndarray


def _load_digits() -> _Digits:
    """scikit-learn's bundled digits, read from the CSV file its `load_digits` reads, found without
    importing scikit-learn: the import is a second of every `make fit`, and only this file is used.
    Where a scikit-learn lays its files out otherwise, its own loader reads them."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next(
        (p for p in (Path(r) / "datasets" / "data" / "digits.csv.gz" for r in roots) if p.is_file()), None
    )
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return _Digits(bunch.images, bunch.target, bunch.target_names)
    table = np.loadtxt(path, delimiter=",")
    return _Digits(table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int), np.arange(10))


def load_digits_splits(input_size: int = 32, seed: int = SPLIT_SEED) -> DataSplits:
    """scikit-learn's bundled 8×8 digits, resized to `input_size`², grey replicated to 3 channels,
    split 70/15/15 per class with a fixed seed."""
    digits = _load_digits()
    pixels = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    pixels = torch.nn.functional.interpolate(
        pixels, size=(input_size, input_size), mode="bilinear", align_corners=False
    ).clamp(0, 1)
    preprocessing = Preprocessing(
        input_size, IMAGENET_MEAN, IMAGENET_STD, tuple(str(c) for c in digits.target_names)
    )
    images = preprocessing.normalise(pixels.expand(-1, 3, -1, -1)).contiguous()
    labels = digits.target.astype(np.int64)
    train, val, test = stratified_split(labels, (0.15, 0.15), seed)
    y = torch.from_numpy(labels)
    digest = hashlib.sha256(digits.images.tobytes() + labels.tobytes())
    digest.update(json.dumps(["digits", input_size, seed, IMAGENET_MEAN, IMAGENET_STD]).encode())
    return DataSplits(
        name="digits",
        train=TensorDataset(images[train], y[train]),
        val=TensorDataset(images[val], y[val]),
        test=TensorDataset(images[test], y[test]),
        preprocessing=preprocessing,
        fingerprint=digest.hexdigest(),
        native=NativeSizes({(8, 8): len(labels)}),
    )


def scan_digits(seed: int = SPLIT_SEED) -> ScannedData:
    """The embedded digits as `scan_data` sees them: 8×8 images, split as `load_digits_splits` does."""
    digits = _load_digits()
    parts = stratified_split(digits.target.astype(np.int64), (0.15, 0.15), seed)
    return ScannedData(
        name="digits",
        counts=dict(zip(("train", "val", "test"), (len(p) for p in parts), strict=True)),
        classes=tuple(str(c) for c in digits.target_names),
        native=NativeSizes({(8, 8): len(digits.target)}),
        make=lambda input_size: load_digits_splits(input_size, seed),
    )


class ImageFileDataset(Dataset):
    """Images decoded from files on each access; a file that fails to decode is named in the error."""

    def __init__(self, samples: Sequence[tuple[Path, int]], preprocessing: Preprocessing) -> None:
        self.samples = list(samples)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:  # read without decoding an image (the search's chance level)
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return decode_image(path, self.preprocessing), label


def decode_image(path: Path, preprocessing: Preprocessing) -> torch.Tensor:
    """The image at `path` resized to the input size, as a normalised CHW tensor."""
    from PIL import Image

    input_size = preprocessing.input_size
    try:
        with open_image(path) as img:
            img = as_rgb(img, path).resize((input_size, input_size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for a bad file
        raise DataError(f"{path}: cannot be decoded as an image ({e}). Remove or replace it.") from e
    return preprocessing.normalise(torch.from_numpy(array).permute(2, 0, 1))


def open_image(source):
    """`source` opened as a PIL image: a file path, or a row of a saved data set (an object with
    `open_image()`, `edgekd.sources.DatasetRow`), named by `str(source)` in errors."""
    from PIL import Image

    return Image.open(source) if isinstance(source, str | Path) else source.open_image()


# Modes PIL's convert("RGB") maps faithfully: 8-bit grey, colour, palette, CMYK, YCbCr, LAB, HSV, and
# the alpha variants, which are first composited on black (below).
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_ALPHA_MODES = ("LA", "PA", "RGBA", "RGBa")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_READABLE_MODES = (*_EIGHT_BIT_MODES, *_SIXTEEN_BIT_MODES, "I", "F")


def as_rgb(img, path: Path):
    """`img` as an 8-bit RGB PIL image, by the value range its mode stands for. PIL's own
    convert("RGB") clips wider modes at 255, which turns a 16-bit PNG white."""
    from PIL import Image

    mode = img.mode
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        # convert("RGB") would keep whatever colour a transparent pixel happens to store; composited
        # on black, every transparent pixel looks the same, and the usual stored (0, 0, 0, 0) is unchanged.
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if mode in _EIGHT_BIT_MODES:
        return img.convert("RGB")
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img).astype(np.int64)
        if mode != "I" or (values.min() >= 0 and values.max() <= 65535):
            # 16-bit samples span 0-65535 (PNG, TIFF); PIL opens a 16-bit PGM as "I", rescaled to
            # 0-65535 whatever its maxval. The top 8 bits keep the scale: 65535 -> 255, 257 * k -> k,
            # as an 8-bit export would.
            grey = (values >> 8).astype(np.uint8)
        else:
            # 32-bit integers (negative or past 16 bits) have no fixed range: stretch min..max to
            # 0..255, which is what a viewer shows for such a file.
            grey = _stretch(values.astype(np.float64))
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(
                f"{path}: float image (mode F) holds NaN or infinite pixels. Remove or replace it."
            )
        if values.min() >= 0 and values.max() <= 1:
            grey = np.round(values * 255).astype(np.uint8)  # the usual convention for float images
        else:
            grey = _stretch(values)
        return Image.fromarray(grey, "L").convert("RGB")
    raise DataError(_mode_refusal(path, mode))


def _mode_refusal(path: Path, mode: str) -> str:
    return (
        f"{path}: image mode {mode!r} cannot be read as colour; save it as 8- or 16-bit grey or RGB "
        "(PNG, JPEG)."
    )


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _scan_split(split_dir: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir}: no class subfolders; expected {split_dir}/<class>/<image>.")
    found = {}
    for class_dir in classes:
        images = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise DataError(f"{class_dir}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        found[class_dir.name] = images
    return found


def check_image(path) -> tuple[int, int]:
    """`path` (or a saved data set's row) checked as an image edgekd can read; its (width, height)
    from the header."""
    try:
        with open_image(path) as img:
            mode, size = img.mode, img.size
            img.verify()
    except Exception as e:
        raise DataError(f"{path}: not a readable image ({e}). Remove or replace it.") from e
    if mode not in _READABLE_MODES:  # refused here, when the folder is scanned, not mid-run
        raise DataError(_mode_refusal(path, mode))
    return size


def load_image_folder(root: Path, input_size: int, seed: int = SPLIT_SEED) -> DataSplits:
    """`root/train/<class>/*.jpg` with optional `val/` (or `valid/`) and `test/`. Missing val or test
    splits are cut from train (15 % each, per class, fixed seed). Every file is checked up front."""
    return scan_image_folder(root, seed).splits(input_size)


def scan_image_folder(root: Path, seed: int = SPLIT_SEED) -> ScannedData:
    """The folder of `load_image_folder` scanned and split, every file checked and its size read from
    its header, before an input size is chosen."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data directory does not exist.")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root}: expected a train/ folder with one subfolder per class.")
    splits = {"train": _scan_split(train_dir)}
    for name, options in (("val", VAL_NAMES), ("test", ("test",))):
        present = [root / o for o in options if (root / o).is_dir()]
        if present:
            splits[name] = _scan_split(present[0])
    classes = tuple(splits["train"])
    if len(classes) < 2:
        raise DataError(
            f"{train_dir}: one class folder ({classes[0]!r}); a classifier needs at least two, each a "
            f"subfolder of {train_dir} holding its images."
        )
    sizes: dict[tuple[int, int], int] = {}
    for name, found in splits.items():
        if tuple(found) != classes:
            missing = sorted(set(classes) - set(found))
            extra = sorted(set(found) - set(classes))
            raise DataError(
                f"{root / name}: class folders differ from train/ (missing {missing}, extra {extra})."
            )
        for images in found.values():
            for path in images:
                size = check_image(path)
                sizes[size] = sizes.get(size, 0) + 1

    def samples(found: dict[str, list[Path]]) -> list[tuple[Path, int]]:
        return [(p, i) for i, c in enumerate(classes) for p in found[c]]

    train_samples = samples(splits["train"])
    carve = (0.15 if "val" not in splits else 0.0, 0.15 if "test" not in splits else 0.0)
    labels = np.array([label for _, label in train_samples])
    train_idx, val_idx, test_idx = stratified_split(labels, carve, seed)
    chosen = {
        "train": [train_samples[i] for i in train_idx],
        "val": samples(splits["val"]) if "val" in splits else [train_samples[i] for i in val_idx],
        "test": samples(splits["test"]) if "test" in splits else [train_samples[i] for i in test_idx],
    }
    native = NativeSizes(sizes)

    def make(input_size: int) -> DataSplits:
        digest = hashlib.sha256(json.dumps([input_size, seed, IMAGENET_MEAN, IMAGENET_STD]).encode())
        for name in ("train", "val", "test"):
            for path, label in chosen[name]:
                stat = path.stat()
                digest.update(
                    f"{name}|{path.relative_to(root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}".encode()
                )
        preprocessing = Preprocessing(input_size, IMAGENET_MEAN, IMAGENET_STD, classes)

        def dataset(name: str) -> ImageFileDataset:
            return ImageFileDataset(chosen[name], preprocessing)

        return DataSplits(
            name=root.name,
            train=dataset("train"),
            val=dataset("val"),
            test=dataset("test"),
            preprocessing=preprocessing,
            fingerprint=digest.hexdigest(),
            native=native,
        )

    return ScannedData(root.name, {n: len(c) for n, c in chosen.items()}, classes, native, make)


class DecodedDataset(Dataset):
    """Images decoded once into a uint8 array (N, H, W, 3), normalised on access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, preprocessing: Preprocessing) -> None:
        self.images, self.labels = images, labels
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.normalised(np.array(self.images[index])[None])[0], int(self.labels[index])

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at `rows`, read from the array in one go."""
        # numpy's fancy indexing of a memory map wants its rows in order; undo the sort afterwards
        order = np.argsort(rows, kind="stable")
        images = np.empty((len(rows), *self.images.shape[1:]), self.images.dtype)
        images[order] = self.images[rows[order]]
        return self.normalised(images), torch.from_numpy(np.asarray(self.labels)[rows].astype(np.int64))

    def normalised(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images (N, H, W, 3) as a normalised float batch (N, 3, H, W)."""
        return self.preprocessing.normalise(torch.from_numpy(images).permute(0, 3, 1, 2))


def decode_once(splits: DataSplits, cache_root: Path, observer=None) -> DataSplits:
    """The same splits with every image decoded once into `cache_root/decoded/<fingerprint>/` (uint8,
    memory-mapped on later runs): an epoch then costs no JPEG decoding. Only ImageFolder splits are
    decoded; others are returned as they are. A cached array that is cut short or does not match the
    split is moved aside with a warning and decoded again."""
    from edgekd._io import full_disk_as_error, write_with
    from edgekd.progress import SilentObserver

    if not isinstance(splits.train, ImageFileDataset):
        return splits
    observer = observer or SilentObserver()
    directory = Path(cache_root) / "decoded" / splits.fingerprint[:24]
    decoded = {}
    for name in ("train", "val", "test"):
        dataset: ImageFileDataset = getattr(splits, name)
        images_path, labels_path = directory / f"{name}-images.npy", directory / f"{name}-labels.npy"
        labels = np.array([label for _, label in dataset.samples], dtype=np.int64)
        shape = (len(dataset), *splits.preprocessing.with_layout("NHWC").input_shape[1:])
        images = _cached_array(images_path, np.uint8, shape)
        if images is None or _cached_array(labels_path, np.int64, labels.shape, equal_to=labels) is None:
            images = _decode_into_cache(dataset, images_path, shape, observer, f"decoding {name} images")
            with full_disk_as_error(labels_path, labels.nbytes):
                write_with(labels_path, lambda tmp, labels=labels: _save_npy(tmp, labels))
        decoded[name] = DecodedDataset(images, labels, splits.preprocessing)
    return dataclasses.replace(splits, **decoded)


def decoded_images(splits: DataSplits, cache_root: Path) -> int:
    """How many images `decode_once` would decode: those of the splits whose arrays are not in the
    cache yet (0 for data that is not decoded at all). For the fit's plan: no array is read."""
    if not isinstance(splits.train, ImageFileDataset):
        return 0
    directory = Path(cache_root) / "decoded" / splits.fingerprint[:24]
    return sum(
        len(getattr(splits, name))
        for name in ("train", "val", "test")
        if not (directory / f"{name}-labels.npy").exists()  # written after its images
    )


def _cached_array(path: Path, dtype, shape: tuple[int, ...], equal_to: np.ndarray | None = None):
    """The array cached at `path`, memory-mapped, or None when there is none; one that cannot be read,
    has another dtype or shape, or differs from `equal_to` is moved aside (and None returned)."""
    from edgekd._io import move_aside

    if not path.exists():
        return None
    try:
        array = np.load(path, mmap_mode="r")  # allow_pickle stays False: an object array is refused
    except (OSError, ValueError, EOFError) as e:
        move_aside(path, f"decoded-image cache cannot be read ({type(e).__name__}: {e})")
        return None
    if array.dtype != dtype or array.shape != shape or (equal_to is not None and (array != equal_to).any()):
        found, expected = f"{array.dtype} {array.shape}", f"{np.dtype(dtype)} {shape}"
        move_aside(path, f"decoded-image cache does not match the split ({found}, expected {expected})")
        return None
    return array


def _decode_into_cache(dataset: ImageFileDataset, path: Path, shape, observer, description: str):
    """Decode every image of `dataset` straight into a memory-mapped .npy at a temporary name whose
    space is reserved first (a full disk fails as `DiskFullError`, not as a SIGBUS mid-write), renamed
    to `path` only once every image is in."""
    from numpy.lib.format import open_memmap

    from edgekd._io import atomic_path, full_disk_as_error, reserve_space

    with full_disk_as_error(path, int(np.prod(shape))), atomic_path(path) as tmp:
        images = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        with open(tmp, "r+b") as f:
            reserve_space(f.fileno(), tmp.stat().st_size, path)
        task = observer.task(description, total=len(dataset))
        for i, (image_path, _) in enumerate(dataset.samples):
            images[i] = _decode_uint8(image_path, shape[1])
            task.advance(1)
        task.close()
        images.flush()
        del images
    return np.load(path, mmap_mode="r")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # through a handle: np.save would append ".npy" to the temporary name
        np.save(f, array)


def _decode_uint8(path: Path, input_size: int) -> np.ndarray:
    from PIL import Image

    try:
        with open_image(path) as img:
            return np.asarray(as_rgb(img, path).resize((input_size, input_size), Image.Resampling.BILINEAR))
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for a bad file
        raise DataError(f"{path}: cannot be decoded as an image ({e}). Remove or replace it.") from e


def stack(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the first `limit`) samples of a dataset as one image batch and one label vector."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors
        return images[:n], labels[:n]
    return batch_of(dataset, torch.arange(n))


def batch_of(dataset: Dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples at `indices` as one image batch and one label vector, the same values as stacking
    `dataset[i]` one by one. Decoded, tensor and subset datasets are sliced as whole arrays: building
    a batch image by image cost the trainer a third of a small student's epoch."""
    from torch.utils.data import Subset

    rows = np.asarray(indices, dtype=np.int64)
    if isinstance(dataset, Subset):
        return batch_of(dataset.dataset, torch.as_tensor(np.asarray(dataset.indices)[rows]))
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors
        picked = torch.from_numpy(rows)
        return images[picked], labels[picked]
    if isinstance(dataset, DecodedDataset):
        return dataset.batch(rows)
    samples = [dataset[int(i)] for i in rows]
    return torch.stack([x for x, _ in samples]), torch.as_tensor([int(y) for _, y in samples])


def with_train_subset(splits: DataSplits, count: int, seed: int = 0) -> DataSplits:
    """The same splits with `count` training images drawn at random (seeded; random because an image
    folder is ordered by class), and a fingerprint that says so: caches keyed on it (decoded images,
    teacher outputs) never mix the subset with the whole."""
    import dataclasses
    import hashlib

    from torch.utils.data import Subset

    if count >= len(splits.train):
        return splits
    chosen = _seeded_choice(len(splits.train), count, seed)
    fingerprint = hashlib.sha256(f"{splits.fingerprint}|{count} random train images".encode()).hexdigest()
    return dataclasses.replace(splits, train=Subset(splits.train, chosen.tolist()), fingerprint=fingerprint)


def with_train_subset_per_class(splits: DataSplits, per_class: int, seed: int = 0) -> DataSplits:
    """The same splits with `per_class` training images of each class (all of a class that has fewer):
    the first of each class in the seeded order `with_train_subset` draws from, so a per-class subset
    lies at the front of the same order as a random subset of the same seed."""
    import dataclasses
    import hashlib

    from torch.utils.data import Subset

    labels = labels_of(splits.train)
    order = np.random.default_rng(seed).permutation(len(labels))
    rank_in_class = np.zeros(len(order), dtype=np.int64)
    seen: dict[int, int] = {}
    for position, index in enumerate(order):
        label = int(labels[index])
        rank_in_class[position] = seen.get(label, 0)
        seen[label] = rank_in_class[position] + 1
    chosen = order[rank_in_class < per_class]
    fingerprint = hashlib.sha256(
        f"{splits.fingerprint}|{per_class} train images per class".encode()
    ).hexdigest()
    return dataclasses.replace(splits, train=Subset(splits.train, chosen.tolist()), fingerprint=fingerprint)


def labels_of(dataset: Dataset) -> np.ndarray:
    """Every label of `dataset`, read without decoding an image where the dataset holds them apart."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    labels = getattr(dataset, "labels", None)  # image-file and decoded splits hold them apart
    return np.asarray(stack(dataset)[1] if labels is None else labels, dtype=np.int64)


def _seeded_choice(population: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct indices below `population` (all of them if fewer), in a seeded random order."""
    return np.random.default_rng(seed).permutation(population)[: min(count, population)]


def representative_images(dataset: Dataset, count: int, seed: int = 0) -> torch.Tensor:
    """`count` images drawn at random (seeded) from `dataset`, stacked, for int8 calibration."""
    return stack_sample(dataset, count, seed)[0]


def stack_sample(dataset: Dataset, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` samples drawn at random (seeded) from `dataset` as an image batch and a label vector.
    Random, not the first `count`: an image folder is ordered by class, so a prefix would be one class."""
    images, labels = batch_of(dataset, torch.from_numpy(np.sort(_seeded_choice(len(dataset), count, seed))))
    return images, labels.long()
