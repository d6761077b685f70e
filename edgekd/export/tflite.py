"""TFLite/LiteRT export through litert-torch, with NHWC input as mobile, Pi and microcontroller
pipelines feed it. The only module that imports litert_torch and torchao, with one exception:
`edgekd.quantize` (quantization-aware training) prepares its graph with this module's quantizer.

fp32 converts the model as it is. fp16 stores the weights as float16 (half the file) with float32
input, output and arithmetic: litert-torch's `full_fp16_recipe` (ai-edge-quantizer's float casting),
which puts a DEQUANTIZE after each weight that the runtime folds when it loads the model. int8 is
PT2E static quantization (symmetric per-channel int8 weights, per-tensor int8 activations observed
on the caller's calibration images): the converter then writes an int8-in/int8-out flatbuffer whose
every op is integer, which is what Arm Ethos-U (`edgekd.vela`) and other integer NPUs need. A model
trained quantization-aware (`edgekd.quantize.prepare_qat`) skips calibration: its fake-quantized
graph is converted as trained.

Every file carries its contract as JSON in the flatbuffer's own `metadata` list, under the name
"edgekd.contract", so the file alone says how to feed it (`read_tflite_metadata`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn

from edgekd._io import write_bytes_atomic
from edgekd.artifact import Contract, with_versions
from edgekd.errors import ExportError
from edgekd.export import converter_output, package_version
from edgekd.export.diagnose import conversion_error

log = logging.getLogger(__name__)

# Calibration runs the observed graph on batches this large; one image at a time is ~100x slower
# (HistogramObserver cost is per call, not per image).
CALIBRATION_BATCH = 32
# The name of the flatbuffer metadata entry that holds the contract's JSON.
CONTRACT_METADATA = "edgekd.contract"


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
        content = litert_torch.convert(channels_last, (example,), quant_config=quant_config).model_content()
    except Exception as e:  # the converter raises many types from its passes
        # Diagnose on the caller's NCHW model: its layer paths are the ones the user knows.
        raise conversion_error(
            "tflite", contract.arch, model, example.permute(0, 3, 1, 2).contiguous(), e
        ) from e
    versions = {"torch": torch.__version__, "litert_torch": package_version("litert-torch")}
    if quant_config is not None:
        versions["torchao"] = package_version("torchao")
    if contract.precision == "fp16":
        content = _fp16_weights(content, contract.arch)
        versions["ai_edge_quantizer"] = package_version("ai-edge-quantizer")
    written = with_versions(replace(contract, **_io_quantization(content, contract)), **versions)
    content = embed_tflite_metadata(
        content,
        {CONTRACT_METADATA: json.dumps(asdict(written)).encode()},
        io_names=(written.input_name, written.output_name),
    )
    write_bytes_atomic(path, content)
    log.info("wrote %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return written


def read_tflite_metadata(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """The entries of a .tflite file's `metadata` list, by name. Besides edgekd's "edgekd.contract"
    (JSON) the converter writes its own, e.g. "min_runtime_version".
    """
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ExportError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier).")
    model = schema.Model.GetRootAs(data, 0)
    entries = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset() > 1:  # a large model keeps buffer data after the flatbuffer
            value = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
        else:
            value = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
        entries[entry.Name().decode()] = value
    return entries


def embed_tflite_metadata(
    content: bytes, entries: dict[str, bytes], *, io_names: tuple[str, str] | None = None
) -> bytes:
    """`content` (a .tflite flatbuffer) with `entries` added to its `metadata` list, replacing
    entries of the same name, and with `io_names` (input, output) given to the one input and output
    tensor (the converter calls them `serving_default_args_0:0` and `StatefulPartitionedCall:0`) and
    to their signature entries. The model is rebuilt with flatbuffers' object API, as
    ai-edge-quantizer does; every buffer's data stays 16-byte aligned, so runtimes that read weights
    in place (TFLite Micro) get aligned tensors. Flatbuffers cap this at 2 GB, far above any edge
    model."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    aligned = _aligned_buffer_class()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    if io_names is not None:
        _name_io(model, *io_names)
    model.buffers = [aligned.of(b) for b in model.buffers]
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() not in entries]
    for name, value in entries.items():
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers)
        model.buffers.append(aligned.of(schema.BufferT(), value))
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name_io(model, input_name: str, output_name: str) -> None:
    """Name the main subgraph's single input and output tensors, and the signature's entries for them."""
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ExportError(
            f"the converted model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
            "edgekd exports classifiers with one image input and one logits output."
        )
    renames = {graph.inputs[0]: input_name, graph.outputs[0]: output_name}
    for index, name in renames.items():
        graph.tensors[index].name = name.encode()
    for signature in model.signatureDefs or []:
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            if entry.tensorIndex in renames:
                entry.name = renames[entry.tensorIndex].encode()


