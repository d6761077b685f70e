"""Teacher outputs computed once per (sample, augmentation draw) and memory-mapped from disk.

Offline distillation runs a frozen teacher over the same views epoch after epoch. This cache stores
its logits in fp16 in a memory-mapped array of shape (draws, samples, classes) under a key that
hashes the teacher's weights, the data's fingerprint and the augmentation, so it is reused across
runs and search trials with the same teacher and data, and never reused when any of them changes.

A view's logits are written first and its "filled" flag after, each flushed, so an interrupted fill
leaves at worst a few views unflagged; they are recomputed on the next run. Processes that share the
cache (DDP ranks) write disjoint views and need no lock.

Top-k storage (`top_k=k`) keeps the k largest logits and the log-sum-exp of all of them: the k
probabilities of the teacher's softmax are exact and the remaining mass is spread evenly over the
other classes (Distillation with sparse logits; exact at T = 1, an approximation at other
temperatures). It is meant for teachers with thousands of classes.

Example:
    >>> # cache = TeacherOutputCache.open(cache_root, teacher, data, augmentation)
    >>> # cache.fill(teacher, data.train, augmentation)        # offline: every view, once
    >>> # logits = cache.lookup(indices, draw)                 # a batch's teacher targets
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from edgekd._io import write_json_atomic
from edgekd.augment import Augmentation
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
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = self.directory / "meta.json"
        if meta.exists() and json.loads(meta.read_text()).get("key") != asdict(key):
            raise ValueError(f"{self.directory} holds another teacher's outputs (key mismatch)")
        write_json_atomic(meta, {"format": FORMAT, "key": asdict(key)})
        shape = (key.draws, key.samples)
        width = key.top_k if key.top_k else key.classes
        self._values = self._memmap("values.f16", np.float16, (*shape, width))
        self._indices = self._memmap("indices.i32", np.int32, (*shape, width)) if key.top_k else None
        self._logsumexp = self._memmap("logsumexp.f32", np.float32, shape) if key.top_k else None
        self._filled = self._memmap("filled.u8", np.uint8, shape)

    def _memmap(self, name: str, dtype, shape: tuple[int, ...]) -> np.memmap:
        path = self.directory / name
        mode = "r+" if path.exists() else "w+"  # w+ creates the file zero-filled
        return np.memmap(path, dtype=dtype, mode=mode, shape=shape)

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
        logits = logits.detach().float()
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
    ) -> int:
        """Compute every missing view of `indices` (default: all samples) for every draw; return how
        many views were computed. DDP ranks pass their own shard of indices."""
        observer = observer or SilentObserver()
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
                images = torch.stack([dataset[int(i)][0] for i in batch])
                with torch.no_grad():
                    logits = teacher(augmentation.apply(images, batch, draw))
                self.put(batch, draw, logits)
                task.advance(len(batch))
        task.close()
        log.info("cached the teacher's outputs for %d views in %s", total, self.directory)
        return total
