"""ONNX export through the torch.onnx dynamo exporter (`torch.export` capture, then translation to
ONNX), written as one self-contained file that onnxruntime and other ONNX consumers open as is.

The input is NCHW float32, normalised with the contract's mean/std, named `contract.input_name`;
the output is `logits`. The contract travels inside the file as `metadata_props` ("edgekd.contract"
holds the whole contract as JSON; "labels", "mean", "std" and "precision" repeat the fields a
generic ONNX tool would show), as well as in the sidecar JSON that `edgekd.export.export` writes.
The file is checked with `onnx.checker` (full check, with shape inference) and opened in an
onnxruntime session before it is moved into place.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from edgekd._io import atomic_path
from edgekd.artifact import Contract, with_versions
from edgekd.errors import ExportError
from edgekd.export import package_version
from edgekd.export.diagnose import brief, conversion_error, without_colours

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# The dynamo exporter translates to opset 18 and converts down or up from there. Below 13 the ops
# these models use (Split, Squeeze, ReduceSum with axes as inputs) change meaning; from 13 to 17
# the conversion succeeds only for models without ops that changed since (see _check_produced_opset).
MIN_OPSET = 13
OUTPUT_NAME = "logits"


class OnnxTranslationError(Exception):
    """One node of the exported graph that the exporter had no ONNX translation for."""


def export_model(
    model: nn.Module,
    path: Path,
    contract: Contract,
    *,
    calibration: torch.Tensor | None = None,
    qat: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Contract:
    """Export `model` (NCHW, float) to the single file `path`, with the contract in its metadata.

    Called by `edgekd.export.export`, which checks the precision (fp32 only) and writes the
    sidecar; `export(..., options={"opset": 19})` chooses the opset (13 up to the installed onnx's newest)."""
    _check_opset(opset)
    # export() has refused other precisions, calibration images and QAT models (fp32 only here)
    example = torch.zeros(contract.input_shape)
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[contract.input_name],
            output_names=[OUTPUT_NAME],
            verbose=False,  # the exporter prints its steps on stdout otherwise
        )
        proto = program.model_proto
    except Exception as e:  # the exporter raises its own error types and many of torch's
        raise conversion_error("onnx", contract.arch, model, example, _focused(e)) from e
    _check_produced_opset(proto, opset, contract.arch)

    written = with_versions(
        contract,
        torch=torch.__version__,
        onnx=onnx.__version__,
        onnxruntime=ort.__version__,
        onnxscript=package_version("onnxscript"),
    )
    _embed_contract(proto, written, opset)
    with atomic_path(path) as tmp:
        try:
            # Every initializer inline: one file that travels alone (protobuf caps this at 2 GB,
            # far above any edge model).
            onnx.save_model(proto, str(tmp), save_as_external_data=False)
        except ValueError as e:
            raise ExportError(
                f"{path}: the ONNX model of {contract.arch} could not be written as one file: {e}"
            ) from e
        _validate(tmp, path)
    log.info("wrote %s (%.2f MB, opset %d)", path, path.stat().st_size / 1e6, opset)
    return written


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The `metadata_props` of an ONNX file, as a dict; "edgekd.contract" is the contract's JSON."""
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def supported_opsets() -> range:
    return range(MIN_OPSET, onnx.defs.onnx_opset_version() + 1)


def _check_opset(opset: int) -> None:
    supported = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in supported:
        raise ExportError(
            f"ONNX opset {opset!r} is not supported; choose an opset from {supported.start} to "
            f"{supported.stop - 1} (the newest the installed onnx {onnx.__version__} knows), "
            f"e.g. the default {DEFAULT_OPSET}."
        )


def _check_produced_opset(proto: onnx.ModelProto, opset: int, arch: str) -> None:
    # The exporter translates to opset 18 and then runs a version converter; when that cannot
    # rewrite an op it logs a warning and keeps opset 18 (mobilenetv3's ReduceMean and HardSwish
    # cannot go below 18). A file with another opset than asked for is refused, not shipped.
    produced = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if produced != opset:
        raise ExportError(
            f"{arch}: the torch.onnx exporter produced ONNX opset {produced}, not the requested {opset}: "
            f"its version converter cannot rewrite this model's ops to opset {opset}. Export with opset "
            f"{DEFAULT_OPSET} or newer."
        )


def _embed_contract(proto: onnx.ModelProto, contract: Contract, opset: int) -> None:
    from edgekd import __version__

    onnx.helper.set_model_props(
        proto,
        {
            "edgekd.contract": json.dumps(asdict(contract)),
            "labels": json.dumps(list(contract.labels)),
            "mean": json.dumps(list(contract.mean)),
            "std": json.dumps(list(contract.std)),
            "precision": contract.precision,
        },
    )
    # The exporter names itself (pytorch, its version); the torch version stays in the contract.
    proto.producer_name = "edgekd"
    proto.producer_version = __version__
    proto.doc_string = (
        f"{contract.arch} exported by edgekd {__version__} with the torch.onnx dynamo exporter "
        f"(torch {torch.__version__}, opset {opset}). Input {contract.input_name!r}: "
        f"{'x'.join(map(str, contract.input_shape))} NCHW float32, normalised with mean "
        f"{list(contract.mean)} and std {list(contract.std)}. Output {OUTPUT_NAME!r}: "
        f"{len(contract.labels)} class logits, in the order of the 'labels' metadata."
    )


def _validate(written: Path, path: Path) -> None:
    """The ONNX checker (full check: shape inference too) and an onnxruntime session must accept it."""
    try:
        onnx.checker.check_model(str(written), full_check=True)
    except Exception as e:  # ValidationError, InferenceError, or a C++ error the bindings pass on
        raise ExportError(f"{path}: the exported model fails the ONNX checker: {brief(e)}") from e
    try:
        ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own pybind error types
        raise ExportError(
            f"{path}: onnxruntime {ort.__version__} cannot open the exported model: {brief(e)}; "
            "a lower opset (export_model(..., opset=18)) may be one it supports."
        ) from e


_TRANSLATING = re.compile(r"Error when translating node %(\w+) .*?target=torch\.ops\.([\w.]+)\]?\(", re.S)


def _focused(error: Exception) -> Exception:
    """The exporter's error, cut down to the node it could not translate and the root cause.

    Its message quotes the whole failing FX node, argument names included (`args = (%conv2d, 10)`),
    and `conversion_error` would blame every op named there; the node's own target and the
    innermost cause are what the user needs."""
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    for link in chain:
        match = _TRANSLATING.search(without_colours(str(link)))
        if match:
            node, target = match.groups()
            root = chain[-1]
            cause = "" if root is link else f": {type(root).__name__}: {brief(root, lines=1)}"
            return OnnxTranslationError(f"node {node} ({target}) has no ONNX translation{cause}")
    return error
