"""TFLite/LiteRT export through litert-torch, with NHWC input as mobile, Pi and microcontroller
pipelines feed it. The only module that imports litert_torch and torchao, with one exception:
`edgekd.quantize` (quantization-aware training) prepares its graph with this module's quantizer.

fp32 converts the model as it is. int8 is PT2E static quantization (symmetric per-channel int8
weights, per-tensor int8 activations observed on the caller's calibration images): the converter
then writes an int8-in/int8-out flatbuffer whose every op is integer, which is what Arm Ethos-U
(`edgekd.vela`) and other integer NPUs need. A model trained quantization-aware
(`edgekd.quantize.prepare_qat`) skips calibration: its fake-quantized graph is converted as trained.

Example:
    >>> # from edgekd.export import export
    >>> # artifact = export(model, "tflite", out, contract=replace(contract, precision="int8"),
    >>> #                   calibration=train_images[:256])
    >>> # artifact.contract.io_dtype
    >>> # 'int8'
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from edgekd._io import atomic_path
from edgekd.errors import ExportError
from edgekd.export import Contract, with_versions

log = logging.getLogger(__name__)

# Calibration runs the observed graph on batches this large; one image at a time is ~100x slower
# (HistogramObserver cost is per call, not per image).
CALIBRATION_BATCH = 32


def export_model(
    model: nn.Module,
    path: Path,
    contract: Contract,
    *,
    calibration: torch.Tensor | None = None,
    qat: bool = False,
) -> Contract:
    # litert-torch draws its own progress on stdout unless told not to; the caller shows ours.
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    import litert_torch

    if contract.layout != "NHWC":
        raise ExportError(f"the tflite exporter writes NHWC input; the contract asks for {contract.layout}.")
    _, height, width, channels = contract.input_shape
    example = torch.zeros(1, height, width, channels)
    if qat:  # an edgekd.quantize.QATModel, whose trained graph was captured channel-last already
        channels_last, quant_config = _convert_qat(model, contract.arch)
    else:
        # The wrapper's NCHW<->NHWC transposes meet the converter's own layout pass and cancel out,
        # so the flatbuffer has no TRANSPOSE at its input (checked by tests/test_vela.py).
        channels_last, quant_config = litert_torch.to_channel_last_io(model, args=[0]).eval(), None
        if contract.precision == "int8":
            if calibration is None:
                raise ExportError("int8 export needs calibration images; pass calibration= to export().")
            channels_last, quant_config = _quantize_int8(channels_last, calibration, contract.arch)
    try:
        edge_model = litert_torch.convert(channels_last, (example,), quant_config=quant_config)
    except Exception as e:
        raise ExportError(
            f"litert-torch could not convert {contract.arch} to tflite ({contract.precision}): "
            f"{type(e).__name__}: {e}"
        ) from e
    with atomic_path(path) as tmp:
        edge_model.export(str(tmp))
        written = replace(contract, input_name="args_0", **_io_quantization(tmp, contract))
    log.info("wrote %s (%.2f MB)", path, path.stat().st_size / 1e6)
    versions = {"torch": torch.__version__, "litert_torch": _version("litert-torch")}
    if quant_config is not None:
        versions["torchao"] = _version("torchao")
    return with_versions(written, **versions)


def _quantize_int8(model: nn.Module, calibration_nchw: torch.Tensor, arch: str):
    """PT2E post-training static quantization, the recipe litert-torch documents: capture, insert
    observers, run the calibration images, replace observers by quantize/dequantize pairs (kept
    unfolded so the converter fuses them into integer ops)."""
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    images = calibration_nchw.permute(0, 2, 3, 1).contiguous()  # the wrapper takes NHWC
    quantizer = int8_quantizer()
    graph, batch = _capture(model, images, arch)
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for chunk in images.split(batch):
                prepared(chunk)
        quantized = convert_pt2e(prepared, fold_quantize=False)
    except Exception as e:
        raise ExportError(f"int8 quantization of {arch} failed: {type(e).__name__}: {e}") from e
    move_exported_model_to_eval(quantized)
    # An exported GraphModule keeps training=True (its train()/eval() are disabled) and the
    # converter warns about it; the graph is already specialised to eval, so set the flag directly.
    nn.Module.train(quantized, False)
    log.info("calibrated %s on %d images", arch, len(images))
    return quantized, QuantConfig(pt2e_quantizer=quantizer)


def int8_quantizer(*, qat: bool = False):
    """The quantizer of every int8 export: symmetric per-channel int8 weights, per-tensor int8
    activations, with `_integer_quantizer`'s all-integer annotations. `qat=True` gives the same
    annotations and int8 ranges with fake-quantize modules in place of observers, so a model trained
    quantization-aware (`edgekd.quantize`) trains exactly the arithmetic the converter ships."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

    return _integer_quantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False, is_qat=qat)
    )


