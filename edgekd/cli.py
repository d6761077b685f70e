"""The `edgekd` command: a thin Typer layer over the public API. It parses options, renders results
and owns the exit codes; the logic lives in the library."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgekd import __version__
from edgekd.errors import EdgeKDError

app = typer.Typer(
    help="Distil a large vision model into a small one that fits a real edge device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
targets_app = typer.Typer(help="Hardware targets (targets/*.yaml).", no_args_is_help=True)
models_app = typer.Typer(help="The student and teacher catalog (models/*.yaml).", no_args_is_help=True)
latency_app = typer.Typer(help="The latency predictor and its error (profiles/*.csv).", no_args_is_help=True)
app.add_typer(targets_app, name="targets")
app.add_typer(models_app, name="models")
app.add_typer(latency_app, name="latency")
devices_app = typer.Typer(
    help="Devices to profile on: local, ssh://[user@]host[:port], adb://SERIAL, by name.",
    no_args_is_help=True,
)
app.add_typer(devices_app, name="devices")

TargetsDirOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--targets-dir",
        help="A directory of your own target YAML files (repeatable; also EDGEKD_TARGETS_PATH).",
    ),
]

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    from edgekd._console import setup_logging

    setup_logging(debug)


@app.command()
def fit(
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="Target name (see `edgekd targets list`); repeatable: one student that fits every "
            "target, exported for each."
        ),
    ] = None,
    teacher: Annotated[
        str | None, typer.Option(help="timm model name or an edgekd checkpoint; default: train one.")
    ] = None,
    teacher_weights: Annotated[
        Path | None, typer.Option(help="Local .pth/.safetensors weights for a timm --teacher.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="ImageFolder directory (train/[val/][test/]); default: digits.")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Square input size in pixels.")] = None,
    student: Annotated[
        str | None, typer.Option(help="Use this student architecture instead of searching.")
    ] = None,
    search_budget: Annotated[
        str | None,
        typer.Option(
            help="Student search: trials (candidates that enter the first rung; default 4), wall clock "
            "(20m, 1.5h), 0 (no trials: the feasible candidate with the most MACs) or all."
        ),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            help="What the student search chooses for: retention (default: the fastest student whose "
            "trial accuracy stays within --min-retention of the best trial's, error bars included), "
            "accuracy (the most accurate; near-ties go to the faster) or latency (the fastest that "
            "learns clearly more than guessing the largest class)."
        ),
    ] = None,
    min_retention: Annotated[
        float | None,
        typer.Option(
            help="For --objective retention: the share of the best trial accuracy a student must keep, "
            "in (0, 1] (default 0.97)."
        ),
    ] = None,
    search_epochs: Annotated[
        int | None, typer.Option(help="Epochs of the search's last rung (default: a fifth of --epochs).")
    ] = None,
    search_images: Annotated[
        int | None, typer.Option(help="Training images of the search's last rung (default: all).")
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            help="Wall clock for the whole fit (90s, 20m, 1.5h). The teacher's training counts first; "
            "candidates whose final training cannot fit what is left are dropped (fewer epochs when none "
            "can); the final training keeps what the slowest remaining choice needs, the search gets the "
            "rest, at most 30 %, as its wall clock. Default: no limit."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Distillation epochs.")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Batch size; default 64, or 32/16 when 64 would leave an epoch under 50 steps."),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate (one-cycle); default 0.05 × batch / 128 for sgd, "
            "0.003 × batch / 64 for adamw, batch counted as at least 64."
        ),
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default 0.0005).")] = None,
    loss: Annotated[
        list[str] | None,
        typer.Option(
            help="Distillation loss term NAME[:WEIGHT], repeatable: kd, logit_mse, dkd, fitnet, at, rkd, "
            "sp, dist, ce (default: kd)."
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Temperature of the kd, dkd and dist terms (default 4).")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="kd's weight on the teacher (1-alpha on labels; default 0.9).")
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Label smoothing of the label term.")] = None,
    scheme: Annotated[
        str | None,
        typer.Option(
            help="offline (frozen teacher; default), online (co-trained with a copy of the teacher), "
            "born-again (the student teaches a fresh copy of itself) or assistant (teacher → TA → student)."
        ),
    ] = None,
    assistant: Annotated[
        str | None, typer.Option(help="Teacher assistant architecture for --scheme assistant.")
    ] = None,
    teacher_cache: Annotated[
        bool | None,
        typer.Option(
            "--teacher-cache/--no-teacher-cache",
            help="Compute the frozen teacher's outputs once per augmented view (default: on).",
        ),
    ] = None,
    augment_draws: Annotated[
        int | None, typer.Option(help="Augmented views per image, cycled over epochs (0: none; default 4).")
    ] = None,
    augment_shift: Annotated[
        int | None,
        typer.Option(
            help="Random translation in pixels (default: input size / 8 when the teacher keeps 90 % of "
            "its validation accuracy on views shifted that far, else 0)."
        ),
    ] = None,
    hflip: Annotated[
        bool | None,
        typer.Option(
            "--hflip/--no-hflip",
            help="Random horizontal flips (default: on when the teacher keeps 90 % of its validation "
            "accuracy on mirrored images, i.e. the classes survive mirroring).",
        ),
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd (default; Nesterov momentum 0.9) or adamw.")
    ] = None,
    schedule: Annotated[str | None, typer.Option(help="onecycle (default) or cosine.")] = None,
    ema_decay: Annotated[
        float | None, typer.Option(help="Keep and ship an exponential moving average of the weights.")
    ] = None,
    clip_grad_norm: Annotated[float | None, typer.Option(help="Clip the gradient norm to this.")] = None,
    bf16: Annotated[
        bool | None, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast on the CPU.")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="scratch: also train the chosen student without the teacher (same recipe), so the report "
            "shows what distillation bought; doubles the training time."
        ),
    ] = None,
    qat_epochs: Annotated[
        int | None,
        typer.Option(help="Quantization-aware epochs for an int8 target (default 2; 0: post-training only)."),
    ] = None,
    teacher_epochs: Annotated[
        int | None, typer.Option(help="Epochs when edgekd trains or fine-tunes the teacher.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads for host parity and latency.")] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Profile the exported student on this device at the end (name or URI, see `devices`)."
        ),
    ] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where run directories are created.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Teacher cache (default: user cache dir).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML with any of these options (keys = option names).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run directory.")] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Choose, distil, export and measure a student for a target (or one student for several)."""
    options = dict(locals())
    options["targets_dir"] = tuple(targets_dir) if targets_dir else None
    options["loss"] = tuple(loss) if loss else None
    options["target"] = tuple(target) if target else None
    from edgekd._console import RichObserver, console
    from edgekd.errors import ConfigError
    from edgekd.pipeline import FitConfig, resume_config
    from edgekd.pipeline import fit as run_fit

    overrides = {k: v for k, v in options.items() if k not in ("config", "resume") and v is not None}
    if resume is not None and config is not None:
        raise ConfigError(f"--resume {resume} reads the run's own config.yaml; drop --config {config}.")
    try:
        if resume is not None:  # the options given are applied where safe, else refused by name
            fit_config = resume_config(resume, overrides)
        else:
            fit_config = FitConfig.from_yaml(config, **overrides) if config else FitConfig(**overrides)
    except EdgeKDError:
        raise
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone draws progress and sums up
        run_fit(fit_config, resume=resume)
        return
    with RichObserver() as observer:
        result = run_fit(fit_config, resume=resume, observer=observer)
    _print_summary(console, result)


