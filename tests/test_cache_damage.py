"""The teacher-output and decoded-image caches survive damage: an entry cut short or not matching its
key is moved aside with a warning naming it and rebuilt; a full disk is a one-line error naming the
path and how much to free, never a SIGBUS and never half an entry a later run would trust, and once
space is freed the same call completes.

For the full disk the cache directory is a small tmpfs mounted for the test (root only; skipped
elsewhere). The calls that hit it run in a subprocess, so a regression that brings the SIGBUS back
fails the test instead of killing pytest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from edgekd._io import cached_json, full_disk_as_error
from edgekd.augment import Augmentation
from edgekd.checkpoint import ModelInfo, save_model
from edgekd.data import decode_once, load_image_folder
from edgekd.distill.cache import TeacherOutputCache
from edgekd.distill.losses import make_loss
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import DiskFullError, FileSystemError
from tests.conftest import REPO

SAMPLES, CLASSES, INPUT_SIZE = 2000, 20, 32  # teacher outputs: 80 KB of fp16 logits
FULL, ROOMY = "64k", "2m"

# Both caches filled into the tmpfs; each EdgeKDError's message (or "ok") printed as JSON.
CHILD = """
import json, sys
from pathlib import Path
from edgekd.errors import EdgeKDError
from tests.test_cache_damage import fill_decoded_images, fill_teacher_outputs

def attempt(fill):
    try:
        fill(Path(sys.argv[1]), Path(sys.argv[2]))
        return "ok"
    except EdgeKDError as e:
        return str(e)

errors = {"teacher outputs": attempt(fill_teacher_outputs), "decoded images": attempt(fill_decoded_images)}
print(json.dumps(errors))
"""


def fill_teacher_outputs(cache, _images):
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, CLASSES)).eval()
    data = TensorDataset(torch.randn(SAMPLES, 3, 4, 4), torch.zeros(SAMPLES, dtype=torch.long))
    augmentation = Augmentation(draws=1, max_shift=0, hflip=False)
    outputs = TeacherOutputCache.open(cache, teacher, "fingerprint", augmentation, SAMPLES, CLASSES)
    outputs.fill(teacher, data, augmentation)
    return outputs


def fill_decoded_images(cache, images):
    return decode_once(load_image_folder(images, INPUT_SIZE), cache)


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "cache"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FULL}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        yield mount
    finally:
        # lazily: this process may still hold a memory map of a file in it
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def image_folder(tmp_path):
    """Two classes of 20 PNGs: the train split decodes to 28 images of 32² RGB, 86 KB."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / "train" / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / "train" / label / f"{i}.png")
    return tmp_path / "images"


def test_a_full_cache_disk_is_a_one_line_error_and_leaves_no_half_entry(tmpfs, image_folder):
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmpfs), str(image_folder)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert child.returncode == 0, child.stderr  # a SIGBUS would be -7 here
    errors = json.loads(child.stdout.splitlines()[-1])
    for name, file in (
        ("teacher outputs", r"teacher-outputs/\w+/values\.f16"),
        ("decoded images", "train-images.npy"),
    ):
        assert "\n" not in errors[name]
        mount = re.escape(str(tmpfs))
        pattern = rf"no space left on {mount} writing {mount}/.*{file}: free \d+ MB or pass --cache-dir\."
        assert re.fullmatch(pattern, errors[name]), errors[name]
    assert [p for p in tmpfs.rglob("*") if not p.is_dir()] == []  # nothing a later run could trust

    subprocess.run(["mount", "-o", f"remount,size={ROOMY}", str(tmpfs)], check=True)
    outputs = fill_teacher_outputs(tmpfs, image_folder)
    assert outputs.complete
    decoded = fill_decoded_images(tmpfs, image_folder)
    direct = load_image_folder(image_folder, INPUT_SIZE)
    for i in (0, len(direct.train) - 1):
        assert torch.allclose(decoded.train[i][0], direct.train[i][0], atol=1e-6)
    del outputs, decoded


