"""Turn a converter's failure into an error that names the op, the layer and the format.

Converters fail deep inside their own passes, and their stack traces name internal functions. What a
user needs is which op of *their* model the converter could not handle and where it sits. The model
is captured once with `torch.export` (the graph every converter here starts from); each aten op in
it carries the module path it was called from (`nn_module_stack`). An op whose name appears in the
converter's message is the culprit, reported with its layer path and module class.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgekd.errors import ExportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Culprit:
    op: str  # e.g. "aten.grid_sampler_2d.default"
    layer: str  # module path in the model, e.g. "blocks.3.attn"; "" for the top-level module
    module_type: str  # e.g. "Attention"


def conversion_error(
    fmt: str, arch: str, model: nn.Module, example: torch.Tensor, error: BaseException
) -> ExportError:
    """An `ExportError` for `error`, raised while converting `model` (run on `example`) to `fmt`."""
    message = brief(error)
    culprits = find_culprits(model, example, f"{type(error).__name__}: {error}")
    if not culprits:
        return ExportError(f"{arch} could not be converted to {fmt}: {type(error).__name__}: {message}")
    named = "; ".join(f"op {c.op} in layer {c.layer or '(model)'} ({c.module_type})" for c in culprits[:5])
    more = f" and {len(culprits) - 5} more" if len(culprits) > 5 else ""
    return ExportError(
        f"{arch} could not be converted to {fmt}: the {fmt} converter does not support {named}{more}. "
        f"Replace that layer, or choose another student for this target. Converter said: {message}"
    )


def find_culprits(model: nn.Module, example: torch.Tensor, message: str) -> list[Culprit]:
    """The ops of `model`'s exported graph whose names occur in `message`, with their layers.

    Both the graph as captured and its core-aten decomposition are searched, because converters
    name whichever form they received. An op name matches as a whole word, in any of its spellings
    (`aten.gelu.default`, `aten.gelu`, `aten::gelu`, `gelu`); bare names shorter than 5 letters
    (add, mul, mean) match only in a qualified spelling, so a message saying "add" blames no add."""
    graphs = _graphs(model, example)
    found: dict[tuple[str, str], Culprit] = {}
    for graph in graphs:
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            op = str(node.target)
            if not _named_in(op, message):
                continue
            layer, module_type = _layer_of(node)
            found.setdefault((op, layer), Culprit(op, layer, module_type))
    return list(found.values())


def _graphs(model: nn.Module, example: torch.Tensor) -> list[torch.fx.Graph]:
    try:
        program = torch.export.export(model.eval(), (example,), strict=False)
    except Exception as e:  # the model cannot even be captured: nothing to point at
        log.debug("capture for diagnosis failed: %s", e)
        return []
    graphs = [program.graph]
    try:
        graphs.append(program.run_decompositions().graph)
    except Exception as e:
        log.debug("decomposition for diagnosis failed: %s", e)
    return graphs


def _named_in(op: str, message: str) -> bool:
    # "aten.gelu.default" -> packet "aten.gelu", bare "gelu"
    parts = op.split(".")
    bare = parts[1] if len(parts) >= 2 else op
    spellings = {op, ".".join(parts[:2]), f"aten::{bare}"}
    qualified = [s for s in spellings if "." in s or "::" in s]  # may follow "torch.ops."
    return any(re.search(rf"(?<![\w]){re.escape(s)}(?![\w])", message) for s in qualified) or (
        len(bare) >= 5 and re.search(rf"(?<![\w.:]){re.escape(bare)}(?![\w])", message) is not None
    )


def _layer_of(node: torch.fx.Node) -> tuple[str, str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", "model"
    path, module_type = list(stack.values())[-1]
    path = re.sub(r"^L\['self'\]\.?", "", str(path))
    type_name = getattr(module_type, "__name__", None) or str(module_type).rsplit(".", 1)[-1].strip("'>")
    return path, type_name


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def without_colours(text: str) -> str:
    """`text` without terminal colour codes (some converters colour their messages)."""
    return _ANSI.sub("", text)


def brief(error: BaseException | str, lines: int = 3, chars: int = 400) -> str:
    """The first `lines` non-empty lines of an error's message, without terminal colours, cut at
    `chars`: what a converter's message says, without its stack dump."""
    text = without_colours(str(error))
    kept = " ".join([line.strip() for line in text.splitlines() if line.strip()][:lines])
    if not kept and isinstance(error, BaseException):
        kept = type(error).__name__
    return kept if len(kept) <= chars else kept[: chars - 1] + "…"
