"""How fast a model trains and evaluates here, measured once per machine and cached, and the seconds a
training run is predicted to take from those rates (`edgekd.training_time` plans a fit with them).

A training rate is images per second of one optimizer step (forward, backward, SGD step, in train mode,
at the run's input size and batch size); an evaluation rate, of a no-grad forward in eval mode. Both
are cached like the latency costs, and so is the teacher's forward rate (it fills the teacher-output
cache and scores the validation images). `training_seconds`, `search_seconds` and `final_seconds` turn
them into the wall time of one training run, of successive halving's rungs and of the final training.

Example:
    >>> from edgekd.training_rates import Rates, Workload, training_seconds
    >>> work = Workload(val_images=100, views=1, teacher_cache=True, teacher_rate=1000.0)
    >>> training_seconds(Rates(train=100.0, evaluate=500.0), work, epochs=2, images=1000)  # 20 + 0.4 + 0.1
    20.5
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd._io import cached_json

if TYPE_CHECKING:
    import torch.nn as nn

# A rate is the fastest of at least MIN_STEPS timed steps, timed for up to MAX_SECONDS after one
# warm-up step (the first step allocates and picks kernels, and is several times slower). The fastest,
# not the median: other work on the machine only ever slows a step, and a rate is cached for every
# later fit. Under a load of ~5 on 2 cores the median made lcnet_050 4 img/s where it trained at 236,
# and the plan predicted 2.0 h for a search that took 5.4 min.
MIN_STEPS, MAX_STEPS, MAX_SECONDS = 3, 20, 1.0
# The batch the teacher-output cache is filled with (TeacherOutputCache.fill's default).
FILL_BATCH = 256
# 2: the fastest step, not the median; 3: in the trainer's memory layout; 4: fused optimizer steps
RATES_CACHE_VERSION = 4


@dataclass(frozen=True)
class Rates:
    """Images per second of a model here: `train` (optimizer steps), `evaluate` (no-grad forward)."""

    train: float
    evaluate: float


def _host_key() -> dict[str, Any]:
    """What the rates depend on besides the model: this machine, torch and its thread count."""
    import torch

    from edgekd.hostinfo import detect_host

    host = detect_host()
    return {
        "cpu": host.cpu,
        "cores": host.cores,
        "isa": list(host.isa),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _cache_path(cache_dir: Path, kind: str, name: str, setting: dict[str, Any]) -> Path:
    key = json.dumps({**setting, **_host_key()}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    return Path(cache_dir) / "training-rates" / f"v{RATES_CACHE_VERSION}" / kind / f"{safe}-{digest}.json"


def _fastest_seconds(step: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> float:
    """The shortest wall time of `step` after one warm-up call."""
    step()
    times: list[float] = []
    started = clock()
    while len(times) < MAX_STEPS and (len(times) < MIN_STEPS or clock() - started < MAX_SECONDS):
        t0 = clock()
        step()
        times.append(clock() - t0)
    return min(times)


def measure_rates(model: nn.Module, input_size: int, num_classes: int, batch_size: int) -> Rates:
    """`model`'s training and evaluation rates on random batches of `batch_size` images: an SGD step
    (Nesterov momentum, as fit trains) on cross-entropy, and a no-grad forward in eval mode. The model's
    weights are changed; pass a fresh copy."""
    import torch
    import torch.nn.functional as F

    from edgekd.catalog import fuses_optimizer_step, training_layout

    torch.manual_seed(0)
    layout = training_layout(model)  # as edgekd.distill.trainer.train lays it out
    model.to(memory_format=layout)
    images = torch.randn(batch_size, 3, input_size, input_size).contiguous(memory_format=layout)
    labels = torch.randint(0, num_classes, (batch_size,))
    fused = fuses_optimizer_step(model.parameters()) or None  # as the trainer steps
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, fused=fused)

    def train_step() -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def forward() -> None:
        model(images)

    model.train()
    train_seconds = _fastest_seconds(train_step)
    model.eval()
    forward_seconds = _fastest_seconds(forward)
    return Rates(batch_size / train_seconds, batch_size / forward_seconds)


def _student_setting(arch: str, kwargs: dict[str, Any], input_size: int, num_classes: int, batch: int):
    return {"arch": arch, "kwargs": kwargs, "input": input_size, "classes": num_classes, "batch": batch}


def student_rates(
    arch: str, kwargs: dict[str, Any], input_size: int, num_classes: int, batch_size: int, *, cache_dir: Path
) -> Rates:
    """`measure_rates` of a fresh `arch` (timm, built with `kwargs`), cached under `cache_dir` by the
    architecture, its kwargs, the input size, classes, batch size, torch and its threads, and this
    host: a second fit measures nothing."""
    from edgekd.catalog import build_model

    setting = _student_setting(arch, kwargs, input_size, num_classes, batch_size)
    return cached_json(
        _cache_path(cache_dir, "train", arch, setting),
        lambda: measure_rates(build_model(arch, num_classes, **kwargs), input_size, num_classes, batch_size),
        dataclasses.asdict,
        lambda saved: Rates(float(saved["train"]), float(saved["evaluate"])),
    )


def rates_cached(
    arch: str, kwargs: dict[str, Any], input_size: int, num_classes: int, batch_size: int, *, cache_dir: Path
) -> bool:
    """Whether `student_rates` would read its rates from the cache rather than measure them."""
    setting = _student_setting(arch, kwargs, input_size, num_classes, batch_size)
    return _cache_path(cache_dir, "train", arch, setting).exists()


def training_rate(
    arch: str, kwargs: dict[str, Any], input_size: int, num_classes: int, batch_size: int, *, cache_dir: Path
) -> float:
    """Images per second `arch` trains at here (`student_rates`)."""
    return student_rates(arch, kwargs, input_size, num_classes, batch_size, cache_dir=cache_dir).train


def forward_rate(
    model: nn.Module, name: str, input_size: int, *, cache_dir: Path, batch_size: int = FILL_BATCH
) -> float:
    """Images per second of `model`'s no-grad forward at `batch_size` (the teacher's: it fills the
    teacher-output cache and scores the validation images), cached by `name` like `student_rates`."""
    import torch

    def measure() -> float:
        images = torch.randn(batch_size, 3, input_size, input_size)
        model.eval()

        @torch.no_grad()
        def forward() -> None:
            model(images)

        return batch_size / _fastest_seconds(forward)

    return cached_json(
        _cache_path(cache_dir, "forward", name, {"model": name, "input": input_size, "batch": batch_size}),
        measure,
        lambda rate: {"forward": rate},
        lambda saved: float(saved["forward"]),
    )


def forward_cached(name: str, input_size: int, *, cache_dir: Path, batch_size: int = FILL_BATCH) -> bool:
    """Whether `forward_rate` of the model `name` would read its rate from the cache."""
    setting = {"model": name, "input": input_size, "batch": batch_size}
    return _cache_path(cache_dir, "forward", name, setting).exists()


# --- predictions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """What one training run does besides its optimizer steps, in images."""

    val_images: int
    views: int  # teacher-output cache views per training image (augmentation draws; 1 without)
    teacher_cache: bool  # offline outputs cached once; without, the teacher runs on every batch
    teacher_rate: float  # the teacher's forward, images/s


def training_seconds(rates: Rates, work: Workload, epochs: int, images: int) -> float:
    """One `train` call: its epochs of steps, the validation forward after each epoch, and the
    teacher's validation outputs at its start (the teacher-output cache fill is counted apart)."""
    steps = epochs * images / rates.train
    validation = epochs * work.val_images / rates.evaluate + work.val_images / work.teacher_rate
    live_teacher = 0.0 if work.teacher_cache else epochs * images / work.teacher_rate
    return steps + validation + live_teacher