def _print_summary(console, result) -> None:
    from rich.table import Table

    from edgekd.rundir import RunDir

    s, t = result.student, result.teacher
    table = Table(title=f"edgekd fit → {result.run}", show_header=False)
    table.add_row("teacher", f"{t.arch}: test accuracy {100 * t.test_accuracy:.2f} %")
    table.add_row("student", f"{s.arch}: test accuracy {100 * s.test_accuracy:.2f} %, {s.params:,} params")
    if t.test_accuracy:
        from edgekd.report import retention_sentence

        table.add_row("retention", retention_sentence(result))
    if result.baseline:
        scratch = result.baseline["test_accuracy"]
        gain = 100 * (s.test_accuracy - scratch)
        table.add_row(
            "without teacher", f"test accuracy {100 * scratch:.2f} % (distillation {gain:+.2f} points)"
        )
    records = result.targets
    several = len(records) > 1
    for record in records:
        name, e, lat = record.target.name, record.export, record.host_latency
        on = f" ({name})" if several else ""
        budget = record.target.budget_ms
        predicted = f"{record.predicted_latency_ms:.2f} ms on {name} (budget {budget:g} ms)"
        table.add_row(f"predicted latency{on}", predicted)
        parity = e.parity
        checked = (
            f"top-1 agreement {100 * parity['top1_agreement']:.2f} %, "
            f"max |Δlogit| {parity['max_abs_diff']:.1e}"
            if parity
            else e.parity_note
        )
        shared = f" (the same file as {record.shared_with}'s)" if record.shared_with else ""
        table.add_row(f"export{on}", f"{e.file}: {e.size_bytes / 1e6:.2f} MB, {checked}{shared}")
        if lat and not record.shared_with:
            table.add_row(
                f"host latency{on}",
                f"median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({lat['threads']} threads)",
            )
    device = result.device_latency
    if device:
        table.add_row(
            f"on {device['device']}",
            f"{device['statistic']} {device['measured_ms']:.3f} ms measured, {device['predicted_ms']:.3f} ms "
            f"predicted for {device['predicted_for']} (x{device['measured_over_predicted']:.2f})",
        )
    table.add_row("report", str(RunDir(Path(result.run)).report_html))
    console.print(table)


