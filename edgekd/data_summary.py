"""What the data stage says about a data set: images per split, the classes and the images' native
size (`NativeSizes`, read from the file headers when a folder is scanned by `edgekd.data`).

Example:
    >>> sizes = NativeSizes({(64, 64): 900, (32, 48): 100})
    >>> sizes.most_common, sizes.side, sizes.describe()
    ((64, 64), 64, 'mostly 64×64 (900 of 1,000 images); widths 32-64, heights 48-64')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The data summary names the classes up to this many; more are counted only.
FEW_CLASSES = 12


@dataclass(frozen=True)
class NativeSizes:
    """The images' stored sizes, as (width, height) -> how many images have it, read from the file
    headers when the folder is scanned (no pixel is decoded for it)."""

    counts: dict[tuple[int, int], int]

    @property
    def most_common(self) -> tuple[int, int]:
        """The (width, height) most images have; a tie goes to the larger."""
        return max(self.counts, key=lambda wh: (self.counts[wh], wh[0] * wh[1], wh))

    @property
    def side(self) -> int:
        """The square input size that keeps the most common image's detail: its longer side."""
        return max(self.most_common)

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """`64×64` when every image has one size, else the most common and the range of each side."""
        (w, h), total = self.most_common, self.images
        if len(self.counts) == 1:
            return f"{w}×{h}"
        widths, heights = [wh[0] for wh in self.counts], [wh[1] for wh in self.counts]
        return (
            f"mostly {w}×{h} ({self.counts[w, h]:,} of {total:,} images); "
            f"widths {min(widths)}-{max(widths)}, heights {min(heights)}-{max(heights)}"
        )

    def to_json(self) -> dict:
        widths, heights = [wh[0] for wh in self.counts], [wh[1] for wh in self.counts]
        return {
            "most_common": list(self.most_common),
            "images_at_most_common": self.counts[self.most_common],
            "distinct_sizes": len(self.counts),
            "width_range": [min(widths), max(widths)],
            "height_range": [min(heights), max(heights)],
        }


def summary_lines(name: str, counts: dict[str, int], classes: Sequence[str], native: NativeSizes):
    """The data stage's lines: images per split, the classes (their names when few) and native size."""
    shown = f": {', '.join(classes)}" if len(classes) <= FEW_CLASSES else ""
    return (
        f"{name}: {counts['train']:,} train / {counts['val']:,} val / {counts['test']:,} test images",
        f"{len(classes)} classes{shown}",
        f"native size {native.describe()}",
    )


def data_mode_line(mode: str, reason: str, workers: int = 0) -> str:
    """The data stage's line on how the images are read (`edgekd.streaming.decide_data_mode`)."""
    if mode == "stream":
        return (
            f"streamed by {workers} DataLoader worker{'s' if workers != 1 else ''} ({reason}): fresh "
            "random-resized crops, the teacher runs live on each batch"
        )
    return f"decoded once into the cache ({reason})"
