"""Streaming data: image files decoded per sample by `DataLoader` workers, for data sets too large to
decode once into the cache (`edgekd.data.decode_once`).

`fit` decodes once when the decoded splits fit the cache budget and streams otherwise
(`choose_data_mode`, `--data-mode auto|decode|stream`). The budget is `CACHE_BUDGET_FRACTION` of the
memory this machine has available and of the free disk under the cache directory, whichever is
smaller: a decoded array larger than the page cache is read back from disk on every epoch, and one
larger than the disk cannot be written at all.

Streaming trains on fresh views: each training image is decoded and passed through timm's own
training transform (`timm.data.create_transform`: RandomResizedCrop, horizontal flip, optional
RandAugment), and batches may be mixed with timm's `Mixup` (mixup, cutmix). A view is drawn from a
seed made of (run seed, epoch, image index), so a resumed run, any number of workers and any rank see
the same views; but as views are not replayed, the teacher runs live on every augmented batch (there
is no teacher-output cache). Validation and test images are the contract's view (`edgekd.data.
decode_image`: the whole image resized bilinearly to the input size, no crop), decoded by workers too,
so training, evaluation and the exported model's documented preprocessing agree.

Example:
    >>> mode = choose_data_mode("auto", decoded_bytes=2**20, budget_bytes=2**30)
    >>> mode.mode, mode.reason
    ('decode', 'the decoded images (1 MB) fit the cache budget (1,024 MB)')
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from edgekd.data import DataSplits, ImageFileDataset, as_rgb, batch_of, open_image
from edgekd.errors import ConfigError, DataError
from edgekd.preprocessing import Preprocessing

DATA_MODES = ("auto", "decode", "stream")
# The decoded splits may take this share of the memory available now and of the cache disk's free space.
CACHE_BUDGET_FRACTION = 0.5
# RandomResizedCrop's area range. timm's ImageNet default is (0.08, 1); small images (EuroSAT's 64 px)
# keep too little of themselves at 8 %, so the crops here keep at least a quarter of the image.
CROP_SCALE = (0.25, 1.0)
_MB = 1024 * 1024


@dataclass(frozen=True)
class DataMode:
    mode: str  # "decode" or "stream"
    reason: str  # one clause, for the data summary


def choose_data_mode(
    requested: str, *, decoded_bytes: int, budget_bytes: int, fresh_views: str | None = None
) -> DataMode:
    """Decode once when the decoded images fit `budget_bytes`, else stream; `requested` ("decode",
    "stream") overrides. `fresh_views` names an option that only streaming can honour (RandAugment,
    mixup), which makes auto stream and refuses decode."""
    if requested not in DATA_MODES:
        raise ConfigError(f"--data-mode {requested!r} is not one of {', '.join(DATA_MODES)}.")
    if requested == "decode" and fresh_views:
        raise ConfigError(
            f"{fresh_views} needs fresh random views of each batch, which decode-once data does not "
            "have: use --data-mode stream (or auto)."
        )
    size = f"the decoded images ({decoded_bytes / _MB:,.0f} MB)"
    budget = f"the cache budget ({budget_bytes / _MB:,.0f} MB)"
    if requested != "auto":
        return DataMode(requested, f"--data-mode {requested}")
    if fresh_views:
        return DataMode("stream", f"{fresh_views} needs fresh views")
    if decoded_bytes <= budget_bytes:
        return DataMode("decode", f"{size} fit {budget}")
    return DataMode("stream", f"{size} exceed {budget}")


def decide_data_mode(
    splits: DataSplits, requested: str, cache_dir: Path, fresh_views: str | None = None
) -> DataMode:
    """`choose_data_mode` for `splits` against this machine's `cache_budget(cache_dir)`. Data held in
    memory already (the embedded digits) is never streamed."""
    if not isinstance(splits.train, ImageFileDataset):
        if requested == "stream" or fresh_views:
            asked = "--data-mode stream" if requested == "stream" else fresh_views
            raise ConfigError(f"{asked} needs image files (--data DIR); {splits.name} is held in memory.")
        return DataMode("decode", "held in memory")
    return choose_data_mode(
        requested,
        decoded_bytes=decoded_size(splits),
        budget_bytes=cache_budget(cache_dir),
        fresh_views=fresh_views,
    )


def decoded_size(splits: DataSplits) -> int:
    """Bytes the decoded uint8 arrays of every split would take."""
    side = splits.input_size
    return sum(len(getattr(splits, name)) for name in ("train", "val", "test")) * side * side * 3


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux's MemAvailable: free plus reclaimable
    page cache); the physical memory where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cache_budget(cache_dir: Path) -> int:
    """The bytes decoded images may take: `CACHE_BUDGET_FRACTION` of the available memory and of the
    free disk under `cache_dir` (its nearest existing parent), whichever is smaller."""
    existing = Path(cache_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_disk = shutil.disk_usage(existing).free
    return int(CACHE_BUDGET_FRACTION * min(available_memory(), free_disk))


def default_workers() -> int:
    """Decoding workers: one core is left to the training step, at least one works, at most eight."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class StreamedImages(ImageFileDataset):
    """Image files decoded on access (an int index gives the contract's view), read in batches by
    `workers` DataLoader processes (`loader`)."""

    def __init__(self, samples: Sequence, preprocessing: Preprocessing, workers: int) -> None:
        super().__init__(samples, preprocessing)
        self.workers = workers