@app.command("export")
def export_command(
    source: Annotated[
        Path, typer.Argument(help="A `fit` run directory or an edgekd .safetensors checkpoint.")
    ],
    format_names: Annotated[
        str | None, typer.Option("--format", help="Comma-separated formats (tflite,coreml,openvino,onnx).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="Comma-separated precisions (fp32,fp16,int8); default: all a format has."),
    ] = None,
    all_formats: Annotated[
        bool, typer.Option("--all", help="Every format at every precision it supports.")
    ] = False,
    data: Annotated[
        Path | None, typer.Option(help="ImageFolder for parity and calibration (default: the run's data).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN/exports).")] = None,
    parity_images: Annotated[int, typer.Option(min=1, help="Validation images for the parity check.")] = 256,
    calibration_images: Annotated[
        int, typer.Option(min=1, help="Training images that calibrate int8.")
    ] = 256,
    parity_config: Annotated[
        Path | None, typer.Option(help="YAML of parity gates per precision (default: config/parity.yaml).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Threads for parity and host latency.")] = 1,
    latency: Annotated[bool, typer.Option("--latency/--no-latency", help="Time each artifact here.")] = True,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Decoded-image cache (default: user cache dir).")
    ] = None,
) -> None:
    """Export a student to deployable formats, check each against PyTorch, and print the table."""
    from rich.console import Console

    from edgekd._config import check_directory
    from edgekd._console import RichObserver
    from edgekd._io import write_json_atomic
    from edgekd.artifact import FORMATS
    from edgekd.export.parity import load_gates
    from edgekd.export.suite import export_inputs, export_matrix, merge_rows, read_exports, requested_pairs
    from edgekd.export_source import load_export_source

    if all_formats and format_names:
        raise typer.BadParameter("--all exports every format; drop --format, or drop --all.")
    formats = (
        FORMATS.names() if all_formats or not format_names else [f.strip() for f in format_names.split(",")]
    )
    precisions = [p.strip() for p in precision.split(",")] if precision else None
    pairs = requested_pairs(formats, precisions)
    for what, directory in (("--out", out), ("--cache-dir", cache_dir)):
        if directory is not None:
            check_directory(what, directory)
    gates = load_gates(parity_config)
    loaded = load_export_source(source, data, cache_dir)
    out_dir = out or loaded.out_dir
    earlier = read_exports(out_dir / "exports.json", loaded.arch)  # a bad file fails before any export
    inputs = export_inputs(loaded.data, parity_images, calibration_images)
    with RichObserver() as observer:
        rows = export_matrix(
            loaded.model,
            loaded.arch,
            inputs,
            out_dir=out_dir,
            pairs=pairs,
            gates=gates,
            threads=threads,
            latency=latency,
            format_options=loaded.format_options,
            observer=observer,
        )
    # Rows of earlier exports into the same directory stay, unless this run redid their format and precision.
    summary = write_json_atomic(
        out_dir / "exports.json", {"arch": loaded.arch, "rows": merge_rows(earlier, rows)}
    )
    console = Console()  # the table is the command's output: stdout; progress went to stderr
    console.print(_export_table(rows, f"edgekd export {loaded.arch} → {out_dir}"))
    for row in rows:
        if row.detail and row.status != "ok":
            console.print(f"[bold]{row.format} {row.precision}[/bold] ({row.status}): {row.detail}")
    console.print(f"wrote {summary}")
    failed = [r for r in rows if r.failed]
    if failed:
        raise EdgeKDError(
            f"{len(failed)} of {len(rows) - 1} exports failed: "
            + ", ".join(f"{r.format} {r.precision} ({r.status})" for r in failed)
        )


