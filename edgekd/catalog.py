"""The model catalog: `models/students.yaml` into `Candidate`s and `models/teachers.yaml` into recipes.

Example:
    >>> from edgekd.catalog import load_students
    >>> [c.arch for c in load_students()][:1]
    ['mobilenetv3_small_050']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd._config import from_mapping, load_yaml
from edgekd._registry import Registry, did_you_mean
from edgekd.errors import ConfigError, TeacherError
from edgekd.paths import shipped_dir

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class Candidate:
    """One student architecture: a timm name plus the keyword arguments that pick its variant."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    family: str = ""  # the architecture family (mobilenetv3, lcnet, ...): `edgekd search --list` groups by it
    # The published ImageNet-1k top-1 (percent) at `imagenet_size` px: the search's prior for the
    # candidate's capacity. None where no figure was found; `imagenet_source` cites it or says why not.
    imagenet_top1: float | None = None
    imagenet_size: int | None = None
    imagenet_source: str = ""

    def __post_init__(self) -> None:
        # ConfigError is a ValueError: from_mapping prefixes the file it read this entry from.
        if self.imagenet_top1 is None:
            return
        if not 0 < self.imagenet_top1 < 100:
            raise ConfigError(
                f"student {self.arch!r}: imagenet_top1 {self.imagenet_top1} is not a percentage in (0, 100). "
                "Give the top-1 accuracy in percent (e.g. 57.9), or null where none is published."
            )
        if not self.imagenet_source.strip():
            raise ConfigError(
                f"student {self.arch!r}: imagenet_top1 {self.imagenet_top1} has no imagenet_source. Cite "
                'where the figure comes from (e.g. "timm results-imagenet.csv, <arch.tag>, commit <sha>").'
            )
        if self.imagenet_size is None or self.imagenet_size <= 0:
            raise ConfigError(
                f"student {self.arch!r}: imagenet_top1 {self.imagenet_top1} needs imagenet_size, the "
                f"resolution in px it was measured at (got {self.imagenet_size})."
            )

    @property
    def name(self) -> str:
        return self.arch


