"""The targets' constraints on a student: `assess` costs every candidate against every target (one
target is a list of one) into one `CandidateAssessment` each, and each budget it breaks is kept as a
reason.

`choose_student` is the rule without evidence (the feasible candidate with the most MACs) for a
single named student; `edgekd.search.select` ranks feasible candidates by distillation evidence.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd._io import cached_json
from edgekd.analysis import ModelCost, analyze
from edgekd.catalog import Candidate, build_model, deploy_form
from edgekd.errors import ConfigError, NoFeasibleStudentError
from edgekd.latency import predict_latency_ms
from edgekd.op_tables import ANALYSIS_CACHE_VERSION
from edgekd.targets import Target
from edgekd.vela import NpuEstimate, estimate_on_npu

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class TargetAssessment:
    """One candidate's figures on one target, with every budget of that target it breaks."""

    target: str  # the target's name
    predicted_latency_ms: float
    budget_ms: float  # the target's latency budget the prediction was held against
    model_mb: float
    peak_memory_mb: float  # weights + activation arena at the target's precision
    reasons: tuple[str, ...] = ()  # empty when feasible
    fallback_ops: tuple[str, ...] = ()  # op kinds that run off the target's fast path

    @property
    def feasible(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class CandidateAssessment:
    """One candidate against its targets (one target is a dict of one): feasible only if it fits every
    one of them. The model's own figures (params, MACs) are the same on each; memory and weights are
    the largest any target needs, since one student ships to all of them."""

    candidate: Candidate
    input_size: int
    params: int
    macs: int
    per_target: dict[str, TargetAssessment]

    @property
    def model_mb(self) -> float:
        return max(a.model_mb for a in self.per_target.values())

    @property
    def peak_memory_mb(self) -> float:
        return max(a.peak_memory_mb for a in self.per_target.values())

    @property
    def fallback_ops(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(op for a in self.per_target.values() for op in a.fallback_ops))

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every broken budget; with several targets each reason names its target."""
        if len(self.per_target) == 1:
            return next(iter(self.per_target.values())).reasons
        return tuple(f"{name}: {r}" for name, a in self.per_target.items() for r in a.reasons)

    @property
    def feasible(self) -> bool:
        return all(a.feasible for a in self.per_target.values())


def assess(
    candidates: list[Candidate], targets: list[Target], input_size: int, num_classes: int
) -> list[CandidateAssessment]:
    """Each candidate on every target, in the candidates' order: predicted latency, weights, peak
    memory and op support, with every budget it breaks as a reason. A candidate is costed once for
    all targets (`candidate_cost`); an Ethos-U target is estimated by Vela on the int8 file, and any
    op Vela leaves on the CPU is a reason too. A target named twice raises."""
    names = [t.name for t in targets]
    if not targets:
        raise ConfigError("a candidate is assessed against at least one target; none was given.")
    if len(set(names)) != len(names):
        raise ConfigError(f"a target is named twice: {names}.")
    assessed = []
    costs = candidate_costs(candidates, input_size, num_classes)
    for candidate in candidates:

        def model(candidate: Candidate = candidate) -> nn.Module:
            return _deployed(candidate, num_classes)

        cost = costs[candidate.name]
        per_target = {t.name: _judge(candidate, model, cost, t, input_size, num_classes) for t in targets}
        assessed.append(CandidateAssessment(candidate, input_size, cost.params, cost.macs, per_target))
    return assessed


def candidate_cost(candidate: Candidate, input_size: int, num_classes: int) -> ModelCost:
    """The deployed form's cost (`edgekd.analysis.analyze`), cached on disk: tracing the catalog
    takes the better part of a minute, and every fit and resume assesses it."""

    def trace() -> ModelCost:
        return analyze(_deployed(candidate, num_classes), input_size)

    path = _cache_path("cost", candidate, f"{input_size}|{num_classes}")
    return cached_json(path, trace, ModelCost.to_json, ModelCost.from_json)


def cost_cached(candidate: Candidate, input_size: int, num_classes: int) -> bool:
    """Whether `candidate_cost` would read its figure from the cache rather than trace the model."""
    return _cache_path("cost", candidate, f"{input_size}|{num_classes}").exists()


def candidate_costs(
    candidates: list[Candidate],
    input_size: int,
    num_classes: int,
    on_cost: Callable[[], object] | None = None,
) -> dict[str, ModelCost]:
    """`candidate_cost` of each candidate, by name; `on_cost` is called once per candidate as its cost
    is known (a progress bar's advance). Those not yet cached are traced in forked worker processes,
    one per CPU core: tracing is single-threaded Python, so on a first fit (the whole catalog,
    0.5-1 s a candidate) the cores share the wait instead of one doing it all. A caller that wants
    that sharing hands over every candidate at once: called one candidate at a time, this traces in
    one process."""
    tick = on_cost or (lambda: None)
    missing = [c for c in candidates if not cost_cached(c, input_size, num_classes)]
    workers = min(len(missing), tracing_workers())
    traced: dict[str, ModelCost] = {}
    if workers > 1 and sys.platform == "linux":  # fork is what makes a worker cheap; macOS's is unsafe
        import multiprocessing

        jobs = [(c, input_size, num_classes) for c in missing]
        with multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread) as pool:
            for name, cost in pool.imap_unordered(_named_cost, jobs, chunksize=1):
                traced[name] = cost
                tick()
    for c in candidates:
        if c.name not in traced:  # cached, or traced here where no worker was forked
            traced[c.name] = candidate_cost(c, input_size, num_classes)
            tick()
    return {c.name: traced[c.name] for c in candidates}


def _named_cost(job: tuple[Candidate, int, int]) -> tuple[str, ModelCost]:
    candidate, input_size, num_classes = job
    return candidate.name, candidate_cost(candidate, input_size, num_classes)


def tracing_workers() -> int:
    """How many processes trace uncached candidates at once (one per usable core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _one_thread() -> None:
    """A forked tracing worker runs one intra-op thread: the workers already fill the cores, and an
    OpenMP pool inherited across fork is not safe to reuse."""
    import torch

    torch.set_num_threads(1)


def candidate_on_npu(
    candidate: Candidate, model: Callable[[], nn.Module], target: Target, input_size: int, num_classes: int
) -> NpuEstimate:
    """Vela's estimate of the candidate on an Ethos-U target (`edgekd.vela.estimate_on_npu`),
    cached on disk by Vela version and the target's Vela configuration: an int8 export and a Vela
    run take tens of seconds per candidate. The estimate is of a randomly initialised network
    anyway (Vela times shapes and weight compression, not accuracy), so a cached one loses nothing."""
    path = _npu_cache_path(candidate, target, input_size, num_classes)
    if path is None:  # Vela is not installed: estimate_on_npu says what to install
        return estimate_on_npu(model(), target, input_size)
    return cached_json(
        path,
        lambda: estimate_on_npu(model(), target, input_size),
        asdict,
        lambda data: NpuEstimate(**{**data, "cpu_fallbacks": tuple(data["cpu_fallbacks"])}),
    )


def npu_cached(candidate: Candidate, target: Target, input_size: int, num_classes: int) -> bool:
    """Whether `candidate_on_npu` would read its estimate from the cache rather than run Vela."""
    path = _npu_cache_path(candidate, target, input_size, num_classes)
    return path is not None and path.exists()


def _npu_cache_path(candidate: Candidate, target: Target, input_size: int, num_classes: int) -> Path | None:
    """Where `candidate_on_npu` keeps its estimate: by Vela's version and the target's Vela setup (None
    where Vela is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        vela_version = version("ethos-u-vela")
    except PackageNotFoundError:
        return None
    vela = target.vela
    setting = f"{input_size}|{num_classes}|{vela.accelerator}|{vela.system_config}|{vela.memory_mode}"
    return _cache_path(f"vela-{vela_version}", candidate, setting)


def _deployed(candidate: Candidate, num_classes: int) -> nn.Module:
    """The candidate as it ships: re-parameterized where timm can fold its train-time branches."""
    return deploy_form(build_model(candidate.arch, num_classes, **candidate.kwargs))


def _cache_path(kind: str, candidate: Candidate, setting: str) -> Path:
    """Where a cached figure for `candidate` lives: under the user cache, by timm, torch and edgekd's
    analysis version, then by a hash of everything else it depends on."""
    import hashlib

    import timm
    import torch

    from edgekd.paths import default_cache_dir

    knobs = json.dumps(candidate.kwargs, sort_keys=True)
    key = hashlib.sha256(f"{candidate.arch}|{knobs}|{setting}".encode()).hexdigest()[:16]
    versions = f"timm-{timm.__version__}-torch-{torch.__version__}-v{ANALYSIS_CACHE_VERSION}"
    return default_cache_dir() / "analysis" / versions / kind / f"{candidate.name}-{key}.json"


def _judge(
    candidate: Candidate,
    model: Callable[[], nn.Module],
    cost: ModelCost,
    target: Target,
    input_size: int,
    num_classes: int,
) -> TargetAssessment:
    precision = target.default_precision
    model_mb = cost.weight_bytes(precision) / 2**20
    reasons = []
    # Vela takes tens of seconds per candidate; one whose weights or activation arena alone break
    # the budgets is rejected on the roofline figures without it.
    hopeless = (target.budgets.model_mb is not None and model_mb > target.budgets.model_mb) or (
        target.budgets.peak_ram_mb is not None
        and cost.peak_memory_bytes(precision) / 2**20 > target.budgets.peak_ram_mb
    )
    if target.latency_model.estimator == "vela" and not hopeless:
        npu = candidate_on_npu(candidate, model, target, input_size, num_classes)
        latency, peak_mb = npu.latency_ms, npu.sram_bytes / 2**20
        if npu.cpu_ops:
            reasons.append(f"{npu.cpu_ops} ops fall back to the CPU ({_fallback_summary(npu.cpu_fallbacks)})")
        if target.memory.flash_mb is not None and npu.flash_bytes / 2**20 > target.memory.flash_mb:
            reasons.append(f"{npu.flash_bytes / 2**20:.1f} MB in flash > {target.memory.flash_mb:g} MB")
    else:
        latency = predict_latency_ms(cost, target)
        peak_mb = cost.peak_memory_bytes(precision) / 2**20
    if latency > target.budgets.latency_ms:
        reasons.append(f"predicted {latency:.1f} ms > budget {target.budgets.latency_ms:g} ms")
    if target.budgets.model_mb is not None and model_mb > target.budgets.model_mb:
        reasons.append(f"{model_mb:.1f} MB of weights > budget {target.budgets.model_mb:g} MB")
    if target.budgets.peak_ram_mb is not None and peak_mb > target.budgets.peak_ram_mb:
        reasons.append(f"{peak_mb:.1f} MB peak memory > budget {target.budgets.peak_ram_mb:g} MB")
    inventory = cost.op_inventory
    unsupported = [kind for kind in target.ops.unsupported if kind in inventory]
    if unsupported:
        reasons.append(f"ops {', '.join(unsupported)} are not supported on {target.name}")
    fallback = tuple(kind for kind in target.ops.fallback if kind in inventory)
    return TargetAssessment(
        target.name, latency, target.budgets.latency_ms, model_mb, peak_mb, tuple(reasons), fallback
    )


def search_space(candidates: list[Candidate], targets: list[Target]) -> list[tuple[Candidate, int]]:
    """Every (candidate, input size) the search may choose: each candidate at each resolution that
    all `targets` allow (a resolution one target cannot take is no choice for a student meant for
    all of them). Raises when the targets share no resolution."""
    sizes = sorted(set.intersection(*(set(t.allowed_input_sizes) for t in targets)))
    if not sizes:
        allowed = "; ".join(f"{t.name}: {list(t.allowed_input_sizes)}" for t in targets)
        raise ConfigError(f"the targets share no input size ({allowed}); search them one at a time.")
    return [(c, size) for c in candidates for size in sizes]


def latencies(a: CandidateAssessment) -> tuple[float, ...]:
    """The predicted latency on each target, in the targets' order: one objective per target."""
    return tuple(x.predicted_latency_ms for x in a.per_target.values())


def latency_phrase(a: CandidateAssessment) -> str:
    """How `a`'s predicted latency sits in each budget, in words ("is predicted at ...")."""
    if len(a.per_target) == 1:
        x = next(iter(a.per_target.values()))
        return f"is predicted at {x.predicted_latency_ms:.2f} ms of the {x.budget_ms:g} ms budget"
    parts = [
        f"{x.predicted_latency_ms:.2f} ms of {name}'s {x.budget_ms:g} ms" for name, x in a.per_target.items()
    ]
    return f"is predicted at {', '.join(parts[:-1])} and {parts[-1]} budgets"


def choose_student(assessments: list[CandidateAssessment]) -> CandidateAssessment:
    """The feasible candidate with the most MACs (ties: more params)."""
    feasible = [a for a in assessments if a.feasible]
    if not feasible:
        details = "; ".join(f"{a.candidate.name}: {', '.join(a.reasons)}" for a in assessments)
        raise NoFeasibleStudentError(f"no candidate fits the target's budgets ({details}).")
    return max(feasible, key=lambda a: (a.macs, a.params))


def choose_assistant(
    assessments: list[CandidateAssessment], student: CandidateAssessment, teacher_macs: int
) -> CandidateAssessment:
    """The teacher assistant for `student`: the candidate whose MACs lie closest (in log scale) to the
    geometric mean of the student's and the teacher's. Mirzadeh et al. (AAAI 2020) find an assistant
    of intermediate size best; it only teaches, so it need not fit the target."""
    between = [a for a in assessments if student.macs < a.macs < teacher_macs]
    if not between:
        raise ConfigError(
            f"no catalog model lies between the student ({student.macs:,} MACs) and the teacher "
            f"({teacher_macs:,} MACs); name a teacher assistant with --assistant ARCH."
        )
    middle = math.sqrt(student.macs * teacher_macs)
    return min(between, key=lambda a: abs(math.log(a.macs / middle)))


def _fallback_summary(fallbacks: tuple[str, ...] | list[str], shown: int = 4) -> str:
    """Vela's fallback lines ("OP layer-path: why") as op counts and the first line in full, so a
    rejection reason stays readable when a whole attention block stays on the CPU."""
    counts: dict[str, int] = {}
    for line in fallbacks:
        op = line.split(" ", 1)[0]
        counts[op] = counts.get(op, 0) + 1
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])[:shown])
    first = fallbacks[0] if len(fallbacks[0]) <= 300 else fallbacks[0][:297] + "..."
    return f"{ops}; first: {first}" if len(fallbacks) > 1 else first