def _export_table(rows, title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in ("format", "precision", "status", "size MB", "accuracy %", "top-1 agree %", "host ms"):
        table.add_column(column, justify="left" if column in ("format", "precision", "status") else "right")

    def number(value, scale=1.0, digits=2):
        return "—" if value is None else f"{value * scale:.{digits}f}"

    for r in rows:
        latency = number(r.latency_ms, digits=3)
        if r.latency_ms is not None and r.latency_ratio is not None and r.format != "pytorch":
            latency += f" ({r.latency_ratio:.2f}×)"
        table.add_row(
            r.format,
            r.precision,
            r.status,
            number(r.size_mb),
            number(r.accuracy, 100),
            number(r.top1_agreement, 100),
            latency,
        )
    return table


@targets_app.command("list")
def targets_list(targets_dir: TargetsDirOption = None) -> None:
    """Every known target, one row each."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.targets import get_target, list_targets

    table = Table(title="edgekd targets")
    for column in ("name", "runs on", "peak GFLOP/s", "RAM MB", "runtime", "precisions", "budget"):
        table.add_column(column)
    dirs = tuple(targets_dir or ())
    for name in list_targets(dirs):
        t = get_target(name, dirs)
        device = t.compute.accelerator or f"{t.compute.cores}× {t.compute.cpu}"
        table.add_row(
            t.name,
            device.split(" (")[0],
            f"{t.peak_gflops:g} {t.default_precision}",
            f"{t.memory.ram_mb:g}",
            t.runtime + (f"/{t.delegate}" if t.delegate else ""),
            ",".join(t.precisions),
            f"{t.budgets.latency_ms:g} ms",
        )
    Console().print(table)


@targets_app.command("show")
def targets_show(
    name: Annotated[str, typer.Argument(help="Target name.")], targets_dir: TargetsDirOption = None
) -> None:
    """One target's every field, with the source of each number."""
    from rich.console import Console
    from rich.table import Table

    from edgekd._config import to_mapping
    from edgekd.targets import citation_for, get_target

    target = get_target(name, tuple(targets_dir or ()))
    table = Table(title=f"target {target.name}")
    for column in ("field", "value", "source"):
        table.add_column(column, overflow="fold")

    def rows(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                rows(f"{prefix}.{k}" if prefix else k, v)
        else:
            table.add_row(prefix, str(value), citation_for(prefix, target.sources) or "")

    rows("", {k: v for k, v in to_mapping(target).items() if k != "sources"})
    Console().print(table)


@models_app.command("list")
def models_list() -> None:
    """The student candidates and the default teacher recipe."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.catalog import load_students, load_teacher_recipe

    table = Table(title="student candidates (models/students.yaml)")
    for column in ("timm arch", "kwargs", "notes"):
        table.add_column(column)
    for c in load_students():
        table.add_row(c.arch, str(c.kwargs or ""), c.notes)
    console = Console()
    console.print(table)
    recipe = load_teacher_recipe()
    console.print(f"default teacher (models/teachers.yaml): {recipe}")


@app.command("search")
def search_command(
    target: Annotated[
        list[str], typer.Option("--target", help="A target (repeatable: one student for all).")
    ],
    list_space: Annotated[
        bool, typer.Option("--list", help="Print the search space and its size, then stop.")
    ] = False,
    num_classes: Annotated[int, typer.Option(help="Classes of the task (sizes the head).")] = 10,
    targets_dir: TargetsDirOption = None,
) -> None:
    """The student search space for one or more targets, and which candidates they allow."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.catalog import load_students
    from edgekd.search import assess_targets, pareto_front, search_space
    from edgekd.targets import get_target

    targets = [get_target(name, tuple(targets_dir or ())) for name in target]
    candidates = load_students()
    space = search_space(candidates, targets)
    console = Console()
    names = ", ".join(t.name for t in targets)
    if list_space:
        families = len({c.family for c in candidates})
        table = Table(
            title=f"search space for {names}: {len(candidates)} candidates from {families} families x "
            f"input sizes = {len(space)} (candidate, input size) pairs"
        )
        for column in ("family", "timm arch", "ImageNet top-1 @px", "input sizes", "notes"):
            table.add_column(column)
        sizes = sorted({size for _, size in space})
        for candidate in candidates:
            top1 = candidate.imagenet_top1
            prior = "-" if top1 is None else f"{top1:.1f} @{candidate.imagenet_size}"
            table.add_row(candidate.family, candidate.arch, prior, " ".join(map(str, sizes)), candidate.notes)
        console.print(table)
        return
    table = Table(title=f"candidates for {names} (predicted; * = Pareto front of the feasible)")
    for column in ("arch", "px", *(f"{t.name} ms" for t in targets), "peak MB", "status"):
        table.add_column(column, justify="left" if column in ("arch", "status") else "right")
    rows = []
    for size in sorted({size for _, size in space}):
        candidates = [c for c, s in space if s == size]
        rows += [(size, j) for j in assess_targets(candidates, targets, size, num_classes)]
    feasible = [(size, j) for size, j in rows if j.feasible]
    objectives = [
        (
            max(a.predicted_latency_ms for a in j.per_target.values()),
            max(a.peak_memory_mb for a in j.per_target.values()),
        )
        for _, j in feasible
    ]
    front = {id(feasible[i][1]) for i in pareto_front(objectives, minimize=(True, True))}
    for size, j in rows:
        status = ("feasible *" if id(j) in front else "feasible") if j.feasible else "; ".join(j.reasons)
        table.add_row(
            j.candidate.arch,
            str(size),
            *(f"{j.per_target[t.name].predicted_latency_ms:.2f}" for t in targets),
            f"{max(a.peak_memory_mb for a in j.per_target.values()):.2f}",
            status,
        )
    console.print(table)


@latency_app.command("predict")
def latency_predict(
    model: Annotated[str, typer.Argument(help="timm architecture, e.g. mobilenetv3_small_100.")],
    target: Annotated[str, typer.Option(help="Target name.")],
    input_size: Annotated[int | None, typer.Option(help="Square input size (default: the target's).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, fp16 or int8 (default: the target's).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: the target's).")] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Predicted latency of one model on a target, with its per-op-class breakdown."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.predict import predict_model
    from edgekd.targets import get_target

    t = get_target(target, tuple(targets_dir or ()))
    p = predict_model(model, t, input_size=input_size, precision=precision, threads=threads)
    c = p.coefficients
    console = Console()
    if p.npu is not None:
        npu = p.npu
        console.print(
            f"{p.model} @ {p.input_size} px on {t.name}: {p.latency_ms:.3f} ms, "
            f"{npu.npu_ops}/{npu.npu_ops + npu.cpu_ops} ops on the NPU ({100 * npu.npu_op_share:.0f} %), "
            f"SRAM {npu.sram_bytes / 2**10:.0f} KiB, flash {npu.flash_bytes / 2**10:.0f} KiB"
        )
        for fallback in npu.cpu_fallbacks:
            console.print(f"  on the CPU: {fallback}")
        console.print(f"estimate: {c.provenance}")
        return
    table = Table(
        title=f"{p.model} @ {p.input_size} px on {t.name} ({c.runtime}, {c.precision}, {c.threads} threads)"
    )
    table.add_column("op class")
    table.add_column("ms", justify="right")
    table.add_column("efficiency", justify="right")
    table.add_column("µs per op", justify="right")
    for name, ms in sorted(p.per_class_ms.items(), key=lambda kv: -kv[1]):
        if name == "invoke":
            table.add_row("per inference", f"{ms:.3f}", "", "")
        else:
            table.add_row(name, f"{ms:.3f}", f"{c.efficiency[name]:.3f}", f"{c.overhead_us[name]:.1f}")
    table.add_row("[bold]total", f"[bold]{p.latency_ms:.3f}", "", "")
    console.print(table)
    console.print(
        f"{p.macs / 1e6:.1f} M MACs, {p.params / 1e6:.2f} M params, "
        f"peak memory {p.peak_memory_bytes / 2**20:.2f} MB (weights + activation arena)"
    )
    console.print(f"calibration: {c.provenance}")


@latency_app.command("validate")
def latency_validate(
    target: Annotated[str, typer.Option(help="Target name.")],
    out: Annotated[
        Path | None, typer.Option(help="JSON output (default: benchmarks/results/latency-TARGET.json).")
    ] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Leave-one-out error of the predictor over each group of the target's profile rows."""
    from rich.console import Console
    from rich.table import Table

    from edgekd._console import RichObserver
    from edgekd.latency_validation import leave_one_out, write_validation
    from edgekd.targets import get_target

    t = get_target(target, tuple(targets_dir or ()))
    if t.latency_model.estimator == "vela":
        raise EdgeKDError(
            f"{t.name} is estimated by Arm's Vela compiler, not fitted to profile rows, so there is nothing "
            f"to leave out; benchmarks/vela_reference.py compares Vela with the published Ethos-U55 figure."
        )
    with RichObserver() as observer:
        results = leave_one_out(t, observer=observer)
    if not results:
        raise EdgeKDError(f"profiles/{t.name}.csv has no group of 3 or more rows to validate on.")
    table = Table(title=f"latency predictor, leave-one-out on profiles/{t.name}.csv")
    for column in (
        "runtime",
        "precision",
        "threads",
        "rows",
        "MAPE %",
        "±10 %",
        "±20 %",
        "Spearman",
        "priors only",
        "rows from",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r.runtime,
            r.precision,
            str(r.threads),
            str(r.rows),
            f"{r.mape:.1f}",
            f"{r.within_10:.0f} %",
            f"{r.within_20:.0f} %",
            "n/a" if r.spearman is None else f"{r.spearman:.3f}",
            f"{r.prior_mape:.1f} %",
            "publications" if r.published_only else "measurements",
        )
    console = Console()
    console.print(table)
    path = write_validation(results, out or Path("benchmarks") / "results" / f"latency-{t.name}.json")
    console.print(f"wrote {path}")


@app.command("profile")
def profile_command(
    artifact: Annotated[Path, typer.Argument(help="An exported model (.tflite, .xml, .onnx, .mlpackage).")],
    device: Annotated[
        str, typer.Option(help="local, ssh://[user@]host[:port], adb://SERIAL, or a name from `devices add`.")
    ] = "local",
    threads: Annotated[int, typer.Option(help="Inference threads (at least 1).")] = 1,
    runs: Annotated[int, typer.Option(help="Minimum timed runs (at least 1).")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 10,
    min_seconds: Annotated[float, typer.Option(help="Minimum timed seconds.")] = 1.0,
    compute_units: Annotated[
        str, typer.Option(help="Core ML on a Mac: ALL, CPU_AND_NE, CPU_ONLY or CPU_AND_GPU.")
    ] = "ALL",
    timeout: Annotated[float, typer.Option(help="Seconds before a device's bench is stopped.")] = 600,
    record: Annotated[
        bool,
        typer.Option(
            help="Append the measurement to the target's profile (needs --target). Only the target's own "
            "hardware is recorded: local for the host target, any other device if it was registered for "
            "the target (devices add NAME URI --target T)."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="With --record: record a device that is not the target's hardware anyway; the row's source "
            "says it was forced."
        ),
    ] = False,
    target: Annotated[
        str | None, typer.Option(help="The target the measurement is a profile row of.")
    ] = None,
    profiles_dir: Annotated[
        Path | None, typer.Option(help="Where --record writes TARGET.csv (default: the user's profiles).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the measurement as JSON here.")] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Time an artifact on a device: median, p90, p99, IQR, cold start, the device's fingerprint."""
    from dataclasses import asdict

    from rich.console import Console

    from edgekd._io import write_json_atomic
    from edgekd.devices import ProfileSettings, artifact_format
    from edgekd.devices.record import artifact_contract, device_mismatch
    from edgekd.devices.registry import connect

    # Everything that can be refused is, before a device is contacted or a second is spent timing.
    settings = ProfileSettings(threads, runs, warmup, min_seconds, compute_units, timeout)
    if record and target is None:
        raise EdgeKDError("--record needs --target: the measurement becomes a row of profiles/TARGET.csv.")
    if force and not record:
        raise EdgeKDError("--force applies to --record only (a device that is not the target's hardware).")
    if target is not None:
        from edgekd.targets import get_target

        get_target(target, tuple(targets_dir or ()))  # a bad name fails before the device is contacted
    artifact_format(artifact)
    chosen = connect(device)
    forced = None
    if record:
        mismatch = device_mismatch(device, target)
        if mismatch and not force:
            raise EdgeKDError(
                f"--record --target {target}: {mismatch}; a profile row must come from the target's own "
                "hardware. Pass --force to record it anyway (its source will say so)."
            )
        artifact_contract(artifact)
        forced = mismatch
    console = Console()
    with console.status(f"profiling {artifact.name} on {device}"):
        measurement = chosen.profile(artifact, settings)
    _print_measurement(console, measurement)
    if out is not None:
        write_json_atomic(out, asdict(measurement))
    if record:
        from edgekd.devices.record import record_measurement

        path = record_measurement(measurement, artifact, target, profiles_dir, forced)
        note = " (forced: not the target's hardware)" if forced else ""
        console.print(f"recorded in {path}{note}; refit with: edgekd latency calibrate --target {target}")


def _print_measurement(console, measurement) -> None:
    from rich.table import Table

    lat, fp = measurement.latency, measurement.fingerprint
    table = Table(title=f"{measurement.artifact} on {measurement.device}", show_header=False)
    table.add_row("runtime", f"{lat.runtime} {lat.runtime_version}, {lat.threads} threads")
    central = "median" if measurement.statistic == "median" else "mean (the tool reports no median)"
    table.add_row(central, f"{lat.median_ms if measurement.statistic == 'median' else lat.mean_ms:.3f} ms")
    table.add_row("p90 / p99 / IQR", f"{lat.p90_ms:.3f} / {lat.p99_ms:.3f} / {lat.iqr_ms:.3f} ms")
    table.add_row("runs", str(lat.runs))
    table.add_row("cold start", f"{lat.cold_start_ms:.1f} ms (load + first inference)")
    device = ", ".join(
        f"{k} {fp[k]}"
        for k in ("cpu", "model", "cores", "governor", "clock_mhz", "temperature_c", "os")
        if fp.get(k)
    )
    table.add_row("device", device)
    table.add_row(
        "throttled",
        {None: "unknown (no clock or temperature readable)"}.get(
            measurement.throttled, str(measurement.throttled)
        ),
    )
    if measurement.memory_mb is not None:
        table.add_row("peak memory", f"{measurement.memory_mb:.1f} MB")
    console.print(table)
    if measurement.layers:
        layers = Table(title="slowest layers")
        for column in ("layer", "type", "ms"):
            layers.add_column(column, justify="right" if column == "ms" else "left")
        for row in measurement.layers[:15]:
            layers.add_row(row["layer"], row["type"], f"{row['ms']:.3f}")
        console.print(layers)


@devices_app.command("add")
def devices_add(
    name: Annotated[str, typer.Argument(help="A short name, e.g. pi5-desk.")],
    uri: Annotated[
        str, typer.Argument(help="ssh://[user@]host[:port] (no password: keys only), adb://SERIAL or local.")
    ],
    python: Annotated[str | None, typer.Option(help="SSH: the device's Python (default python3).")] = None,
    ssh_config: Annotated[
        str | None, typer.Option(help="SSH: an ssh_config file (default ~/.ssh/config).")
    ] = None,
    benchmark_model: Annotated[
        str | None, typer.Option(help="ADB: benchmark_model's path on the phone.")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="The target this device is (e.g. pi5): `profile --record --target` accepts it there."
        ),
    ] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a device of the same name.")] = False,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Register a device under a name (in devices.yaml, readable by you alone)."""
    from edgekd.devices.registry import DeviceEntry, add_device

    if target is not None:
        from edgekd.targets import get_target

        get_target(target, tuple(targets_dir or ()))
    path = add_device(DeviceEntry(name, uri, python, ssh_config, benchmark_model, target), replace=replace)
    typer.echo(f"added {name} ({uri}{f', target {target}' if target else ''}) to {path}")


@devices_app.command("list")
def devices_list() -> None:
    """The registered devices."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.devices.registry import devices_file, load_devices

    table = Table(title=f"devices ({devices_file()})")
    for column in ("name", "uri", "target", "python", "ssh config", "benchmark_model"):
        table.add_column(column)
    for e in load_devices().values():
        table.add_row(
            e.name, e.uri, e.target or "", e.python or "", e.ssh_config or "", e.benchmark_model or ""
        )
    Console().print(table)


@devices_app.command("check")
def devices_check(name: Annotated[str, typer.Argument(help="A device name or URI.")]) -> None:
    """Reach the device and list what it has: CPU, OS, runtime versions."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.devices.registry import connect

    device = connect(name)
    found = device.check()
    table = Table(title=f"{name}: reachable ({device.uri})", show_header=False)
    for key, value in found.items():
        if key == "runtimes":
            for package, version in value.items():
                table.add_row(package, version or "not installed")
        elif value is not None:
            table.add_row(key, str(value))
    Console().print(table)


@devices_app.command("remove")
def devices_remove(name: Annotated[str, typer.Argument(help="The device's name.")]) -> None:
    """Forget a device."""
    from edgekd.devices.registry import remove_device

    typer.echo(f"removed {name} from {remove_device(name)}")


@latency_app.command("calibrate")
def latency_calibrate(
    target: Annotated[str, typer.Option(help="Target name.")],
    precision: Annotated[str | None, typer.Option(help="Default: the target's.")] = None,
    threads: Annotated[int | None, typer.Option(help="Default: the target's.")] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Refit the latency predictor to the target's profile rows; its error before and after."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.latency_validation import calibration_report
    from edgekd.targets import get_target

    if threads is not None and threads < 1:
        raise EdgeKDError(f"--threads {threads}: profile rows are of 1 thread or more.")
    report = calibration_report(get_target(target, tuple(targets_dir or ())), precision, threads)
    table = Table(title=f"{target}: predictor on {len(report.rows)} profile rows")
    for column in ("model", "px", "measured ms", "before ms", "after ms", "source"):
        table.add_column(column, justify="left" if column in ("model", "source") else "right")
    for row, before, after in zip(report.rows, report.before_ms, report.after_ms, strict=True):
        table.add_row(
            row.model,
            str(row.input_size),
            f"{row.latency_ms_median:.3f}",
            f"{before:.3f}",
            f"{after:.3f}",
            row.source,
        )
    console = Console()
    console.print(table)
    console.print(
        f"mean absolute error: {report.before_mape:.1f} % before (priors), {report.after_mape:.1f} % after "
        f"(fitted on these rows; {report.coefficients.provenance})"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and return its exit code. Every failure is one line on stderr
    (`--debug` adds the traceback), except a bug, which shows its traceback and asks for a report.

    Exit codes: 0 done; 1 the machine failed (a full disk, a read-only or unwritable path) or edgekd
    has a bug; 2 the input or the options are wrong; 130 interrupted (Ctrl-C).
    """
    from edgekd import _console
    from edgekd._interrupts import deliver_dropped_interrupts

    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = False
    _console.activity = None
    try:
        with deliver_dropped_interrupts():
            code = command.main(args=args, prog_name="edgekd", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    except typer.TyperException as e:  # usage errors: bad option values, unknown options
        e.show()
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:  # before or after the command's own code, where Typer does not see it
        return _interrupted(command, args)
    except EdgeKDError as e:
        return _failed(str(e), e.exit_code)
    except OSError as e:
        from edgekd._io import describe_os_error

        return _failed(describe_os_error(e), 1)
    except Exception:
        import traceback

        traceback.print_exc()
        typer.secho(
            "error: this is a bug in edgekd; please report it with the traceback above and the command.",
            err=True,
            fg="red",
        )
        return 1
    if code == 130:  # Typer turns a KeyboardInterrupt in a command into this exit code
        return _interrupted(command, args)
    return code if isinstance(code, int) else 0


def _failed(message: str, code: int) -> int:
    if _state["debug"] and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc()
    typer.secho(f"error: {message}", err=True, fg="red")
    return code


def _interrupted(command, args: list[str]) -> int:
    """Report a Ctrl-C that reached no `Interrupted` error: name the command and what it last drew."""
    from edgekd import _console

    words, group = ["edgekd"], command
    for arg in args:
        if arg.startswith("-"):
            continue
        sub = getattr(group, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        group = sub
    doing = " ".join(words) + (f" ({_console.activity})" if _console.activity else "")
    return _failed(f"interrupted during {doing}", 130)


def run() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