def _convert_qat(qat_model: nn.Module, arch: str):
    """A trained `edgekd.quantize.QATModel` -> its quantized NHWC graph and the converter config.

    The prepared graph is copied first, so converting leaves the caller's model trainable."""
    import copy

    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    try:
        quantized = convert_pt2e(copy.deepcopy(qat_model.graph), fold_quantize=False)
    except Exception as e:
        raise ExportError(
            f"converting the QAT model of {arch} to int8 failed: {type(e).__name__}: {e}"
        ) from e
    move_exported_model_to_eval(quantized)
    nn.Module.train(quantized, False)  # as in _quantize_int8: the exported graph refuses train()
    return quantized, QuantConfig(pt2e_quantizer=qat_model.quantizer)


def _integer_quantizer():
    """litert-torch's PT2EQuantizer, extended so that common vision graphs come out all-integer.

    The stock quantizer annotates conv/linear/pooling/add/mul/cat/sigmoid/softmax. Everything else
    stays float between a DEQUANTIZE and a QUANTIZE, which integer NPUs cannot run (Vela 5.2 even
    refuses a float HARD_SWISH outright). Two additions, both measured with Vela on Ethos-U55-256
    at 96 px: mobilenetv3_small_050 went from a Vela error to 100 % NPU ops, lcnet_050 from 90 %.
      * `_NPU_INT8_OPS` that TFLite runs in int8 get observers on their inputs and output: the
        squeeze-excite `mean`, hard-swish, ReLU/ReLU6 on their own, GELU, and `+`/`*` matched by
        aten op (the stock annotators match Python callables, which non-strict capture loses).
      * hard-sigmoid and SiLU lower to two TFLite ops each, whose middle tensor would have no
        scale; they are rewritten first into relu6(x + 3) * 1/6 and x * sigmoid(x), whose parts
        are each annotated.
    """
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from litert_torch.quantize.pt2e_quantizer_utils import (
        _is_annotated,
        get_input_act_qspec,
        get_output_act_qspec,
        propagate_annotation,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    aten = torch.ops.aten
    npu_int8_ops = {
        aten.mean.dim,
        aten.hardswish.default,
        aten.hardtanh.default,
        aten.relu.default,
        aten.gelu.default,
        aten.add.Tensor,
        aten.mul.Tensor,
    }

    def is_float_tensor(node) -> bool:
        value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        return isinstance(value, torch.Tensor) and value.is_floating_point()

    class IntegerQuantizer(PT2EQuantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            _decompose_for_int8(model)
            return super().transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            act_in, act_out = (
                get_input_act_qspec(self.global_config),
                get_output_act_qspec(self.global_config),
            )
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target not in npu_int8_ops or _is_annotated([node]):
                    continue
                if not is_float_tensor(node):
                    continue
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: act_in for a in node.args if is_float_tensor(a)},
                    output_qspec=act_out,
                    _annotated=True,
                )
            propagate_annotation(model)  # views and reshapes share their input's scale
            return model

    return IntegerQuantizer()