def _fp16_weights(content: bytes, arch: str) -> bytes:
    """litert-torch's fp16 recipe (float16 weights, float32 compute) applied to a float flatbuffer.

    `litert_torch.convert(quant_config=full_fp16_recipe())` does the same but prints a report on
    stdout and progress bars on stderr. Called directly, the quantizer turns the report off; the bar
    of its model rewrite has no switch (tqdm on stderr for models of over 100 tensors), so stderr is
    captured while it runs and passed on to the log."""
    from ai_edge_quantizer import quantizer
    from litert_torch.generative.quantize import quant_recipes
    from litert_torch.quantize import translate_recipe

    recipe = translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe)
    try:
        with converter_output(f"ai-edge-quantizer (fp16 weights of {arch})"):
            result = quantizer.Quantizer(content, recipe).quantize(
                enable_progress_bar=False, enable_progress_report=False
            )
    except Exception as e:
        raise ExportError(f"fp16 weight conversion of {arch} failed: {type(e).__name__}: {e}") from e
    return bytes(result.quantized_model)


def _aligned_buffer_class():
    from ai_edge_litert import schema_py_generated as schema

    class AlignedBuffer(schema.BufferT):
        """A flatbuffer `Buffer` whose data vector starts on a 16-byte boundary (the schema asks for
        `force_align: 16`, which the generated Python `Pack` ignores)."""

        @classmethod
        def of(cls, buffer, data: bytes | None = None):
            aligned = cls()
            aligned.data = buffer.data if data is None else data
            aligned.offset, aligned.size = buffer.offset, buffer.size
            return aligned

        def Pack(self, builder):  # the flatbuffers object API names it so
            if self.data is None or not len(self.data):
                return super().Pack(builder)
            payload = bytes(self.data)  # uint8 array, bytes or bytearray
            builder.StartVector(1, len(payload), 16)  # as CreateNumpyVector does, 16-aligned
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data = builder.EndVector()
            schema.BufferStart(builder)
            schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBuffer


def _quantize_int8(model: nn.Module, calibration_nchw: torch.Tensor, arch: str):
    """PT2E post-training static quantization, the recipe litert-torch documents: capture, insert
    observers, run the calibration images, replace observers by quantize/dequantize pairs (kept
    unfolded so the converter fuses them into integer ops)."""
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    images = calibration_nchw.permute(0, 2, 3, 1).contiguous()  # the wrapper takes NHWC
    quantizer = int8_quantizer()
    graph, batch = capture(model, images, arch)
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


def capture(
    model: nn.Module,
    images: torch.Tensor,
    arch: str,
    *,
    max_batch: int | None = CALIBRATION_BATCH,
    allow_batch_one: bool = True,
) -> tuple[torch.fx.GraphModule, int]:
    """The aten graph PT2E annotates, and the batch size it accepts. Public because quantization-aware
    training (`edgekd.quantize.prepare_qat`) must capture its graph exactly as this exporter does.

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


def _io_quantization(content: bytes, contract: Contract) -> dict:
    """io_dtype and (scale, zero_point) of the converted model's input and output tensors."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
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
