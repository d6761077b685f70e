"""`edgekd predict`: classify image files with an exported artifact, preprocessed as its contract (the
sidecar JSON) says, and return each image's top-k labels with probabilities.

The steps are the contract's, in the order `Contract.feeding_steps` states them and the bundles'
snippets spell out: decode as RGB, resize the whole image to the input size (bilinear, no crop),
scale [0, 255] to the contract's pixel range, normalise with mean/std (unless the model does it),
lay out as the artifact takes it. The artifact runs in its own runtime (`edgekd.runtimes`); a Core ML
package cannot run off macOS, and says so.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.artifact import Artifact, Contract, load_artifact
from edgekd.errors import ConfigError, DataError, RuntimeUnavailableError

# PIL's filter for each `Contract.resize` edgekd writes.
_RESIZE_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}


@dataclass(frozen=True)
class Prediction:
    image: Path
    top: tuple[tuple[str, float], ...]  # (label, probability), most probable first


def load_pixels(path: Path, contract: Contract) -> np.ndarray:
    """The image at `path` decoded as RGB and resized to the contract's input size: uint8 (H, W, 3)."""
    from PIL import Image

    from edgekd.data import as_rgb

    if contract.channel_order != "RGB":
        raise ConfigError(f"the contract's channel order {contract.channel_order!r} is not RGB.")
    resample = _RESIZE_FILTERS.get(contract.resize)
    if resample is None:
        raise ConfigError(
            f"the contract's resize method {contract.resize!r} is none of {', '.join(_RESIZE_FILTERS)}."
        )
    height, width = contract.image_size
    try:
        with Image.open(path) as img:
            resized = as_rgb(img, path).resize((width, height), getattr(Image.Resampling, resample))
            return np.asarray(resized, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such image file.") from e
    except Exception as e:  # PIL raises many types for a bad file
        raise DataError(f"{path}: cannot be decoded as an image ({e}).") from e


def model_input(pixels: np.ndarray, contract: Contract) -> np.ndarray:
    """uint8 RGB pixels (H, W, 3) as the artifact's float input (batch of 1, its layout): scaled to
    the pixel range and normalised, or left in [0, 255] when the model normalises them itself. An
    int8 input is quantized by the runtime's session from these floats."""
    values = pixels.astype(np.float32)
    # Sidecars from before `normalisation` existed said it with input_kind "image" (Core ML).
    if contract.normalisation != "model" and contract.input_kind != "image":
        low, high = contract.pixel_range
        values = values / np.float32(255) * np.float32(high - low) + np.float32(low)
        values = (values - np.asarray(contract.mean, np.float32)) / np.asarray(contract.std, np.float32)
    batch = values[None]  # NHWC
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if contract.layout == "NCHW" else batch)


def probabilities(output: np.ndarray, contract: Contract) -> np.ndarray:
    """The output of one image as probabilities: a softmax of logits, or the probabilities as they are."""
    values = np.asarray(output, np.float64).reshape(-1)
    if contract.output_kind == "probabilities":
        return values
    exps = np.exp(values - values.max())
    return exps / exps.sum()


def top_k(probs: np.ndarray, labels: tuple[str, ...], k: int) -> tuple[tuple[str, float], ...]:
    """The `k` most probable labels; ties keep the output's order."""
    order = np.argsort(-probs, kind="stable")[:k]
    return tuple((labels[i], float(probs[i])) for i in order)


def classify(artifact_path: Path, images: list[Path], *, top: int = 5, threads: int = 1) -> list[Prediction]:
    """Each image of `images` classified by the artifact at `artifact_path` (its sidecar beside it)."""
    from edgekd.runtimes import can_run_here, open_session

    if top < 1:
        raise ConfigError(f"--top-k {top}: ask for at least one label.")
    artifact = _load(Path(artifact_path))
    if not can_run_here(artifact.format):
        raise RuntimeUnavailableError(
            f"{artifact.path}: {artifact.format} cannot run on this OS ({platform.system()}); Core ML "
            "predicts only on macOS. Run predict there, or on this model's tflite, openvino or onnx export."
        )
    contract = artifact.contract
    inputs = [model_input(load_pixels(Path(image), contract), contract) for image in images]
    session = open_session(artifact, threads)
    predictions = []
    for image, sample in zip(images, inputs, strict=True):
        session.set_input(sample)
        session.invoke()
        probs = probabilities(session.output(), contract)
        if len(probs) != len(contract.labels):
            raise ConfigError(
                f"{artifact.path} outputs {len(probs)} values, but its sidecar lists "
                f"{len(contract.labels)} labels; the sidecar belongs to another model."
            )
        predictions.append(Prediction(Path(image), top_k(probs, contract.labels, top)))
    return predictions


def _load(path: Path) -> Artifact:
    if path.is_dir() and path.suffix != ".mlpackage":
        raise ConfigError(f"{path}: a directory; pass an exported file (.tflite, .xml, .onnx, .mlpackage).")
    return load_artifact(path)
