"""A copy of the EuroSAT folder small enough to travel to a machine that cannot hold the archive (a lent
GPU machine takes 64 MiB): every validation and test image, the training images that the given
benchmark subsets draw, and a 1-pixel placeholder JPEG under the name of every other training image.
The folder's listing is unchanged, so each seeded subset (`with_train_subset`,
`with_train_subset_per_class`) picks the same files there as here; the copy is checked for that before
it is reported. Point the benchmarks at it with EDGEKD_EUROSAT_FOLDER.

    python benchmarks/eurosat_travel.py travel/eurosat-rgb --train-images 6000 1000 --per-class 200
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_eurosat import INPUT_SIZE, eurosat_folder


def subsets(root: Path, train_images: list[int], per_class: list[int]) -> dict[str, list[Path]]:
    """Each benchmark subset's training files under `root`, by name (`6000`, `200/class`)."""
    from edgekd.data import load_image_folder, with_train_subset, with_train_subset_per_class

    data = load_image_folder(root, INPUT_SIZE)
    drawn = {str(n): with_train_subset(data, n, seed=0) for n in train_images}
    drawn |= {f"{n}/class": with_train_subset_per_class(data, n, seed=0) for n in per_class}
    return {
        name: [data.train.samples[i][0].relative_to(root) for i in subset.train.indices]
        for name, subset in drawn.items()
    }


def placeholder_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("destination", type=Path)
    parser.add_argument("--train-images", type=int, nargs="*", default=[])
    parser.add_argument("--per-class", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)

    source = eurosat_folder()
    wanted = subsets(source, args.train_images, args.per_class)
    needed = set().union(*wanted.values())
    if args.destination.exists():
        shutil.rmtree(args.destination)
    placeholder = placeholder_jpeg()
    copied = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        out = args.destination / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        if relative.parts[0] != "train" or relative in needed:
            shutil.copyfile(path, out)
            copied += path.stat().st_size
        else:
            out.write_bytes(placeholder)

    again = subsets(args.destination, args.train_images, args.per_class)
    for name, files in wanted.items():
        if again[name] != files:
            raise SystemExit(f"the copy draws another {name} subset than the archive's folder")
        if any((args.destination / f).read_bytes() != (source / f).read_bytes() for f in files):
            raise SystemExit(f"the copy's {name} subset differs from the archive's files")
    total = sum(p.stat().st_size for p in args.destination.rglob("*") if p.is_file())
    train_files = sum(1 for p in (source / "train").rglob("*") if p.is_file())
    print(
        f"{args.destination}: {len(needed)} training images of {train_files}"
        f" kept ({', '.join(f'{k}: {len(v)}' for k, v in wanted.items())}), {total / 2**20:.1f} MiB "
        f"({copied / 2**20:.1f} MiB of images); every subset draws the same files as from the archive"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
