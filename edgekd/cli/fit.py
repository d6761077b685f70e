"""`edgekd fit`: its options, how they become a `FitConfig` (fresh, from --config or --resume), and the
summary table it prints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.options import TargetsDirOption
from edgekd.errors import EdgeKDError


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
        int | None,
        typer.Option(
            help="Epochs of the search's full trial budget; its deciding rung trains a third as long "
            "(default: a fifth of --epochs)."
        ),
    ] = None,
    search_images: Annotated[
        int | None,
        typer.Option(
            help="Training images of the search's full trial budget; its deciding rung uses a third "
            "(default: all)."
        ),
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
    accelerator: Annotated[
        str | None,
        typer.Option(
            help="Where the teacher, the search's trials and the student train: auto (CUDA, then MPS, "
            "then the CPU; default), cpu, cuda, cuda:N or mps; mixed precision on a GPU. Export, parity "
            "and latency run on the CPU.",
            rich_help_panel="Run",
        ),
    ] = None,
    sync_batchnorm: Annotated[
        bool | None,
        typer.Option(
            "--sync-batchnorm/--no-sync-batchnorm",
            help="Under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm).",
            rich_help_panel="Run",
        ),
    ] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where run directories are created.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Teacher cache (default: user cache dir).")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML with any of these options: keys = option names (epochs, lr), at the top level or "
            "under training: and distillation: as a run's config.yaml has them."
        ),
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
            fit_config = (
                FitConfig.from_yaml(config, **overrides) if config else FitConfig.from_options(**overrides)
            )
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

    from edgekd.devices import central_figure, runtime_description
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
            statistic, figure = central_figure(lat)
            table.add_row(
                f"host latency{on}",
                f"{statistic} {figure:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({runtime_description(lat)})",
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
