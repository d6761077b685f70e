"""Standard TFLite Metadata (the `metadata_schema.fbs` that Android Studio's model binding, the TFLite
Task Library and MediaPipe read): the model's name and description, the image input's colour space,
normalisation and value range, the output's meaning, and the labels as an associated file packed
into the `.tflite` (a zip appended after the flatbuffer, stored uncompressed, as tflite-support's
`MetadataPopulator` packs it).

tflite-support itself pins protobuf<4 and no longer installs beside edgekd's pins, so the metadata is
built here with the schema's own generated code (`edgekd.export._tflite_metadata_schema`, copied
from tflite-support 0.4.4) and read back with it (`read_standard_metadata`, what tflite-support's
`MetadataDisplayer` reads: the "TFLITE_METADATA" buffer and the packed files).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgekd.artifact import Contract
from edgekd.errors import ExportError
from edgekd.export import _tflite_metadata_schema as md
from edgekd.export.tflite import embed_tflite_metadata, read_tflite_metadata

METADATA_NAME = "TFLITE_METADATA"  # the model's metadata entry that holds the ModelMetadata flatbuffer
FILE_IDENTIFIER = b"M001"
LABELS_FILE = "labels.txt"
# The oldest metadata parser that reads every field written here (tflite-support's
# `_pywrap_metadata_version` gives 1.0.0 for image properties, normalisation and axis labels).
MIN_PARSER_VERSION = "1.0.0"


@dataclass(frozen=True)
class StandardMetadata:
    """What a `.tflite` file's standard metadata says, as `read_standard_metadata` found it."""

    name: str
    description: str
    min_parser_version: str
    input_name: str
    input_description: str
    color_space: str  # "RGB", "GRAYSCALE" or "UNKNOWN"
    mean: tuple[float, ...]  # of the NormalizationOptions, on [0, 255] pixels
    std: tuple[float, ...]
    output_name: str
    output_description: str
    label_file: str  # the output's TENSOR_AXIS_LABELS file
    labels: tuple[str, ...]  # read from that file, packed in the model


def labels_text(labels: tuple[str, ...]) -> str:
    """labels.txt: one label per line, in output order."""
    bad = [label for label in labels if "\n" in label or "\r" in label]
    if bad:
        raise ExportError(f"labels {bad} contain a line break, which labels.txt cannot hold.")
    return "".join(f"{label}\n" for label in labels)


def with_standard_metadata(content: bytes, contract: Contract, description: str) -> bytes:
    """`content` (a `.tflite` flatbuffer without packed files) with standard metadata for an image
    classifier described by `contract`, and the labels packed as `labels.txt`.

    TFLite Metadata normalises the input as fed, (x - mean) / std, and an app feeds [0, 255] pixels:
    edgekd's mean/std (of pixels scaled to [0, 1]) are therefore written multiplied by 255."""
    if contract.layout != "NHWC":
        raise ExportError(
            f"standard TFLite metadata describes NHWC input; the contract is {contract.layout}."
        )
    mean = [255.0 * m for m in contract.mean]
    std = [255.0 * s for s in contract.std]
    model = md.ModelMetadataT()
    model.name = f"{contract.arch} image classifier"
    model.description = description
    model.author = "edgekd"
    model.minParserVersion = MIN_PARSER_VERSION

    image = md.TensorMetadataT()
    image.name = contract.input_name
    image.description = contract.feeding_steps()
    image.content = md.ContentT()
    image.content.contentPropertiesType = md.ContentProperties.ImageProperties
    image.content.contentProperties = md.ImagePropertiesT()
    image.content.contentProperties.colorSpace = md.ColorSpaceType.RGB
    normalisation = md.ProcessUnitT()
    normalisation.optionsType = md.ProcessUnitOptions.NormalizationOptions
    normalisation.options = md.NormalizationOptionsT()
    normalisation.options.mean, normalisation.options.std = mean, std
    image.processUnits = [normalisation]
    image.stats = md.StatsT()  # the normalised range of [0, 255] pixels, per channel
    image.stats.min = [(0.0 - m) / s for m, s in zip(mean, std)]
    image.stats.max = [(255.0 - m) / s for m, s in zip(mean, std)]

    scores = md.TensorMetadataT()
    scores.name = contract.output_name
    scores.description = contract.reading_steps()
    scores.content = md.ContentT()
    scores.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    scores.content.contentProperties = md.FeaturePropertiesT()
    labels = md.AssociatedFileT()
    labels.name = LABELS_FILE
    labels.description = "The class labels, one a line, in the order of the output's values."
    labels.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [labels]

    graph = md.SubGraphMetadataT()
    graph.inputTensorMetadata, graph.outputTensorMetadata = [image], [scores]
    model.subgraphMetadata = [graph]

    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), FILE_IDENTIFIER)
    flatbuffer = embed_tflite_metadata(content, {METADATA_NAME: bytes(builder.Output())})
    packed = io.BytesIO()
    packed.write(flatbuffer)
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, labels_text(contract.labels))
    return packed.getvalue()


def read_standard_metadata(path: str | Path) -> StandardMetadata:
    """The standard metadata of the `.tflite` at `path`, and the labels of its packed label file."""
    data = Path(path).read_bytes()
    buffer = read_tflite_metadata(path).get(METADATA_NAME)
    if buffer is None:
        raise ExportError(f"{path}: no standard TFLite metadata (no {METADATA_NAME} entry).")
    if not md.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
        raise ExportError(f"{path}: the {METADATA_NAME} entry is not a ModelMetadata flatbuffer (no M001).")
    model = md.ModelMetadata.GetRootAs(buffer, 0)
    graph = model.SubgraphMetadata(0)
    image, scores = graph.InputTensorMetadata(0), graph.OutputTensorMetadata(0)
    unit = image.ProcessUnits(0)
    if unit is None or unit.OptionsType() != md.ProcessUnitOptions.NormalizationOptions:
        raise ExportError(f"{path}: the input's metadata has no normalisation.")
    normalisation = md.NormalizationOptions()
    normalisation.Init(unit.Options().Bytes, unit.Options().Pos)
    properties = md.ImageProperties()
    properties.Init(image.Content().ContentProperties().Bytes, image.Content().ContentProperties().Pos)
    spaces = {v: k for k, v in vars(md.ColorSpaceType).items() if not k.startswith("_")}
    label_file = next(
        (
            scores.AssociatedFiles(i).Name().decode()
            for i in range(scores.AssociatedFilesLength())
            if scores.AssociatedFiles(i).Type() == md.AssociatedFileType.TENSOR_AXIS_LABELS
        ),
        "",
    )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            labels = tuple(archive.read(label_file).decode().splitlines()) if label_file else ()
    except (zipfile.BadZipFile, KeyError) as e:
        raise ExportError(f"{path}: the label file {label_file!r} is not packed in the model ({e}).") from e

    def text(value: bytes | None) -> str:
        return value.decode() if value else ""

    return StandardMetadata(
        name=text(model.Name()),
        description=text(model.Description()),
        min_parser_version=text(model.MinParserVersion()),
        input_name=text(image.Name()),
        input_description=text(image.Description()),
        color_space=spaces.get(properties.ColorSpace(), "UNKNOWN"),
        mean=tuple(float(v) for v in normalisation.MeanAsNumpy()),
        std=tuple(float(v) for v in normalisation.StdAsNumpy()),
        output_name=text(scores.Name()),
        output_description=text(scores.Description()),
        label_file=label_file,
        labels=labels,
    )
