"""Teacher outputs computed once per (sample, augmentation draw) and memory-mapped from disk.

Offline distillation runs a frozen teacher over the same views epoch after epoch. This cache stores
its logits in fp16 in a memory-mapped array of shape (draws, samples, classes) under a key that
hashes the teacher's weights, the data's fingerprint and the augmentation, so it is reused across
runs and search trials with the same teacher and data, and never reused when any of them changes.

An entry's files are created with their space reserved, in a temporary folder renamed into place, so
a full disk is an error naming the path, never a crash or half an entry; an entry whose files are
missing, cut short or keyed otherwise is moved aside with a warning and rebuilt. A view's logits are
written first and its "filled" flag after, each flushed, so an interrupted fill leaves at worst a few
views unflagged; they are recomputed on the next run. Processes that share the cache (DDP ranks)
write disjoint views and need no lock.

Top-k storage (`top_k=k`) keeps the k largest logits and the log-sum-exp of all of them: the k
probabilities of the teacher's softmax are exact and the remaining mass is spread evenly over the
other classes (Distillation with sparse logits; exact at T = 1, an approximation at other
temperatures). It is meant for teachers with thousands of classes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from edgekd._io import full_disk_as_error, move_aside, reserve_space, write_json_atomic
from edgekd.augment import Augmentation
from edgekd.data import batch_of
from edgekd.distill.accelerator import Accelerator, module_device
from edgekd.progress import Observer, SilentObserver

log = logging.getLogger(__name__)
FORMAT = "edgekd-teacher-outputs/1"


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, shapes, dtypes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    teacher: str  # weights digest
    data: str  # DataSplits.fingerprint
    augmentation: str
    samples: int
    classes: int
    draws: int
    top_k: int | None

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


class TeacherOutputCache:
    def __init__(self, directory: Path, key: CacheKey) -> None:
        self.directory, self.key = Path(directory), key
        reason = self._unusable_because() if self.directory.exists() else None
        if reason:
            move_aside(self.directory, reason)
        if self.directory.exists():
            self._reserve_existing()
        else:
            self._create()
        self._values, self._indices, self._logsumexp, self._filled = (
            np.memmap(self.directory / name, dtype=dtype, mode="r+", shape=shape) if shape else None
            for name, (dtype, shape) in self._arrays().items()
        )

    def _arrays(self) -> dict[str, tuple[type, tuple[int, ...] | None]]:
        """File name → (dtype, shape) of every array of the entry; shape None: not stored."""
        key = self.key
        views = (key.draws, key.samples)
        wide = (*views, key.top_k or key.classes)
        return {
            "values.f16": (np.float16, wide),
            "indices.i32": (np.int32, wide if key.top_k else None),
            "logsumexp.f32": (np.float32, views if key.top_k else None),
            "filled.u8": (np.uint8, views),
        }

    def _unusable_because(self) -> str | None:
        """Why the entry on disk cannot be trusted, or None when it can."""
        try:
            meta = json.loads((self.directory / "meta.json").read_text())
        except (OSError, ValueError) as e:
            return f"teacher-output cache without a readable meta.json ({type(e).__name__})"
        if meta.get("format") != FORMAT or meta.get("key") != asdict(self.key):
            return "teacher-output cache written for another format or key"
        for name, (dtype, shape) in self._arrays().items():
            if shape is None:
                continue
            path = self.directory / name
            expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
            if not path.is_file() or path.stat().st_size != expected:
                return f"teacher-output cache with {name} missing or truncated (expected {expected} bytes)"
        return None

    def _reserve_existing(self) -> None:
        """Reserve the blocks of an entry made sparse (by an older edgekd, or copied), so that filling
        it cannot SIGBUS either; a no-op for blocks already allocated, and it never changes data."""
        for name, (_, shape) in self._arrays().items():
            if shape is not None:
                path = self.directory / name
                with open(path, "r+b") as f:
                    reserve_space(f.fileno(), path.stat().st_size, path)

    def _create(self) -> None:
        """Build the entry's files zero-filled, with their blocks reserved (a full disk fails here with
        `DiskFullError`, not as a SIGBUS while the memory maps are written), in a temporary folder that
        is renamed into place once complete: a reader never finds half an entry."""
        parent = self.directory.parent
        arrays = {
            name: int(np.prod(shape)) * np.dtype(dtype).itemsize
            for name, (dtype, shape) in self._arrays().items()
            if shape is not None
        }
        with full_disk_as_error(self.directory, sum(arrays.values())):
            parent.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.", suffix=".tmp", dir=parent))
        try:
            for name, size in arrays.items():
                with open(building / name, "wb") as f:
                    reserve_space(f.fileno(), size, self.directory / name)
            with full_disk_as_error(self.directory / "meta.json"):
                write_json_atomic(building / "meta.json", {"format": FORMAT, "key": asdict(self.key)})
            try:
                os.rename(building, self.directory)
            except OSError as e:
                # Another process (a DDP rank) sharing the cache put the entry in place first.
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)

    @classmethod
    def open(
        cls,
        root: Path,
        teacher: nn.Module,
        data_fingerprint: str,
        augmentation: Augmentation,
        samples: int,
        classes: int,
        top_k: int | None = None,
    ) -> TeacherOutputCache:
        if top_k is not None and not 0 < top_k < classes:
            raise ValueError(f"top_k must be between 1 and {classes - 1} classes, got {top_k}")
        key = CacheKey(
            weights_digest(teacher),
            data_fingerprint,
            augmentation.fingerprint,
            samples,
            classes,
            augmentation.draws,
            top_k,
        )
        return cls(Path(root) / "teacher-outputs" / key.digest, key)

    def filled(self, indices: torch.Tensor, draw: int) -> np.ndarray:
        return self._filled[draw, np.asarray(indices)].astype(bool)

    @property
    def complete(self) -> bool:
        return bool(self._filled.all())

    def put(self, indices: torch.Tensor, draw: int, logits: torch.Tensor) -> None:
        rows = np.asarray(indices)
        logits = logits.detach().float().cpu()
        if self.key.top_k:
            values, classes = logits.topk(self.key.top_k, dim=1)
            self._values[draw, rows] = values.numpy().astype(np.float16)
            self._indices[draw, rows] = classes.numpy().astype(np.int32)
            self._logsumexp[draw, rows] = torch.logsumexp(logits, dim=1).numpy()
            self._indices.flush()
            self._logsumexp.flush()
        else:
            self._values[draw, rows] = logits.numpy().astype(np.float16)
        self._values.flush()
        self._filled[draw, rows] = 1  # only after the values are on disk
        self._filled.flush()

    def lookup(self, indices: torch.Tensor, draw: int) -> torch.Tensor:
        """fp32 logits of the given views; every one must be filled."""
        rows = np.asarray(indices)
        missing = ~self._filled[draw, rows].astype(bool)
        if missing.any():
            raise KeyError(f"{int(missing.sum())} views of draw {draw} are not in the cache yet")
        values = torch.from_numpy(np.asarray(self._values[draw, rows], dtype=np.float32))
        if not self.key.top_k:
            return values
        classes = torch.from_numpy(np.asarray(self._indices[draw, rows], dtype=np.int64))
        logsumexp = torch.from_numpy(np.asarray(self._logsumexp[draw, rows], dtype=np.float32))
        kept = torch.exp(values - logsumexp[:, None]).sum(1).clamp(max=1 - 1e-6)
        others = self.key.classes - self.key.top_k
        rest = torch.log((1 - kept) / others) + logsumexp  # the logit that gives each other class its share
        dense = rest[:, None].expand(len(rows), self.key.classes).clone()
        return dense.scatter(1, classes, values)

    def fill(
        self,
        teacher: nn.Module,
        dataset: Dataset,
        augmentation: Augmentation,
        *,
        batch_size: int = 256,
        indices: np.ndarray | None = None,
        observer: Observer | None = None,
        accelerator: Accelerator | None = None,
    ) -> int:
        """Compute every missing view of `indices` (default: all samples) for every draw; return how
        many views were computed. DDP ranks pass their own shard of indices. With `accelerator`, the
        views go to the teacher on it (where the caller has put it). The teacher runs in float32
        whatever the training's precision, so an entry holds the same targets for every run that
        shares it, up to its float16 storage."""
        observer = observer or SilentObserver()
        accelerator = accelerator or Accelerator(torch.device("cpu"))
        on_accelerator = module_device(teacher) == accelerator.device
        wanted = np.arange(self.key.samples) if indices is None else np.asarray(indices)
        todo = [(d, wanted[~self._filled[d, wanted].astype(bool)]) for d in range(self.key.draws)]
        total = sum(len(rows) for _, rows in todo)
        if not total:
            return 0
        teacher.eval()
        task = observer.task("teacher outputs", total=total)
        for draw, rows in todo:
            for start in range(0, len(rows), batch_size):
                batch = torch.as_tensor(rows[start : start + batch_size])
                views = augmentation.apply(batch_of(dataset, batch)[0], batch, draw)
                if on_accelerator:  # else it runs elsewhere (ONNX Runtime on the CPU): CPU tensors
                    views = accelerator.to_device(views)
                with torch.no_grad():
                    logits = teacher(views)
                self.put(batch, draw, logits)
                task.advance(len(batch))
        task.close()
        log.info("cached the teacher's outputs for %d views in %s", total, self.directory)
        return total
