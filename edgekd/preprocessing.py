"""The preprocessing contract of a model: the square input size, the tensor layout, the per-channel
mean/std of the normalisation and the class labels in output order. The data splits, the checkpoints,
the export inputs and the artifacts' contracts all carry this one object, so they cannot drift apart.

Example:
    >>> import numpy as np
    >>> p = Preprocessing(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), ("cat", "dog"))
    >>> p.input_shape, p.with_layout("NHWC").input_shape
    ((1, 3, 32, 32), (1, 32, 32, 3))
    >>> p.normalise(np.full((1, 3, 2, 2), 255, np.uint8))[0, :, 0, 0]
    array([2., 2., 2.], dtype=float32)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from edgekd.errors import ConfigError

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocessing:
    input_size: int  # height and width, in pixels
    mean: tuple[float, ...]  # per RGB channel, of images scaled to [0, 1]
    std: tuple[float, ...]
    labels: tuple[str, ...]  # in the order of the model's logits
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        # Lists from JSON or YAML become tuples, so two equal contracts compare and hash equal.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "labels", tuple(self.labels))
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 1:
            raise ConfigError(
                f"preprocessing: input_size must be a whole number >= 1, not {self.input_size!r}."
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(
                f"preprocessing: mean {list(self.mean)} and std {list(self.std)} need one value per RGB "
                "channel."
            )
        if not all(s > 0 for s in self.std):
            raise ConfigError(f"preprocessing: std {list(self.std)} must be positive in every channel.")
        if not self.labels:
            raise ConfigError("preprocessing: no labels; a classifier needs one per class.")
        duplicates = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if duplicates:
            raise ConfigError(f"preprocessing: labels {duplicates} appear more than once.")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"preprocessing: layout {self.layout!r} is none of {list(LAYOUTS)}.")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The shape of one input (batch 1) in this layout."""
        size = self.input_size
        return (1, 3, size, size) if self.layout == "NCHW" else (1, size, size, 3)

    def with_layout(self, layout: str) -> Preprocessing:
        return replace(self, layout=layout)

    def normalise(self, images: Any) -> Any:
        """`images` in this layout (a batch or one image, a numpy array or a torch tensor, of the
        same kind out), uint8 pixels in [0, 255] or floats in [0, 1], as float32 (x - mean) / std."""
        channels = (3, 1, 1) if self.layout == "NCHW" else (3,)
        if isinstance(images, np.ndarray):
            if images.dtype == np.uint8:
                pixels = images.astype(np.float32) / np.float32(255)
            else:
                pixels = images.astype(np.float32, copy=False)
            mean = np.asarray(self.mean, np.float32).reshape(channels)
            std = np.asarray(self.std, np.float32).reshape(channels)
            return (pixels - mean) / std
        import torch  # a tensor's caller has torch loaded already; numpy callers need not

        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        mean = torch.tensor(self.mean, dtype=torch.float32).view(channels)
        std = torch.tensor(self.std, dtype=torch.float32).view(channels)
        return (pixels - mean) / std

    def differences(self, other: Preprocessing) -> tuple[str, ...]:
        """Each field in which `other` differs, in words, this one's value first:
        "std (0.2, 0.2, 0.2) vs (0.3, 0.3, 0.3)"."""
        found = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                if f.name == "labels":  # a thousand ImageNet labels would drown the message
                    mine, theirs = list(mine)[:10], list(theirs)[:10]
                found.append(f"{f.name} {mine} vs {theirs}")
        return tuple(found)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        try:
            raw = json.loads(text)
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"preprocessing: not a preprocessing contract in JSON ({e}).") from e
