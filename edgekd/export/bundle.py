"""Deployment bundles: one directory per platform with what an app developer adds to a project.

- `android/`: the `.tflite` with standard TFLite Metadata (labels packed as `labels.txt`,
  normalisation, input/output descriptions: `edgekd.export.tflite_metadata`), its sidecar JSON,
  `labels.txt` and a README with a Kotlin snippet.
- `ios/`: a Core ML classifier (`edgekd.export.coreml_classifier`: image input, class labels,
  probabilities out), its sidecar JSON, `labels.txt` and a README with a Swift/Vision snippet. Core ML
  cannot run on Linux: the classifier is validated from its spec, never executed here.

The snippets spell out the contract's preprocessing (`Contract.feeding_steps`), the one that
`edgekd predict` runs and the parity checks use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd._io import write_bytes_atomic, write_text_atomic
from edgekd.artifact import ARTIFACT_STEM, Artifact, make_contract, write_sidecar
from edgekd.errors import ExportError

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.preprocessing import Preprocessing

PLATFORMS = ("android", "ios")
# The format whose artifact each platform's bundle carries.
PLATFORM_FORMATS = {"android": "tflite", "ios": "coreml"}


@dataclass(frozen=True)
class Bundle:
    platform: str
    directory: Path
    model: Path  # the file (or .mlpackage directory) the app adds
    files: tuple[Path, ...]  # everything written, the model included


def check_platforms(platforms: list[str]) -> list[str]:
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise ExportError(
            f"--bundle {', '.join(unknown)}: no such platform; choose from {', '.join(PLATFORMS)}."
        )
    return list(dict.fromkeys(platforms))


def android_bundle(tflite: Artifact, out_dir: Path) -> Bundle:
    """`out_dir` (e.g. `exports/android/`) with a copy of the float `tflite` artifact carrying standard
    TFLite Metadata, its sidecar, `labels.txt` and README.md."""
    from edgekd.export.tflite_metadata import LABELS_FILE, labels_text, with_standard_metadata

    contract = tflite.contract
    if tflite.format != "tflite":
        raise ExportError(f"the Android bundle carries a .tflite file, not {tflite.path} ({tflite.format}).")
    if contract.io_dtype != "float32":
        raise ExportError(
            f"{tflite.path} takes {contract.io_dtype} input; the Android bundle's snippet feeds float "
            "pixels, so bundle the fp32 or fp16 file."
        )
    out_dir = Path(out_dir)
    model = out_dir / tflite.path.name
    description = (
        f"{contract.arch} ({contract.precision}) classifying {len(contract.labels)} classes; "
        f"exported by edgekd. Input: {contract.feeding_steps()} Output: {contract.reading_steps()}"
    )
    write_bytes_atomic(model, with_standard_metadata(tflite.path.read_bytes(), contract, description))
    sidecar = write_sidecar(Artifact(model, "tflite", contract)).sidecar
    labels = write_text_atomic(out_dir / LABELS_FILE, labels_text(contract.labels))
    readme = write_text_atomic(out_dir / "README.md", _android_readme(model.name, contract))
    return Bundle("android", out_dir, model, (model, sidecar, labels, readme))


def ios_bundle(
    model: nn.Module,
    arch: str,
    preprocessing: Preprocessing,
    out_dir: Path,
    *,
    stem: str,
    precision: str = "fp32",
    deployment_target: str | None = None,
) -> Bundle:
    """`out_dir` (e.g. `exports/ios/`) with `model` converted to a Core ML classifier
    (`<stem>-<precision>.mlpackage`), its sidecar, `labels.txt` and README.md."""
    from edgekd.export.coreml_classifier import export_classifier
    from edgekd.export.tflite_metadata import labels_text

    out_dir = Path(out_dir)
    package = out_dir / f"{stem}-{precision}.mlpackage"
    options = {"deployment_target": deployment_target} if deployment_target else {}
    contract = export_classifier(
        model, package, make_contract(arch, "coreml", preprocessing, precision), **options
    )
    sidecar = write_sidecar(Artifact(package, "coreml", contract)).sidecar
    labels = write_text_atomic(out_dir / "labels.txt", labels_text(contract.labels))
    readme = write_text_atomic(out_dir / "README.md", _ios_readme(package.name, contract))
    return Bundle("ios", out_dir, package, (package, sidecar, labels, readme))


def write_bundles(
    platforms: list[str],
    model: nn.Module,
    arch: str,
    preprocessing: Preprocessing,
    out_dir: Path,
    *,
    tflite: Artifact | None = None,
    coreml_options: dict | None = None,
) -> list[Bundle]:
    """Each platform's bundle in `out_dir/<platform>/`: Android from `tflite` (a float .tflite artifact
    checked by the caller), iOS converted from `model` with the Core ML `coreml_options` (the
    deployment target)."""
    bundles = []
    for platform in check_platforms(platforms):
        if platform == "android":
            if tflite is None:
                raise ExportError(
                    "the Android bundle needs a float .tflite export that passed its parity gate."
                )
            bundles.append(android_bundle(tflite, Path(out_dir) / "android"))
        else:
            target = (coreml_options or {}).get("deployment_target")
            bundles.append(
                ios_bundle(
                    model,
                    arch,
                    preprocessing,
                    Path(out_dir) / "ios",
                    stem=ARTIFACT_STEM,
                    deployment_target=target,
                )
            )
    return bundles


def _floats(values) -> str:
    return ", ".join(f"{v:g}f" for v in values)


def _android_readme(model_name: str, contract) -> str:
    height, width = contract.image_size
    return f"""# {contract.arch} for Android