def test_a_damaged_teacher_output_entry_is_moved_aside_and_refilled(tmp_path, caplog):
    filled = fill_teacher_outputs(tmp_path, None)
    everything = torch.arange(SAMPLES)
    expected = filled.lookup(everything, 0)
    values = filled.directory / "values.f16"
    del filled
    values.write_bytes(values.read_bytes()[:1000])
    with caplog.at_level("WARNING", logger="edgekd"):
        refilled = fill_teacher_outputs(tmp_path, None)
    [aside] = refilled.directory.parent.glob(f"{refilled.directory.name}.corrupt-*")
    assert f"{refilled.directory}: teacher-output cache with values.f16 missing or truncated" in caplog.text
    assert aside.name in caplog.text
    assert torch.equal(refilled.lookup(everything, 0), expected)


def test_a_damaged_decoded_image_array_is_moved_aside_and_decoded_again(tmp_path, image_folder, caplog):
    decoded = fill_decoded_images(tmp_path, image_folder)
    expected = [decoded.train[i][0] for i in range(len(decoded.train))]
    directory = next((tmp_path / "decoded").iterdir())
    images, labels = directory / "train-images.npy", directory / "val-labels.npy"
    del decoded
    images.write_bytes(images.read_bytes()[:5000])
    np.save(labels, np.zeros(len(np.load(labels)), dtype=np.int64))  # readable, but not the split's labels
    with caplog.at_level("WARNING", logger="edgekd"):
        again = fill_decoded_images(tmp_path, image_folder)
    assert f"{images}: decoded-image cache cannot be read" in caplog.text
    assert f"{labels}: decoded-image cache does not match the split" in caplog.text
    assert len(list(directory.glob("*.corrupt-*"))) == 2
    assert all(torch.equal(again.train[i][0], image) for i, image in enumerate(expected))
    assert list(again.val.labels) == [
        label for _, label in load_image_folder(image_folder, INPUT_SIZE).val.samples
    ]


def test_a_full_disk_while_checkpointing_or_caching_a_model_is_a_one_line_error_and_leaves_no_file(
    tmpfs, digits
):
    small = dataclasses.replace(digits, train=TensorDataset(*(t[:64] for t in digits.train.tensors)))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))  # 120 KB of weights
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-2)
    with pytest.raises(FileSystemError) as full:
        train(model, small, config, loss=make_loss("ce"), checkpoint_dir=tmpfs / "checkpoints")
    mount = re.escape(str(tmpfs))
    pattern = (
        rf"no space left on device writing {mount}/checkpoints/last\.pt \(a training checkpoint\); free "
        r"space there or write somewhere else"
    )
    assert re.fullmatch(pattern, str(full.value)), full.value
    assert [p for p in tmpfs.rglob("*") if not p.is_dir()] == []
    # the cached teacher's safetensors file: an OSError(ENOSPC) the cache turns into this error too
    cached = tmpfs / "teachers" / "teacher.safetensors"
    info = ModelInfo("linear", small.preprocessing)
    full_message = rf"writing {re.escape(str(cached))}: free \d+ MB"
    with pytest.raises(DiskFullError, match=full_message), full_disk_as_error(cached):
        save_model(cached, model, info)
    assert [p for p in tmpfs.rglob("*") if not p.is_dir()] == []


def test_a_json_cache_entry_that_does_not_read_back_is_moved_aside_and_recomputed(tmp_path, caplog):
    path = tmp_path / "costs.json"
    path.write_text('{"macs": 12')  # cut short
    with caplog.at_level("WARNING", logger="edgekd"):
        value = cached_json(path, lambda: {"macs": 12}, dict, dict)
    [aside] = tmp_path.glob("costs.json.corrupt-*")
    assert value == {"macs": 12} and json.loads(path.read_text()) == {"macs": 12}
    assert (
        f"{path}: cache entry cannot be read back (JSONDecodeError" in caplog.text
        and aside.name in caplog.text
    )