def streamed(splits: DataSplits, workers: int | None = None) -> DataSplits:
    """`splits` (image files: an ImageFolder or a saved Hugging Face dataset) read by DataLoader
    workers instead of decoded once."""
    import dataclasses

    if not isinstance(splits.train, ImageFileDataset):
        raise ConfigError(
            f"--data-mode stream needs image files (--data DIR); {splits.name} is held in memory already."
        )
    workers = default_workers() if workers is None else workers
    split = {
        name: StreamedImages(getattr(splits, name).samples, splits.preprocessing, workers)
        for name in ("train", "val", "test")
    }
    return dataclasses.replace(splits, **split)


def is_streamed(dataset: Dataset) -> bool:
    from torch.utils.data import Subset

    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, StreamedImages)


def _streamed_rows(dataset: Dataset) -> tuple[StreamedImages, list[int]]:
    """The StreamedImages under `dataset` (maybe a Subset of one) and the rows `dataset` stands for."""
    from torch.utils.data import Subset

    rows = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        rows = [int(dataset.indices[r]) for r in rows]
        dataset = dataset.dataset
    return dataset, rows


@dataclass(frozen=True)
class StreamRecipe:
    """How streamed training views are made: timm's training transform (RandomResizedCrop over
    `scale`, a flip when `hflip`, RandAugment when `rand_augment` names one, e.g. "rand-m9-mstd0.5")
    and timm's `Mixup` over the batch when `mixup` or `cutmix` (their Beta alphas) is above 0."""

    hflip: bool = True
    scale: tuple[float, float] = CROP_SCALE
    rand_augment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    seed: int = 0

    def transform(self, preprocessing: Preprocessing):
        """timm's training transform for a PIL image: crop, flip, RandAugment, to a normalised tensor."""
        from timm.data import create_transform

        return create_transform(
            preprocessing.input_size,
            is_training=True,
            scale=self.scale,
            hflip=0.5 if self.hflip else 0.0,
            color_jitter=None,  # colour changes are RandAugment's, when asked for
            auto_augment=self.rand_augment,
            interpolation="bilinear",  # the contract's resize (edgekd.data.decode_image)
            mean=preprocessing.mean,
            std=preprocessing.std,
        )

    def mixer(self, num_classes: int):
        """timm's Mixup for these alphas (labels then become class probabilities), or None."""
        if not (self.mixup or self.cutmix):
            return None
        from timm.data import Mixup

        # label smoothing is the loss's (--label-smoothing), not applied twice here
        return Mixup(
            mixup_alpha=self.mixup, cutmix_alpha=self.cutmix, label_smoothing=0.0, num_classes=num_classes
        )


class TrainingViews(Dataset):
    """Fresh training views of streamed images, keyed by (row, epoch): the view's random draws are
    seeded from (recipe seed, epoch, row), so every worker, rank and resumed run makes the same one."""

    def __init__(self, images: StreamedImages, recipe: StreamRecipe) -> None:
        self.images, self.recipe = images, recipe
        self.transform = recipe.transform(images.preprocessing)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        row, epoch = key
        source, label = self.images.samples[row]
        try:
            with open_image(source) as img:
                rgb = as_rgb(img, source)
                rgb.load()
        except DataError:
            raise
        except Exception as e:  # PIL raises many types for a bad file
            raise DataError(f"{source}: cannot be decoded as an image ({e}). Remove or replace it.") from e
        with _seeded_view(self.recipe.seed, epoch, row):
            return self.transform(rgb), label


