"""The Core ML package an iOS app adds: a classifier (Vision returns `VNClassificationObservation`s with
the labels, and Xcode's preview shows them), with an RGB image input and the normalisation inside.

`edgekd.export.coreml` writes the plain package whose "logits" output parity compares; this one wraps
the same student in `ImageInput` and a softmax and converts it with a `ClassifierConfig`, whose
`classify` op turns the probabilities into a class label ("classLabel") and a label -> probability
dictionary ("probabilities").

Core ML cannot run on Linux, so a classifier is checked from its spec alone (`check_classifier`): a
classifier whose labels are the contract's, whose input is the contract's RGB image scaled by 1/255,
and whose outputs are the label and the probabilities. On macOS `coremltools` could also predict.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import coremltools as ct
import torch
import torch.nn as nn

from edgekd.artifact import Contract, with_versions
from edgekd.errors import ExportError
from edgekd.export.coreml import (
    DEFAULT_DEPLOYMENT_TARGET,
    ImageInput,
    _target,
    convert_image_model,
    write_package,
)
from edgekd.export.coreml_package import _check_input, _operations

log = logging.getLogger(__name__)

LABEL_OUTPUT = "classLabel"  # the top label, a string: Xcode's and Vision's convention
PROBABILITIES_OUTPUT = "probabilities"  # label -> probability


class Probabilities(nn.Module):
    """`model`'s softmax over the classes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def export_classifier(
    model: nn.Module, path: Path, contract: Contract, *, deployment_target: str = DEFAULT_DEPLOYMENT_TARGET
) -> Contract:
    """Convert `model` (NCHW float, normalised input) to a Core ML classifier at `path` (`.mlpackage`),
    fp32 or fp16 compute as `contract.precision` says; validate its spec and return its contract."""
    if contract.precision not in ("fp32", "fp16"):
        raise ExportError(
            f"the iOS bundle's classifier is converted at fp32 or fp16, not {contract.precision!r}."
        )
    target = _target(deployment_target)
    _, _, height, width = contract.input_shape
    written = with_versions(
        replace(
            contract,
            input_kind="image",
            io_dtype="float32",
            normalisation="model",
            output_name=PROBABILITIES_OUTPUT,
            output_kind="probabilities",
        ),
        torch=torch.__version__,
        coremltools=ct.__version__,
    )
    wrapped = Probabilities(ImageInput(model, contract.mean, contract.std)).eval()
    mlmodel = convert_image_model(
        wrapped,
        contract,
        target,
        output="softmax_scores",
        diagnosed=model,
        classifier_config=ct.ClassifierConfig(list(contract.labels), predicted_feature_name=LABEL_OUTPUT),
    )
    spec = mlmodel.get_spec()
    # coremltools names the dictionary "<label output>_probs"; apps and Vision read it by this name.
    ct.utils.rename_feature(spec, spec.description.predictedProbabilitiesName, PROBABILITIES_OUTPUT)
    _describe(spec, written, height, width)
    mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    what = f"the Core ML classifier written for {contract.arch}"
    write_package(mlmodel, Path(path), what, lambda package: (check_classifier(package, written), ""))
    log.info("wrote the Core ML classifier %s", path)
    return written


def _describe(spec, contract: Contract, height: int, width: int) -> None:
    """What Xcode shows for the model, its input and its outputs."""
    from edgekd import __version__

    description = spec.description
    description.metadata.author = "edgekd"
    description.metadata.versionString = __version__
    description.metadata.shortDescription = (
        f"{contract.arch} image classifier ({contract.precision}), {len(contract.labels)} classes; "
        "exported by edgekd."
    )
    for feature in description.input:
        feature.shortDescription = (
            f"RGB image, {width}x{height} (Vision scales to it); the normalisation is inside the model."
        )
    for feature in description.output:
        feature.shortDescription = (
            "The most probable label."
            if feature.name == LABEL_OUTPUT
            else "Each label's probability (they sum to 1)."
        )


def classifier_labels(spec) -> tuple[str, ...] | None:
    """The class labels of an ML Program classifier's `classify` op; None if it has none."""
    for op in _operations(spec):
        if op.type == "classify":
            values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
            return tuple(v.immediateValue.tensor.strings.values[0] for v in values)
    return None


def check_classifier(path: str | Path, contract: Contract) -> list[str]:
    """The problems of the Core ML package at `path` as the classifier of `contract`, from its spec
    alone (Core ML cannot run on Linux); empty when it passes."""
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as e:
        return [f"package: {path} cannot be read: {type(e).__name__}: {e}"]
    if spec.WhichOneof("Type") != "mlProgram":
        return [f"package: the model is a {spec.WhichOneof('Type')}, not an mlProgram."]
    problems = _check_input(spec, list(_operations(spec)), contract)
    description = spec.description
    if description.predictedFeatureName != LABEL_OUTPUT:
        problems.append(
            f"classifier: the predicted feature is {description.predictedFeatureName!r}, not "
            f"{LABEL_OUTPUT!r} (not a classifier?)."
        )
    if description.predictedProbabilitiesName != PROBABILITIES_OUTPUT:
        problems.append(
            f"classifier: the probabilities are {description.predictedProbabilitiesName!r}, not "
            f"{PROBABILITIES_OUTPUT!r}."
        )
    outputs = {o.name: o.type.WhichOneof("Type") for o in description.output}
    if outputs != {LABEL_OUTPUT: "stringType", PROBABILITIES_OUTPUT: "dictionaryType"}:
        problems.append(f"classifier: outputs {outputs}, expected a string label and a dictionary.")
    labels = classifier_labels(spec)
    if labels != tuple(contract.labels):
        shown = None if labels is None else list(labels)[:10]
        problems.append(f"classifier: class labels {shown}, the contract's are {list(contract.labels)[:10]}.")
    return problems