@dataclass(frozen=True)
class TeacherRecipe:
    """How edgekd trains a teacher when the user brings none."""

    arch: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    # Replayed shift/flip views (edgekd.augment); 0 draws trains on the plain images. A teacher that
    # only saw plain images is sure of them and unsure of the shifted views a student is distilled on.
    augment_draws: int = 0
    augment_shift: int = 4
    hflip: bool = False

    @property
    def augmentation(self):
        from edgekd.augment import Augmentation

        if not self.augment_draws:
            return None
        return Augmentation(draws=self.augment_draws, max_shift=self.augment_shift, hflip=self.hflip)

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights: augmentation settings only when it is on, so
        that adding them did not change the cache key of a teacher trained without."""
        fields = asdict(self)
        if not self.augment_draws:
            for name in ("augment_draws", "augment_shift", "hflip"):
                del fields[name]
        elif self.augmentation.padding != "zeros":  # the views' fill (keys from before it stay valid)
            fields["augment_padding"] = self.augmentation.padding
        return fields


@dataclass(frozen=True)
class _StudentsFile:
    students: tuple[Candidate, ...]


def student_registry(candidates: list[Candidate]) -> Registry[Candidate]:
    """Candidates by name; a duplicate raises, an unknown name lists the valid ones."""
    registry: Registry[Candidate] = Registry("student")
    for candidate in candidates:
        registry.add(candidate.name, candidate)
    return registry


def load_students(path: Path | None = None) -> list[Candidate]:
    path = path or shipped_dir("models") / "students.yaml"
    students = list(from_mapping(_StudentsFile, load_yaml(path), str(path)).students)
    student_registry(students)  # a duplicate entry raises here, naming it
    return students


def load_teacher_recipe(name: str = "default", path: Path | None = None) -> TeacherRecipe:
    path = path or shipped_dir("models") / "teachers.yaml"
    recipes = load_yaml(path)
    if not isinstance(recipes, dict):
        raise ConfigError(f"{path}: must map recipe names to recipes.")
    registry: Registry[Any] = Registry("teacher recipe")
    for key, value in recipes.items():
        registry.add(str(key), value)
    return from_mapping(TeacherRecipe, registry.get(name), str(path), f"{name}.")


def build_model(arch: str, num_classes: int, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A timm model with `num_classes` outputs; `pretrained=True` downloads timm's hub weights."""
    import timm

    if not timm.is_model(arch):
        raise TeacherError(f"{arch!r} is not a timm model.{did_you_mean(arch, timm.list_models())}")
    return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors from a .safetensors file or a torch .pth/.pt (plain, or under 'state_dict'/'model'),
    loaded with `weights_only=True`: a file that would run code is refused."""
    import pickle

    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TeacherError(
            f"{path}: holds pickled Python objects besides tensors, refused unread (loading them could run "
            "code). Save the weights as a plain state dict or as .safetensors."
        ) from e
    except Exception as e:
        why = " ".join(str(e).split())[:200]  # one line, whatever the reader printed
        raise TeacherError(f"{path}: cannot be read as model weights ({type(e).__name__}: {why}).") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise TeacherError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors.")
    return state


def load_weights(model: nn.Module, path: Path) -> bool:
    """Load a local weights file into a timm model. A classifier of another size is left freshly
    initialised (the backbone is still loaded); returns whether the classifier was loaded too."""
    state = read_state_dict(path)
    own = model.state_dict()
    head = model.default_cfg.get("classifier", "fc")
    head_keys = {k for k in own if k.startswith(f"{head}.")}
    head_loaded = all(k in state and state[k].shape == own[k].shape for k in head_keys)
    if not head_loaded:
        state = {k: v for k, v in state.items() if k not in head_keys}
    misshapen = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and k not in head_keys]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or misshapen:
        raise TeacherError(
            f"{path}: does not fit {model.default_cfg.get('architecture', type(model).__name__)}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {misshapen[:3]}. "
            f"Is --teacher the right architecture?"
        )
    model.load_state_dict(state, strict=False)
    return head_loaded


def randomize_norm_layers(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine weights and running statistics, in place.

    timm zero-initialises the last BatchNorm of each residual block, so an untrained ResNet's
    residual branches are exact zeros and converters fold them away: such a model converts to a
    fraction of its real size and times far too fast. Profiling untrained models needs this first.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._NormBase) and module.affine:
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.1, 0.1)
                if module.track_running_stats:
                    uniform(module.running_mean, -0.1, 0.1)
                    uniform(module.running_var, 0.5, 1.5)
    return model


def deploy_form(model: nn.Module) -> nn.Module:
    """The model as it ships: a re-parameterized copy when it has train-time branches that fold
    into one convolution at inference (RepVGG, MobileOne, FastViT's RepMixer: timm's
    `reparameterize_model`), else `model` itself. Exporting or costing the training form would ship
    several parallel convolutions and BatchNorms per block where the device needs one."""
    if not any(hasattr(m, "reparameterize") or hasattr(m, "fuse") for m in model.modules()):
        return model
    from timm.utils.model import reparameterize_model

    was_training = model.training
    deployed = reparameterize_model(model.eval(), inplace=False)
    model.train(was_training)
    return deployed.eval()


def training_layout(model: nn.Module):
    """The memory format `model` trains fastest in on the CPU: channels_last (NHWC) for networks with
    grouped (depthwise) convolutions, whose oneDNN kernels are NHWC-native: a training step of every
    such student in the catalog ran 1.08-1.90x faster in it at 32 px, batch 16, one thread (lcnet_035
    1.46x, mobilenetv3_small_050 1.49x; benchmarks/training_layout.py), with the same loss to 1e-6.
    Plain networks (resnet10t/14t/18, repvgg_a0: 0.90-1.05x) and captured graphs (quantization-aware
    training's GraphModule, whose view ops assume the layout they were traced in) stay contiguous."""
    import torch

    if isinstance(model, torch.fx.GraphModule):
        return torch.contiguous_format
    grouped = any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())
    return torch.channels_last if grouped else torch.contiguous_format


def fuses_optimizer_step(parameters) -> bool:
    """Whether torch's fused SGD/AdamW kernels take these parameters (floating point, all on the CPU or
    all on one CUDA device): one kernel per step instead of a dozen elementwise passes per tensor. On
    the CPU the fused step of AdamW over resnet18 took 17 ms against 137 ms (a teacher's training step
    1.38x faster), SGD's over lcnet_035 1.5 ms against 4.6 ms (1 thread, batch 64 and 16)."""
    parameters = list(parameters)
    devices = {p.device for p in parameters}
    return (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.is_floating_point() for p in parameters)
    )


def folded_weight_count(model: nn.Module) -> int:
    """Parameters left after BatchNorm folds into the preceding convolution (its scale disappears,
    its shift becomes the convolution's bias): what a converted file should hold."""
    import torch

    norm_scales = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.affine
    )
    return sum(p.numel() for p in model.parameters()) - norm_scales