@contextlib.contextmanager
def _seeded_view(seed: int, epoch: int, row: int):
    """The generators timm's transforms draw from (Python's, numpy's, torch's) seeded for one view,
    and put back afterwards: without workers the views are made in the training process, whose own
    draws (mixup, dropout) must not depend on them."""
    digest = hashlib.blake2b(f"{seed}|{epoch}|{row}".encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little") & 0x7FFF_FFFF
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(value)
    np.random.seed(value)
    torch.default_generator.manual_seed(value)  # the CPU generator only, which is put back below
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class EpochOrder(Sampler):
    """The (row, epoch) keys of the current epoch, set by the trainer before each pass, so one
    DataLoader keeps its workers for the whole training (`persistent_workers`)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def set(self, rows: Sequence[int], epoch: int) -> None:
        self.keys = [(int(r), epoch) for r in rows]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def training_loader(
    dataset: Dataset, recipe: StreamRecipe, order: EpochOrder, batch_size: int, pin_memory: bool
) -> DataLoader:
    """The DataLoader of a streamed training set: workers decode and augment each image, keep
    running across epochs and prefetch four batches each; `order` says which rows each epoch takes."""
    images, rows = _streamed_rows(dataset)
    views: Dataset = TrainingViews(images, recipe)
    if rows != list(range(len(images))):  # a Subset: the trainer's row r is the images' rows[r]
        views = _Rows(views, rows)
    workers = images.workers
    return DataLoader(
        views,
        batch_size=batch_size,
        sampler=order,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=pin_memory,
    )


class _Rows(Dataset):
    def __init__(self, views: TrainingViews, rows: list[int]) -> None:
        self.views, self.rows = views, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]):
        row, epoch = key
        return self.views[self.rows[row], epoch]


class TrainingBatches:
    """An epoch's batches of (indices, images, labels) in the trainer's order: decoded data gathered
    from the arrays and shifted/flipped as the replayed `augmentation` says; streamed data (`stream`
    set) decoded and augmented by the DataLoader's workers, which live as long as the training, then
    mixed by timm's Mixup when the recipe asks."""

    def __init__(self, train: Dataset, batch_size: int, augmentation, stream: StreamRecipe | None,
                 num_classes: int, pin_memory: bool) -> None:  # fmt: skip
        self.train, self.batch_size, self.augmentation, self.stream = train, batch_size, augmentation, stream
        if stream is not None:
            self.order = EpochOrder()
            self.loader = training_loader(train, stream, self.order, batch_size, pin_memory)
            self.mixer = stream.mixer(num_classes)

    def epoch(self, mine: torch.Tensor, epoch: int, draw: int) -> Iterator:
        if self.stream is None:
            for indices in mine.split(self.batch_size):
                x, y = batch_of(self.train, indices)
                yield indices, (self.augmentation.apply(x, indices, draw) if self.augmentation else x), y
            return
        self.order.set(mine.tolist(), epoch)
        try:
            for indices, (x, y) in zip(mine.split(self.batch_size), self.loader, strict=True):
                if self.mixer is not None and len(y) % 2 == 0:  # timm mixes pairs: an odd last batch is not
                    x, y = self.mixer(x, y)
                yield indices, x, y
        except DataError as e:  # from a worker: its message again, which names the file
            raise worker_error(e) from None


def evaluation_loader(dataset: Dataset, batch_size: int, pin_memory: bool) -> DataLoader:
    """Batches of `dataset` in order; a streamed one decoded by its workers."""
    workers = _streamed_rows(dataset)[0].workers if is_streamed(dataset) else 0
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory
    )


def worker_error(error: Exception) -> Exception:
    """A DataError raised in a DataLoader worker arrives wrapped in the worker's traceback; this is
    the original one-line message again (the file it names), or `error` as it is."""
    if isinstance(error, DataError):
        last = str(error).strip().splitlines()[-1]
        prefix = f"{DataError.__module__}.{DataError.__name__}: "
        if last.startswith(prefix):
            return DataError(last[len(prefix) :])
    return error
