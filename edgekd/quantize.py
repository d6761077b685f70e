"""Quantization-aware training (QAT) for the int8 TFLite export.

`prepare_qat` captures a float model with the exporter's own int8 quantizer
(`edgekd.export.tflite.int8_quantizer(qat=True)`: symmetric per-channel int8 weights, per-tensor
int8 activations, the same all-integer annotations as post-training int8) and inserts fake-quantize
modules, so training sees the rounding and clipping the int8 file will do. The returned `QATModel`
takes NCHW float input like the original, so `edgekd.distill.trainer.train` fine-tunes it unchanged
(typically with the KD loss against the fp32 model as teacher); `edgekd.export.export` then converts
the trained graph itself, with no calibration, into an int8-in/int8-out `.tflite`.

It lives beside `export/` rather than in `distill/` because it is the export's quantizer made
trainable: it depends on `export.tflite`, and the trainer does not need to know it exists.
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from edgekd.errors import DependencyError, ExportError

log = logging.getLogger(__name__)

# --- the PT2E QAT shim ------------------------------------------------------------------------------
#
# torch 2.14 + torchao 0.18 + litert-torch 0.10: litert's conv-bn annotator (used only when the
# quantizer has is_qat=True) passes a plain function to torchao's `_get_aten_graph_module_for_pattern`,
# which hands it to `torch.export.export`; torch.export accepts only nn.Modules now, so
# `prepare_qat_pt2e` fails with "Expected `mod` to be an instance of `torch.nn.Module`, got function".
# torchao's own callers wrap their patterns in `WrapperModule`; the shim does the same for every
# caller. litert imported the function by name, so its module holds its own reference to patch.
# tests/test_qat.py::test_upstream_still_needs_the_pt2e_qat_shim fails once upstream fixes this:
# then delete this section.

_PATTERN_FN = "_get_aten_graph_module_for_pattern"
_PATTERN_FN_HOMES = ("torchao.quantization.pt2e.utils", "litert_torch.quantize.pt2e_quantizer_utils")
_BUG_MESSAGE = "to be an instance of `torch.nn.Module`"
# module name -> the function the shim replaced there; tests put these back to see the bug.
UNPATCHED: dict[str, Callable[..., Any]] = {}
_shim_state: bool | None = None  # None: not decided yet; then whether the shim is in place


def apply_pt2e_qat_shim() -> bool:
    """Make `prepare_qat_pt2e` work with the litert quantizer, if (and only if) this torch/torchao
    needs it; idempotent. Returns whether the shim is in place.

    Detection is a probe, not a version check: torchao's pattern exporter is called on a plain
    function once per process; when broken it fails fast, as torch.export refuses it before tracing.

    Example:
        >>> from edgekd.quantize import apply_pt2e_qat_shim
        >>> apply_pt2e_qat_shim() == apply_pt2e_qat_shim()
        True
    """
    global _shim_state
    if _shim_state is not None:
        return _shim_state
    try:
        homes = [importlib.import_module(name) for name in _PATTERN_FN_HOMES]
    except ImportError as e:
        raise DependencyError(
            f"quantization-aware training needs litert-torch and torchao ({e.name} is missing); "
            "install them with: pip install edgekd"
        ) from e
    if not _pattern_export_refuses_functions(getattr(homes[0], _PATTERN_FN)):
        log.debug("PT2E QAT shim not needed: torchao's pattern exporter accepts plain functions")
        _shim_state = False
        return False
    for module in homes:
        current = getattr(module, _PATTERN_FN)
        if getattr(current, "_edgekd_shim", False):
            continue  # patched already (e.g. this module was reloaded)
        UNPATCHED[module.__name__] = current
        setattr(module, _PATTERN_FN, _wrap_patterns_in_modules(current))
    log.debug("PT2E QAT shim applied: %s now wraps plain functions in nn.Module", _PATTERN_FN)
    _shim_state = True
    return True


def _wrap_patterns_in_modules(original: Callable[..., Any]) -> Callable[..., Any]:
    from torchao.quantization.pt2e.export_utils import WrapperModule

    @functools.wraps(original)
    def exported_pattern(pattern, example_inputs, *args, **kwargs):
        if not isinstance(pattern, nn.Module):
            pattern = WrapperModule(pattern)  # exactly what torchao's own callers pass
        return original(pattern, example_inputs, *args, **kwargs)

    exported_pattern._edgekd_shim = True  # type: ignore[attr-defined]
    return exported_pattern


def _probe_pattern(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def _pattern_export_refuses_functions(pattern_exporter: Callable[..., Any]) -> bool:
    try:
        pattern_exporter(_probe_pattern, (torch.zeros(2),))
    except Exception as e:  # torch.export raises ValueError today; any type with that message counts
        if _BUG_MESSAGE in str(e):
            return True
        # Another failure is not the bug this shim fixes; prepare_qat will report the real error.
        log.debug("PT2E pattern probe failed differently, shim not applied: %s: %s", type(e).__name__, e)
    return False


# --- quantization-aware training --------------------------------------------------------------------


class QATModel(nn.Module):
    """A float model captured with fake-quantized int8 weights and activations, trainable like the
    original: NCHW float in, logits out. Made by `prepare_qat`; exported by `edgekd.export.export`.

    Attributes:
        graph: the prepared PT2E graph. It takes NHWC input, as the `.tflite` does, because it
            wraps the model channel-last exactly as the post-training int8 export does; `forward`
            transposes the NCHW batch for it.
        quantizer: the quantizer that annotated `graph`; the converter needs it again.
        input_hwc: (height, width, channels) it was prepared for.
    """

    format = "tflite"  # whose quantizer it trains with; export() refuses other formats

    def __init__(self, graph: torch.fx.GraphModule, quantizer: Any, arch: str, input_hwc: tuple[int, ...]):
        super().__init__()
        self.graph = graph
        self.quantizer = quantizer
        self.arch = arch
        self.input_hwc = tuple(input_hwc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or (*x.shape[2:], x.shape[1]) != self.input_hwc:
            height, width, channels = self.input_hwc
            raise ExportError(
                f"the QAT model of {self.arch} takes NCHW batches of shape (N, {channels}, {height}, "
                f"{width}), as prepared; got {tuple(x.shape)}."
            )
        return self.graph(x.permute(0, 2, 3, 1))

    def train(self, mode: bool = True) -> QATModel:
        # An exported graph refuses train()/eval(); torchao swaps its batch-norm and dropout ops
        # between their training and inference forms instead.
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
        from torchao.quantization.pt2e.fake_quantize import disable_observer, enable_observer

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        # Fake-quantize modules observe on every call whatever the mode, so evaluating on validation
        # images would move the ranges that ship; eval freezes them, train resumes observing.
        self.graph.apply(enable_observer if mode else disable_observer)
        self.training = mode
        return self


def prepare_qat(model: nn.Module, example_nchw: torch.Tensor, *, arch: str | None = None) -> QATModel:
    """Capture `model` for quantization-aware training with the int8 TFLite export's quantizer.

    `model` is copied, never changed, so it can teach the returned model. The copy is captured in
    training mode: the QAT quantizer matches conv -> batch-norm (-> ReLU) only in its training form
    and fuses each into torchao's QAT pattern, which fake-quantizes the conv weight scaled by the
    batch-norm, i.e. the folded weight that the converter will write. The batch dimension is captured
    dynamic, so training, evaluation and a last smaller batch all run.

    Args:
        model: a float model taking NCHW input, as for `edgekd.export.export`.
        example_nchw: one or more normalised input images, (N, C, H, W); fixes the input size.
        arch: the name used in messages; the class name by default.

    Example:
        >>> import torch, torch.nn as nn
        >>> from edgekd.quantize import prepare_qat
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        ...                     nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
        >>> qat = prepare_qat(net, torch.randn(2, 3, 8, 8))
        >>> qat(torch.randn(5, 3, 8, 8)).shape
        torch.Size([5, 10])
    """
    arch = arch or type(model).__name__
    if not isinstance(example_nchw, torch.Tensor) or example_nchw.ndim != 4:
        raise ExportError(
            f"prepare_qat needs example images as an (N, C, H, W) float tensor; got "
            f"{getattr(example_nchw, 'shape', type(example_nchw).__name__)}."
        )
    if not example_nchw.is_floating_point():
        raise ExportError(
            f"prepare_qat's example images have dtype {example_nchw.dtype}; pass float images "
            "normalised like the model's input."
        )
    _refuse_zero_batchnorm_weights(model, arch)
    apply_pt2e_qat_shim()
    import litert_torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgekd.export.tflite import capture, int8_quantizer

    # A dynamic batch dimension needs an example of at least 2 (torch.export specialises size 1).
    examples = example_nchw.detach().float()[:2]
    examples = examples.repeat(2, 1, 1, 1) if len(examples) == 1 else examples
    examples = examples.permute(0, 2, 3, 1).contiguous()  # the channel-last wrapper takes NHWC
    channels_last = litert_torch.to_channel_last_io(copy.deepcopy(model), args=[0]).train()
    graph, _ = capture(channels_last, examples, arch, max_batch=None, allow_batch_one=False)
    quantizer = int8_quantizer(qat=True)
    try:
        prepared = prepare_qat_pt2e(graph, quantizer)
    except Exception as e:
        raise ExportError(
            f"preparing {arch} for quantization-aware training failed: {type(e).__name__}: {e}"
        ) from e
    log.info("prepared %s for quantization-aware int8 training", arch)
    return QATModel(prepared, quantizer, arch, tuple(examples.shape[1:])).train()


def _refuse_zero_batchnorm_weights(model: nn.Module, arch: str) -> None:
    """torchao's QAT conv -> batch-norm pattern divides the conv output by gamma / sqrt(var + eps):
    a gamma of exactly 0 turns training into NaN after one step, silently. timm zero-initialises the
    last batch-norm of each residual block, so an untrained timm model has them."""
    batchnorms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    zero = [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, batchnorms) and m.weight is not None and bool((m.weight == 0).any())
    ]
    if zero:
        shown = ", ".join(zero[:3]) + (f" and {len(zero) - 3} more" if len(zero) > 3 else "")
        raise ExportError(
            f"{arch} has batch-norm layers with a zero weight (gamma): {shown}. Quantization-aware "
            "training divides by it and would produce NaN; train the float model first (timm "
            "zero-initialises the last batch-norm of each residual block) and prepare that."
        )
