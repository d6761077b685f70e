"""Where `--data` comes from: the embedded digits (no `--data`), an ImageFolder directory, or a Hugging
Face `datasets` data set saved with `save_to_disk` (a `Dataset` or a `DatasetDict`), recognised by the
files `save_to_disk` writes (`dataset_info.json` and `state.json`, or `dataset_dict.json`).

A saved data set needs one image column (`datasets.Image`) and one `ClassLabel` column; the class
names are the ClassLabel's, in its order. A `DatasetDict`'s `train` split is required, its
`validation` (or `val`, `valid`) and `test` splits are used when present, and what is missing is cut
from train as for an ImageFolder (15 % each, per class, fixed seed). Images are read from the Arrow
files row by row, undecoded until a sample is needed, so decode-once and streaming read them alike.

Example:
    >>> scan_data(None).name
    'digits'
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLIT_SEED,
    VAL_NAMES,
    DataSplits,
    ImageFileDataset,
    ScannedData,
    check_image,
    scan_digits,
    scan_image_folder,
    stratified_split,
)
from edgekd.data_summary import NativeSizes
from edgekd.errors import DataError
from edgekd.preprocessing import Preprocessing


def scan_data(data: Path | None) -> ScannedData:
    """The embedded digits when `data` is None, a saved Hugging Face data set when `data` holds one,
    else an ImageFolder directory, scanned (`ScannedData`)."""
    if data is None:
        return scan_digits()
    return scan_saved_dataset(data) if is_saved_dataset(data) else scan_image_folder(data)


def load_data(data: Path | None, input_size: int) -> DataSplits:
    """`scan_data(data)`'s splits at `input_size` (fit decides a default: `fit_config.decide_input_size`)."""
    return scan_data(data).splits(input_size)


def is_saved_dataset(root: Path) -> bool:
    """Whether `root` is what `datasets`' `save_to_disk` writes."""
    root = Path(root)
    return (root / "dataset_dict.json").is_file() or (
        (root / "dataset_info.json").is_file() and (root / "state.json").is_file()
    )


@dataclass(frozen=True)
class DatasetRow:
    """One image of a saved data set: its directory, split (None for a lone `Dataset`), row and
    image column. Picklable, so DataLoader workers open it themselves."""

    root: Path
    split: str | None
    row: int
    column: str

    def open_image(self):
        from PIL import Image

        stored = _undecoded(str(self.root), self.split, self.column)[self.row][self.column]
        if stored.get("bytes") is not None:
            return Image.open(io.BytesIO(stored["bytes"]))
        if stored.get("path"):
            return Image.open(stored["path"])
        raise DataError(f"{self}: the row holds no image.")

    def __str__(self) -> str:
        where = f"{self.root}[{self.split}]" if self.split is not None else str(self.root)
        return f"{where} row {self.row}"


@functools.lru_cache(maxsize=8)
def _undecoded(root: str, split: str | None, column: str):
    """The split's Arrow table with `column` left as stored bytes (one load per process)."""
    import datasets

    table = _load(Path(root))
    table = table[split] if split is not None else table
    return table.cast_column(column, datasets.Image(decode=False))


def _load(root: Path):
    try:
        import datasets
    except ImportError as e:
        raise DataError(
            f"{root}: a saved Hugging Face data set; reading it needs the `datasets` package "
            "(pip install 'edgekd[hf]')."
        ) from e
    try:
        return datasets.load_from_disk(str(root))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, arrow errors ...
        raise DataError(f"{root}: cannot be loaded with datasets.load_from_disk ({e}).") from e


def _columns(root: Path, split: str | None, features) -> tuple[str, str, tuple[str, ...]]:
    """The image column, the label column and the class names of a split's features."""
    import datasets

    images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
    labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    where = f"{root}[{split}]" if split is not None else str(root)
    if len(images) != 1 or len(labels) != 1:
        found = ", ".join(f"{n}: {type(f).__name__}" for n, f in features.items())
        raise DataError(f"{where}: needs exactly one Image column and one ClassLabel column; it has {found}.")
    return images[0], labels[0], tuple(features[labels[0]].names)


def scan_saved_dataset(root: Path, seed: int = SPLIT_SEED) -> ScannedData:
    """A data set saved by `datasets`' `save_to_disk`, scanned and split as an ImageFolder is: every
    image checked and its size read from its header."""
    import datasets

    root = Path(root)
    loaded = _load(root)
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{root}: a DatasetDict without a train split (splits: {', '.join(loaded)}).")
        names = {"train": "train"}
        val = [n for n in VAL_NAMES if n in loaded]
        if val:
            names["val"] = val[0]
        if "test" in loaded:
            names["test"] = "test"
        tables = {ours: (theirs, loaded[theirs]) for ours, theirs in names.items()}
    else:
        tables = {"train": (None, loaded)}
    _, label_column, classes = _columns(root, tables["train"][0], tables["train"][1].features)
    if len(classes) < 2:
        raise DataError(
            f"{root}: the ClassLabel {label_column!r} has {len(classes)} class; a classifier needs two."
        )
    found: dict[str, list[tuple[DatasetRow, int]]] = {}
    identity = []
    sizes: dict[tuple[int, int], int] = {}
    for ours, (split, table) in tables.items():
        columns = _columns(root, split, table.features)
        if columns[2] != classes:
            raise DataError(f"{root}[{split}]: class names differ from train's ({list(columns[2])[:10]}).")
        labels = table[columns[1]]
        found[ours] = [(DatasetRow(root, split, i, columns[0]), int(y)) for i, y in enumerate(labels)]
        identity.append(f"{ours}|{split}|{table._fingerprint}|{len(table)}|{columns}")
        for row, _ in found[ours]:
            size = check_image(row)
            sizes[size] = sizes.get(size, 0) + 1
    carve = (0.0 if "val" in found else 0.15, 0.0 if "test" in found else 0.15)
    train = found["train"]
    train_idx, val_idx, test_idx = stratified_split(np.array([y for _, y in train]), carve, seed)
    chosen = {
        "train": [train[i] for i in train_idx],
        "val": found.get("val") or [train[i] for i in val_idx],
        "test": found.get("test") or [train[i] for i in test_idx],
    }
    if not chosen["val"] or not chosen["test"]:
        raise DataError(f"{root}: too few images to cut validation and test splits from train.")
    native = NativeSizes(sizes)

    def make(input_size: int) -> DataSplits:
        digest = hashlib.sha256(json.dumps([input_size, seed, IMAGENET_MEAN, IMAGENET_STD]).encode())
        for line in identity:
            digest.update(line.encode())
        preprocessing = Preprocessing(input_size, IMAGENET_MEAN, IMAGENET_STD, classes)
        split = {name: ImageFileDataset(samples, preprocessing) for name, samples in chosen.items()}
        return DataSplits(
            root.name, **split, preprocessing=preprocessing, fingerprint=digest.hexdigest(), native=native
        )

    return ScannedData(root.name, {n: len(c) for n, c in chosen.items()}, classes, native, make)