Files: `{model_name}` (LiteRT/TFLite, {contract.precision}), `labels.txt` (one label a line, in output
order), `{model_name}.json` (the contract edgekd wrote).

The `.tflite` carries standard TFLite Metadata: the labels (packed as `labels.txt`), the input's RGB
colour space and normalisation, and descriptions of the input `{contract.input_name}` and the output
`{contract.output_name}`. Android Studio's ML model binding and the LiteRT support library read it.

**Input**: {contract.feeding_steps()}

**Output**: {contract.reading_steps()}

Put the model and `labels.txt` in `app/src/main/assets/`, keep the model uncompressed
(`androidResources {{ noCompress += "tflite" }}` in `build.gradle.kts`) and add LiteRT
(`implementation("com.google.ai.edge.litert:litert:1.+")`). Then, in Kotlin:

```kotlin
import android.content.Context
import android.graphics.Bitmap
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import kotlin.math.exp

private const val WIDTH = {width}
private const val HEIGHT = {height}
private val MEAN = floatArrayOf({_floats(contract.mean)})  // of pixels scaled to [0, 1]
private val STD = floatArrayOf({_floats(contract.std)})

class Classifier(context: Context) {{
    private val labels = context.assets.open("labels.txt").bufferedReader().readLines()
    private val interpreter = context.assets.openFd("{model_name}").use {{ fd ->
        FileInputStream(fd.fileDescriptor).channel.use {{ channel ->
            Interpreter(channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength))
        }}
    }}

    /** The top-k labels of `bitmap` with their probabilities. */
    fun classify(bitmap: Bitmap, topK: Int = 5): List<Pair<String, Float>> {{
        // The whole image, resized bilinearly (filter = true): no crop, aspect ratio not kept.
        val scaled = Bitmap.createScaledBitmap(bitmap, WIDTH, HEIGHT, true)
        val pixels = IntArray(WIDTH * HEIGHT)
        scaled.getPixels(pixels, 0, WIDTH, 0, 0, WIDTH, HEIGHT)
        val input = ByteBuffer.allocateDirect(4 * WIDTH * HEIGHT * 3).order(ByteOrder.nativeOrder())
        for (p in pixels) {{  // NHWC, RGB, each channel (p / 255 - mean) / std
            input.putFloat(((p shr 16 and 0xFF) / 255f - MEAN[0]) / STD[0])
            input.putFloat(((p shr 8 and 0xFF) / 255f - MEAN[1]) / STD[1])
            input.putFloat(((p and 0xFF) / 255f - MEAN[2]) / STD[2])
        }}
        val logits = Array(1) {{ FloatArray(labels.size) }}
        interpreter.run(input, logits)
        val top = logits[0].max()  // softmax: the output is raw logits
        val exps = logits[0].map {{ exp(it - top) }}
        val sum = exps.sum()
        val ranked = exps.mapIndexed {{ i, e -> labels[i] to e / sum }}
        return ranked.sortedByDescending {{ it.second }}.take(topK)
    }}
}}
```

Check the model on your own images first: `edgekd predict {model_name} photo.jpg --top-k 5`
runs exactly these steps.
"""


def _ios_readme(package_name: str, contract) -> str:
    height, width = contract.image_size
    swift_class = package_name.removesuffix(".mlpackage").replace("-", "_").replace(".", "_")
    return f"""# {contract.arch} for iOS and macOS

Files: `{package_name}` (a Core ML classifier, {contract.precision} compute), `labels.txt`,
`{package_name}.json` (the contract edgekd wrote).

The package is a classifier: its input `{contract.input_name}` is a {width}x{height} RGB image, its
outputs are `classLabel` (the most probable label) and `probabilities` (label -> probability). The
normalisation is **inside the model**: feed plain RGB pixels and do not apply the mean/std of the
JSON yourself (they are recorded for information). edgekd's preprocessing resizes the whole image
(bilinear, no crop); Vision's `.scaleFill` does the same.

Drag `{package_name}` into your Xcode target; Xcode generates the class `{swift_class}`. Then:

```swift
import CoreML
import Vision

func classify(_ image: CGImage, topK: Int = 5) throws -> [(label: String, probability: Float)] {{
    let model = try VNCoreMLModel(for: {swift_class}(configuration: MLModelConfiguration()).model)
    let request = VNCoreMLRequest(model: model)
    request.imageCropAndScaleOption = .scaleFill  // the whole image, no crop, as edgekd trained
    try VNImageRequestHandler(cgImage: image, options: [:]).perform([request])
    let observations = request.results as? [VNClassificationObservation] ?? []
    return observations.prefix(topK).map {{ ($0.identifier, $0.confidence) }}
}}
```

This package was built on Linux, where Core ML cannot run: edgekd validated its spec (a classifier
with these labels, an RGB image input scaled by 1/255), not its predictions. Its logits twin,
`exports/*.mlpackage` from `edgekd export --format coreml`, is parity-checked on macOS.
"""