def _decompose_for_int8(model: torch.fx.GraphModule) -> None:
    """hardsigmoid(x) -> hardtanh(x + 3, 0, 6) * (1/6); silu(x) -> x * sigmoid(x). Exact in float."""
    aten = torch.ops.aten
    graph = model.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.hardsigmoid.default, aten.silu.default):
            continue
        x = node.args[0]
        with graph.inserting_before(node):
            if node.target == aten.hardsigmoid.default:
                shifted = graph.call_function(aten.add.Tensor, (x, 3.0))
                clipped = graph.call_function(aten.hardtanh.default, (shifted, 0.0, 6.0))
                out = graph.call_function(aten.mul.Tensor, (clipped, 1.0 / 6.0))
                new = (shifted, clipped, out)
            else:
                gate = graph.call_function(aten.sigmoid.default, (x,))
                out = graph.call_function(aten.mul.Tensor, (x, gate))
                new = (gate, out)
        for created in new:  # same shape and dtype as the op they replace
            created.meta.update(
                {k: v for k, v in node.meta.items() if k in ("val", "tensor_meta", "stack_trace")}
            )
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        changed = True
    if changed:
        graph.lint()
        model.recompile()


def _capture(
    model: nn.Module,
    images: torch.Tensor,
    arch: str,
    *,
    max_batch: int | None = CALIBRATION_BATCH,
    allow_batch_one: bool = True,
) -> tuple[torch.fx.GraphModule, int]:
    """The aten graph PT2E annotates, and the batch size it accepts.

    Strict (TorchDynamo) capture comes first: it records each node's `source_fn_stack`, which the
    stock litert annotators use to find `+`, `*`, `cat` and pooling (non-strict capture left
    mobilenetv2_050's residual adds in float: 25 % CPU ops under Vela; strict: 0 %). A dynamic
    batch dimension (up to `max_batch`; None: unbounded) lets calibration run in batches; one image
    at a time is the last resort, unless `allow_batch_one` is False (QAT trains in batches)."""
    batch = torch.export.Dim("batch", min=1, max=None if max_batch is None else max(max_batch, 2))
    attempts = [
        (True, CALIBRATION_BATCH),
        (False, CALIBRATION_BATCH),
        *([(True, 1), (False, 1)] if allow_batch_one else []),
    ]
    errors = []
    for strict, size in attempts:
        dynamic = size > 1
        try:
            program = torch.export.export(
                model,
                (images[:2] if dynamic else images[:1],),
                dynamic_shapes=(({0: batch},),) if dynamic else None,
                strict=strict,
            )
        except Exception as e:  # torch.export raises many types
            errors.append(f"strict={strict}, batch={'dynamic' if dynamic else 1}: {type(e).__name__}: {e}")
            continue
        if errors:
            log.warning(
                "capturing %s for int8 needed a fallback (strict=%s, batch %s)%s; first failure: %s",
                arch,
                strict,
                "dynamic" if dynamic else 1,
                "" if strict else ": ops the quantizer finds by source (cat, pooling) may stay float",
                errors[0],
            )
        return program.module(), size
    raise ExportError(
        f"torch.export could not capture {arch} for int8 quantization; tried {len(errors)} ways:\n  "
        + "\n  ".join(errors)
    )


def _io_quantization(path: Path, contract: Contract) -> dict:
    """io_dtype and (scale, zero_point) of the written file's input and output tensors."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    dtypes = {t["dtype"].__name__ for t in tensors}
    if contract.precision != "int8":
        return {"io_dtype": "/".join(sorted(dtypes))}
    if dtypes != {"int8"}:
        raise ExportError(
            f"the int8 export of {contract.arch} has {'/'.join(sorted(dtypes))} input/output, not int8: "
            "the converter left the model boundary in float."
        )
    scale_zero = [(float(t["quantization"][0]), int(t["quantization"][1])) for t in tensors]
    return {"io_dtype": "int8", "input_quant": scale_zero[0], "output_quant": scale_zero[1]}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
