"""Static cost of a model, read from its traced graph (`torch.export`) on an input of the given size.

Per op: kind (edgekd's op vocabulary, used by target op constraints), MACs, parameters and weight
bytes, input/output activation bytes. For the graph: an op inventory, model bytes per precision, and
the peak live activation memory from the tensors' lifetimes — each tensor is allocated when its op
runs and freed after its last reader; views share their base's storage.

The deployed graph is what a converter emits: BatchNorm after a convolution is folded into it, and a
ReLU/ReLU6 right after a convolution, linear, add or mul is fused into that op (TFLite, Core ML and
OpenVINO all do both). Folded and fused ops cost no time and no memory; `LayerCost.fused` marks them.
Padding that TFLite's SAME/VALID cannot express (PyTorch's symmetric padding on a strided convolution
or pool) becomes an explicit PAD op with its own tensor, as litert-torch emits it. ADD/MUL write into
an input they are its last reader of. The deployed tensors are then laid out in one arena by TFLite's
own greedy-by-size best-fit planner (`edgekd.arena`; Pisarchyk & Lee, "Efficient Memory Management for
Deep Neural Net Inference", 2020; tensorflow/lite/arena_planner.cc): `arena_bytes` is that layout's size
and `peak_activation_bytes` the lower bound from lifetimes alone. The graph input stays allocated for the
whole run and outputs to its end, as in TFLite's interpreter.

Example:
    >>> import torch.nn as nn
    >>> from edgekd.analysis import analyze
    >>> analyze(nn.Conv2d(3, 8, 3, padding=1), input_size=4).macs  # 8*4*4 outputs x 3*3*3 each
    3456
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from edgekd.arena import Buffer, Step, deployed_buffers, peak_of, plan_arena

BYTES_PER_VALUE = {"fp32": 4, "fp16": 2, "int8": 1}

# aten op name (without overload) -> edgekd op kind. Convolutions are split by their groups below.
_KINDS = {
    "conv2d": "conv2d",
    "convolution": "conv2d",
    "linear": "linear",
    "addmm": "linear",
    "matmul": "matmul",
    "bmm": "matmul",
    "mm": "matmul",
    "baddbmm": "matmul",
    "scaled_dot_product_attention": "matmul",
    "batch_norm": "batch_norm",
    "_native_batch_norm_legit_no_training": "batch_norm",
    "layer_norm": "layer_norm",
    "group_norm": "group_norm",
    "relu": "relu",
    "relu6": "relu6",
    "hardtanh": "relu6",
    "clamp": "relu6",
    "hardswish": "hardswish",
    "hardsigmoid": "hardsigmoid",
    "sigmoid": "sigmoid",
    "silu": "silu",
    "gelu": "gelu",
    "tanh": "tanh",
    "softmax": "softmax",
    "_softmax": "softmax",
    "add": "add",
    "mul": "mul",
    "sub": "sub",
    "div": "div",
    "rsub": "sub",
    "mean": "mean",
    "sum": "mean",
    "avg_pool2d": "avg_pool",
    "max_pool2d": "max_pool",
    "max_pool2d_with_indices": "max_pool",
    "adaptive_avg_pool2d": "adaptive_avg_pool",
    "cat": "concat",
    "permute": "transpose",
    "transpose": "transpose",
    "t": "transpose",
    "contiguous": "transpose",
    "pad": "pad",
    "constant_pad_nd": "pad",
    "upsample_nearest2d": "resize",
    "upsample_bilinear2d": "resize",
    "slice": "slice",
    "select": "slice",
    "index": "slice",
    "chunk": "slice",
    "split": "slice",
    "split_with_sizes": "slice",
    "unbind": "slice",
}
# Ops that only reinterpret their input's storage: no time, no new memory.
_VIEWS = {
    "view", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze", "expand", "alias",
    "detach", "dropout", "clone", "identity", "getitem", "_assert_tensor_metadata", "lift_fresh_copy",
}  # fmt: skip
CONVOLUTIONS = ("conv2d", "pointwise_conv2d", "depthwise_conv2d", "grouped_conv2d")
_FOLDS_INTO_CONV = {"batch_norm"}
_FUSABLE_ACTIVATIONS = {"relu", "relu6"}
_FUSING_PRODUCERS = {*CONVOLUTIONS, "linear", "add", "mul"}

# Cost classes of the latency model: op kinds that run at a similar share of peak. Depthwise kernels
# wider than 5x5 get their own class: XNNPACK's unipass depthwise kernels stop at 25 taps.
COST_CLASS = {
    "conv2d": "conv",
    "pointwise_conv2d": "pointwise",
    "depthwise_conv2d": "depthwise",
    "grouped_conv2d": "grouped",
    "linear": "linear",
    "matmul": "matmul",
    "layer_norm": "norm",
    "group_norm": "norm",
    "batch_norm": "norm",
    "softmax": "norm",
    "gelu": "activation",
    "silu": "activation",
    "sigmoid": "activation",
    "tanh": "activation",
    "hardswish": "activation",
    "hardsigmoid": "activation",
    "avg_pool": "pool",
    "max_pool": "pool",
    "adaptive_avg_pool": "pool",
    "mean": "pool",
    "concat": "data",
    "transpose": "data",
    "pad": "data",
    "resize": "data",
    "slice": "data",
}
COST_CLASSES = (
    "conv", "pointwise", "depthwise", "depthwise_large", "grouped", "linear", "matmul", "pool",
    "activation", "elementwise", "norm", "data",
)  # fmt: skip
LARGE_DEPTHWISE_TAPS = 25


@dataclass(frozen=True)
class LayerCost:
    name: str  # the module that ran it, then the op: "layer1.0.conv1:conv2d"
    kind: str
    macs: int
    work: int  # 2 x MACs for MAC ops; one op per output element (per input element for reductions)
    params: int
    input_bytes: int  # activations read, fp32
    output_bytes: int  # activations written, fp32
    output_shape: tuple[int, ...]
    fused: bool = False  # folded or fused into the op before it by the converter
    kernel_taps: int = 0  # kh x kw of a convolution

    @property
    def cost_class(self) -> str:
        if self.kind == "depthwise_conv2d" and self.kernel_taps > LARGE_DEPTHWISE_TAPS:
            return "depthwise_large"
        return COST_CLASS.get(self.kind, "elementwise")

    def weight_bytes(self, precision: str = "fp32") -> int:
        return self.params * BYTES_PER_VALUE[precision]


@dataclass(frozen=True)
class ModelCost:
    params: int
    macs: int
    input_size: int
    layers: tuple[LayerCost, ...]
    peak_activation_bytes: int  # deployed graph, fp32 activations: the most bytes live at once
    peak_activation_bytes_unfused: int  # every traced op keeps its own output (eager PyTorch)
    arena_bytes: int  # the deployed tensors laid out by TFLite's greedy-by-size planner

    @property
    def dispatched(self) -> tuple[LayerCost, ...]:
        """The ops a runtime executes once folding and fusion are done."""
        return tuple(layer for layer in self.layers if not layer.fused)

    @property
    def dispatched_layers(self) -> int:
        return len(self.dispatched)

    @property
    def op_inventory(self) -> dict[str, int]:
        return dict(Counter(layer.kind for layer in self.dispatched).most_common())

    def weight_bytes(self, precision: str) -> int:
        return self.params * BYTES_PER_VALUE[precision]

    def arena_bytes_at(self, precision: str) -> int:
        """fp16 TFLite keeps fp32 activations (only weights shrink); int8 stores one byte per value."""
        return self.arena_bytes // (4 if precision == "int8" else 1)

    def peak_memory_bytes(self, precision: str) -> int:
        """Weights plus the activation arena: what the device must hold at once."""
        return self.weight_bytes(precision) + self.arena_bytes_at(precision)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCost:
        layers = tuple(
            LayerCost(**{**layer, "output_shape": tuple(layer["output_shape"])}) for layer in data["layers"]
        )
        return cls(**{**data, "layers": layers})


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    if hasattr(target, "_schema"):
        name = target._schema.name.split("::")[-1]
    return name.rstrip("_") if name not in ("__getitem__",) else "getitem"


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_numel(v) for v in value)
    return 0


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return tuple(value[0].shape)
    return ()


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _conv_kind(node: torch.fx.Node, weight: torch.Tensor) -> str:
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    out_channels = weight.shape[0]
    if groups > 1 and groups == out_channels and weight.shape[1] == 1:
        return "depthwise_conv2d"
    if groups > 1:
        return "grouped_conv2d"
    return "pointwise_conv2d" if math.prod(weight.shape[2:]) == 1 else "conv2d"


def _macs(kind: str, node: torch.fx.Node, out: Any, arg_values: list[Any]) -> int:
    out_numel = _numel(out)
    if kind in CONVOLUTIONS:
        weight = arg_values[1]
        return out_numel * math.prod(weight.shape[1:])
    if kind == "linear":
        weight = arg_values[1] if _op_name(node) == "linear" else arg_values[2]
        return out_numel * weight.shape[-1]
    if kind == "matmul":
        first = arg_values[1] if _op_name(node) == "baddbmm" else arg_values[0]
        if _op_name(node) == "scaled_dot_product_attention":
            q, k = arg_values[0], arg_values[1]
            return 2 * q.numel() * k.shape[-2]
        return out_numel * first.shape[-1]
    return 0


def _work(kind: str, macs: int, out: Any, arg_values: list[Any]) -> int:
    if macs:
        return 2 * macs
    if kind in ("mean", "avg_pool", "max_pool", "adaptive_avg_pool"):
        return _numel(arg_values[0]) if arg_values else _numel(out)
    return _numel(out)


def _trace(model: nn.Module, example: torch.Tensor):
    with torch.no_grad():
        return torch.export.export(model, (example,))


def analyze(model: nn.Module, input_size: int, in_chans: int = 3) -> ModelCost:
    """Trace `model` on one `input_size`² sample and cost every op of its graph."""
    was_training = model.training
    model.eval()
    try:
        program = _trace(model, torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    weights: dict[str, torch.Tensor] = {}  # placeholder name -> parameter or buffer
    for spec in program.graph_signature.input_specs:
        if spec.target is not None and spec.target in state:
            weights[spec.arg.name] = state[spec.target]
    param_names = {
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind == torch.export.graph_signature.InputKind.PARAMETER
    }

    nodes = list(program.graph.nodes)
    layers: list[LayerCost] = []
    steps: list[Step] = []  # the deployed ops in execution order
    shares: dict[str, str] = {}  # a view or in-place op -> the node whose storage it uses
    fused_into: dict[str, str] = {}  # a folded/fused op -> the op it became part of
    eager_in_place: dict[str, str] = {}  # an in-place aten op -> the argument it overwrites
    kind_of: dict[str, str] = {}  # deployed tensor -> the kind of the op that wrote it

    def deployed(name: str) -> str:
        while name in shares or name in fused_into:
            name = shares.get(name) or fused_into[name]
        return name

    for node in nodes:
        if node.op != "call_function":
            continue
        op = _op_name(node)
        out = node.meta.get("val")
        tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        for a in node.args:
            if isinstance(a, (list, tuple)):
                tensor_args += [x for x in a if isinstance(x, torch.fx.Node)]
        values = [weights.get(a.name, a.meta.get("val")) for a in tensor_args]
        activations = [a for a in tensor_args if a.name not in weights]
        if op in _VIEWS:
            if activations:
                shares[node.name] = activations[0].name
            continue
        if isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable and activations:
            # relu_, add_: eager PyTorch writes into the first argument; a converter gives the op its
            # own output unless the op fuses or is one TFLite runs in place (handled below).
            eager_in_place[node.name] = activations[0].name
        kind = _KINDS.get(op, op)
        if kind == "conv2d":
            kind = _conv_kind(node, values[1])
        macs = _macs(kind, node, out, values)
        producer = kind_of.get(deployed(activations[0].name)) if activations else None
        fused = (
            bool(activations)
            and len(activations[0].users) == 1
            and (
                (kind in _FOLDS_INTO_CONV and producer in (*CONVOLUTIONS, "linear"))
                or (kind in _FUSABLE_ACTIVATIONS and producer in _FUSING_PRODUCERS)
            )
        )
        module = _module_path(node)
        reads = [deployed(a.name) for a in activations]
        if fused:
            fused_into[node.name] = activations[0].name
        else:
            padded = _explicit_pad_shape(op, node, values[0]) if activations else None
            if padded is not None:
                pad_bytes = 4 * math.prod(padded)
                layers.append(
                    LayerCost(
                        f"{module}:pad", "pad", 0, pad_bytes // 4, 0, 4 * values[0].numel(), pad_bytes, padded
                    )
                )
                steps.append(Step(f"{node.name}.pad", pad_bytes, (reads[0],), in_place=False))
                reads[0] = f"{node.name}.pad"
            in_place = kind in _IN_PLACE and _numel(out) == _numel(values[0])
            scratch = 4 * _numel(out) if kind in _DECOMPOSED_NORMS else 0
            steps.append(Step(node.name, 4 * _numel(out), tuple(reads), in_place, scratch))
            kind_of[node.name] = kind
        layers.append(
            LayerCost(
                name=f"{module}:{kind}",
                kind=kind,
                macs=macs,
                work=_work(kind, macs, out, values),
                params=sum(weights[a.name].numel() for a in tensor_args if a.name in param_names),
                input_bytes=4 * sum(_numel(a.meta.get("val")) for a in activations),
                output_bytes=4 * _numel(out),
                output_shape=_shape(out),
                fused=fused,
                kernel_taps=math.prod(values[1].shape[2:]) if kind in CONVOLUTIONS else 0,
            )
        )

    inputs = [n for n in nodes if n.op == "placeholder" and n.name not in weights]
    outputs = [deployed(a.name) for a in _flat_nodes(nodes[-1].args)]
    buffers = deployed_buffers(steps, {n.name: 4 * _numel(n.meta.get("val")) for n in inputs}, outputs)
    return ModelCost(
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(layer.macs for layer in layers),
        input_size=input_size,
        layers=tuple(layers),
        peak_activation_bytes=peak_of(buffers),
        peak_activation_bytes_unfused=_peak_live_bytes(nodes, set(weights), {**shares, **eager_in_place}),
        arena_bytes=plan_arena(buffers),
    )


# Converters lower these to MEAN/SUB/MUL/RSQRT chains whose centred copy of the input lives beside the
# output while the op runs.
_DECOMPOSED_NORMS = {"layer_norm", "group_norm"}
_IN_PLACE = {"add", "mul"}  # TFLite's ADD and MUL reuse an input buffer they are the last reader of


def _flat_nodes(args: Any) -> list[torch.fx.Node]:
    if isinstance(args, torch.fx.Node):
        return [args]
    if isinstance(args, (list, tuple)):
        return [n for a in args for n in _flat_nodes(a)]
    return []


def _explicit_pad_shape(op: str, node: torch.fx.Node, x: Any) -> tuple[int, ...] | None:
    """The padded input shape when TFLite needs a PAD op before this convolution or pool: PyTorch's
    symmetric padding `p` matches neither VALID (p = 0) nor SAME (TF pads floor/ceil of the total)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return None
    if op in ("conv2d", "convolution"):
        weight = node.args[1].meta.get("val")
        kernel = tuple(weight.shape[2:])
        stride, padding, dilation = (
            _pair(node.args[i] if len(node.args) > i else d) for i, d in ((3, 1), (4, 0), (5, 1))
        )
    elif op in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        kernel = _pair(node.args[1])
        stride = _pair(node.args[2] if len(node.args) > 2 and node.args[2] else kernel)
        padding = _pair(node.args[3] if len(node.args) > 3 else 0)
        dilation = _pair(node.args[4] if op != "avg_pool2d" and len(node.args) > 4 else 1)
    else:
        return None
    if isinstance(padding, str) or all(p == 0 for p in padding):
        return None
    for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        torch_out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        if total // 2 != p or total - total // 2 != p or torch_out != out:
            return (x.shape[0], x.shape[1], x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    return None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        return value  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _peak_live_bytes(nodes: list[torch.fx.Node], weights: set[str], shares: dict[str, str]) -> int:
    """Eager PyTorch's peak: every op's output is a new tensor except views and in-place ops; a
    storage is freed after its last reader. The graph input stays live throughout."""

    def storage(name: str) -> str:
        while name in shares:
            name = shares[name]
        return name

    position = {node.name: i for i, node in enumerate(nodes)}
    buffers: dict[str, Buffer] = {}
    for i, node in enumerate(nodes):
        if node.name in weights or node.op not in ("placeholder", "call_function"):
            continue
        s = storage(node.name)
        if s == node.name:
            last = len(nodes) if node.op == "placeholder" else i
            buffers[s] = Buffer(4 * _numel(node.meta.get("val")), i, last)
        for user in node.users:
            if s in buffers:
                buffers[s].last = max(buffers[s].last, position[user.name])
    return peak_of(list(buffers.values()))