def fill_seconds(work: Workload, images: int) -> float:
    """The teacher-output cache fill for a run on `images` training images."""
    return work.views * images / work.teacher_rate if work.teacher_cache else 0.0


def search_seconds(
    rungs, entering: Sequence[str], rates: dict[str, Rates], work: Workload, survivors: str = "mean"
) -> float:
    """Predicted wall time of successive halving over `entering` (in entry order) with `rungs`: the
    first rung trains each one; a later rung trains as many as enter it, each at the entering
    candidates' mean cost (`survivors="mean"`; which go on is what the search finds out), or the
    "fastest" or "slowest" of them. A rung that repeats an earlier one's epochs and images reuses its
    scores (free), and each distinct subset fills its cache once."""
    seconds, done, filled = 0.0, set(), set()
    for index, rung in enumerate(rungs):
        if (rung.epochs, rung.images) in done:
            continue
        done.add((rung.epochs, rung.images))
        costs = sorted(training_seconds(rates[n], work, rung.epochs, rung.images) for n in entering)
        if index == 0:
            seconds += sum(costs)
        elif survivors == "mean":
            seconds += rung.candidates * sum(costs) / len(costs)
        else:
            seconds += sum(costs[: rung.candidates] if survivors == "fastest" else costs[-rung.candidates :])
        if rung.images not in filled:
            filled.add(rung.images)
            seconds += fill_seconds(work, rung.images)
    return seconds


@dataclass(frozen=True)
class FinalRecipe:
    """What the final training of one candidate consists of (`final_seconds`)."""

    epochs: int
    qat_epochs: int
    images: int
    generations: int  # born-again trains the student twice
    baseline: bool  # --baseline scratch trains it once more without the teacher
    cache_filled_by_search: bool  # the search's last rung ran on all the images: same cache entry


def final_seconds(rates: Rates, work: Workload, recipe: FinalRecipe) -> float:
    epochs = recipe.epochs + recipe.qat_epochs
    seconds = recipe.generations * training_seconds(rates, work, epochs, recipe.images)
    if not recipe.cache_filled_by_search:
        seconds += fill_seconds(work, recipe.images)
    if recipe.generations > 1:  # generation 1's outputs become generation 2's cached targets
        seconds += work.views * recipe.images / rates.evaluate
    if recipe.baseline:
        no_teacher = dataclasses.replace(work, teacher_cache=True)
        seconds += training_seconds(rates, no_teacher, recipe.epochs, recipe.images)
        seconds -= work.val_images / work.teacher_rate
    return seconds


def per_epoch_and_fixed(rates: Rates, work: Workload, recipe: FinalRecipe) -> tuple[float, float]:
    """`final_seconds` as fixed + per_epoch × epochs (it is linear in the epochs)."""
    one = final_seconds(rates, work, dataclasses.replace(recipe, epochs=1))
    two = final_seconds(rates, work, dataclasses.replace(recipe, epochs=2))
    return two - one, 2 * one - two
