"""`edgekd fit`: its options, how they become a `FitConfig` (fresh, from --config or --resume), and the
summary table it prints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edgekd.errors import EdgeKDError

# Panels of `edgekd fit --help`, in the order they are shown.
TARGET = "Target and devices"
DATA = "Data"
TEACHER = "Teacher"
SEARCH = "Student search"
DISTILLATION = "Distillation"
EXPORT = "Export"
RUN = "Run"


def fit(
    target: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            show_default="pi5",
            rich_help_panel=TARGET,
            help="Target name (see `edgekd targets list`); repeatable: one student that fits every "
            "target, exported for each.",
        ),
    ] = None,
    targets_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--targets-dir",
            metavar="DIR",
            rich_help_panel=TARGET,
            help="A directory of your own target YAML files (repeatable; also EDGEKD_TARGETS_PATH).",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            metavar="NAME|URI",
            rich_help_panel=TARGET,
            help="Profile the exported student on this device at the end (name or URI, see `devices`).",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            show_default="the embedded digits",
            rich_help_panel=DATA,
            help="ImageFolder directory (train/[val/][test/]), or a Hugging Face data set saved with "
            "save_to_disk (an Image and a ClassLabel column).",
        ),
    ] = None,
    data_mode: Annotated[
        str | None,
        typer.Option(
            metavar="MODE",
            show_default="auto",
            rich_help_panel=DATA,
            help="decode: every image decoded once into the cache; stream: decoded per sample by "
            "DataLoader workers, fresh random-resized crops, the teacher live; auto: decode when the "
            "decoded images fit half the available memory and free cache disk.",
        ),
    ] = None,
    input_size: Annotated[
        int | None,
        typer.Option(metavar="PIXELS", rich_help_panel=DATA, help="Square input size in pixels."),
    ] = None,
    augment_draws: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default="4",
            rich_help_panel=DATA,
            help="Augmented views per image, cycled over epochs (0: none).",
        ),
    ] = None,
    augment_shift: Annotated[
        int | None,
        typer.Option(
            metavar="PIXELS",
            show_default="input size / 8 when the teacher keeps 90 % of its validation accuracy on views "
            "shifted that far, else 0",
            rich_help_panel=DATA,
            help="Random translation in pixels.",
        ),
    ] = None,
    hflip: Annotated[
        bool | None,
        typer.Option(
            "--hflip/--no-hflip",
            show_default="on when the teacher keeps 90 % of its validation accuracy on mirrored images",
            rich_help_panel=DATA,
            help="Random horizontal flips.",
        ),
    ] = None,
    rand_augment: Annotated[
        str | None,
        typer.Option(
            metavar="CONFIG",
            rich_help_panel=DATA,
            help="Streamed data: timm's RandAugment on each view (e.g. rand-m9-mstd0.5).",
        ),
    ] = None,
    mixup: Annotated[
        float | None,
        typer.Option(
            metavar="ALPHA",
            show_default="0",
            rich_help_panel=DATA,
            help="Streamed data: timm's mixup (0: off).",
        ),
    ] = None,
    cutmix: Annotated[
        float | None,
        typer.Option(
            metavar="ALPHA",
            show_default="0",
            rich_help_panel=DATA,
            help="Streamed data: timm's cutmix (0: off).",
        ),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            show_default="train one",
            rich_help_panel=TEACHER,
            help="timm model name or an edgekd checkpoint.",
        ),
    ] = None,
    teacher_weights: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            rich_help_panel=TEACHER,
            help="Local .pth/.safetensors weights for a timm --teacher.",
        ),
    ] = None,
    teacher_epochs: Annotated[
        int | None,
        typer.Option(
            metavar="N", rich_help_panel=TEACHER, help="Epochs when edgekd trains or fine-tunes the teacher."
        ),
    ] = None,
    teacher_cache: Annotated[
        bool | None,
        typer.Option(
            "--teacher-cache/--no-teacher-cache",
            show_default="teacher-cache",
            rich_help_panel=TEACHER,
            help="Compute the frozen teacher's outputs once per augmented view.",
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            metavar="ARCH",
            rich_help_panel=SEARCH,
            help="Use this student architecture instead of searching.",
        ),
    ] = None,
    search_budget: Annotated[
        str | None,
        typer.Option(
            metavar="TRIALS|TIME|all",
            show_default="4",
            rich_help_panel=SEARCH,
            help="Student search: trials (candidates that enter the first rung), wall clock (20m, 1.5h), "
            "0 (no trials: the feasible candidate with the most MACs) or all.",
        ),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            metavar="retention|accuracy|latency",
            show_default="retention",
            rich_help_panel=SEARCH,
            help="What the student search chooses for: retention (the fastest student whose trial "
            "accuracy is shown to keep --min-retention of the best trial's: the low end of its 95 % interval "
            "reaches it), accuracy "
            "(the most accurate; near-ties go to the faster) or latency (the fastest that learns clearly "
            "more than guessing the largest class).",
        ),
    ] = None,
    min_retention: Annotated[
        float | None,
        typer.Option(
            metavar="SHARE",
            show_default="0.97",
            rich_help_panel=SEARCH,
            help="For --objective retention: the share of the best trial accuracy a student must keep, "
            "in (0, 1] (0.97 is 97 %).",
        ),
    ] = None,
    search_epochs: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default="half of --epochs",
            rich_help_panel=SEARCH,
            help="Epochs of the search's full trial budget; its deciding rung sees a third as many images.",
        ),
    ] = None,
    search_images: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default="all",
            rich_help_panel=SEARCH,
            help="Training images of the search's full trial budget; its deciding rung uses a third.",
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default="15",
            rich_help_panel=DISTILLATION,
            help="Distillation epochs; on fewer than 3,200 training images, enough to see 37,000 images.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default="64, or 32/16 when 64 would leave the training under 1,500 steps",
            rich_help_panel=DISTILLATION,
            help="Batch size.",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            metavar="RATE",
            show_default="0.05 × batch / 128 for sgd, 0.003 × batch / 64 for adamw, batch counted as at "
            "least 64",
            rich_help_panel=DISTILLATION,
            help="Peak learning rate (one-cycle).",
        ),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            metavar="DECAY", show_default="0.0005", rich_help_panel=DISTILLATION, help="Weight decay."
        ),
    ] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            metavar="sgd|adamw",
            show_default="sgd",
            rich_help_panel=DISTILLATION,
            help="sgd (Nesterov momentum 0.9) or adamw.",
        ),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            metavar="onecycle|cosine",
            show_default="onecycle",
            rich_help_panel=DISTILLATION,
            help="Learning-rate schedule.",
        ),
    ] = None,
    loss: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME[:WEIGHT]",
            show_default="kd + sp; kd on small data",
            rich_help_panel=DISTILLATION,
            help="Distillation loss term, repeatable: kd, logit_mse, dkd, fitnet, at, rkd, sp, dist, ce. "
            "kd alone distils from the teacher's cached logits.",
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            metavar="T",
            show_default="4",
            rich_help_panel=DISTILLATION,
            help="Temperature of the kd, dkd and dist terms.",
        ),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            metavar="WEIGHT",
            show_default="0.9",
            rich_help_panel=DISTILLATION,
            help="kd's weight on the teacher (1 - alpha on the labels).",
        ),
    ] = None,
    label_smoothing: Annotated[
        float | None,
        typer.Option(
            metavar="EPSILON",
            show_default="0",
            rich_help_panel=DISTILLATION,
            help="Label smoothing of the label term.",
        ),
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option(
            metavar="SCHEME",
            show_default="offline",
            rich_help_panel=DISTILLATION,
            help="offline (frozen teacher), online (co-trained with a copy of the teacher), born-again "
            "(the student teaches a fresh copy of itself) or assistant (teacher → TA → student).",
        ),
    ] = None,
    assistant: Annotated[
        str | None,
        typer.Option(
            metavar="ARCH",
            show_default="picked from the catalog",
            rich_help_panel=DISTILLATION,
            help="Teacher assistant architecture for --scheme assistant.",
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            metavar="DECAY",
            show_default="0.99 for the final training below 3,200 training images, else off",
            rich_help_panel=DISTILLATION,
            help="Keep and ship an exponential moving average of the weights; 0: off.",
        ),
    ] = None,
    clip_grad_norm: Annotated[
        float | None,
        typer.Option(
            metavar="NORM",
            show_default="off",
            rich_help_panel=DISTILLATION,
            help="Clip the gradient norm to this.",
        ),
    ] = None,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            show_default="no-bf16",
            rich_help_panel=DISTILLATION,
            help="bfloat16 autocast on the CPU.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            metavar="scratch",
            show_default="none",
            rich_help_panel=DISTILLATION,
            help="scratch: also train the chosen student without the teacher (same recipe), so the report "
            "shows what distillation bought; doubles the training time.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(metavar="N", show_default="0", rich_help_panel=DISTILLATION, help="Random seed."),
    ] = None,
    qat_epochs: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default="2",
            rich_help_panel=EXPORT,
            help="Quantization-aware epochs for an int8 target (0: post-training only).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            metavar="N", show_default="1", rich_help_panel=EXPORT, help="Threads for host parity and latency."
        ),
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            show_default="no limit",
            rich_help_panel=RUN,
            help="Wall clock for the whole fit (90s, 20m, 1.5h). The teacher's training counts first; "
            "candidates whose final training cannot fit what is left are dropped (fewer epochs when none "
            "can); the final training keeps what the slowest remaining choice needs, the search gets the "
            "rest, at most 30 %, as its wall clock.",
        ),
    ] = None,
    runs_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", show_default="runs", rich_help_panel=RUN, help="Where run directories are created."
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", show_default="the user cache dir", rich_help_panel=RUN, help="Teacher cache."
        ),
    ] = None,
    accelerator: Annotated[
        str | None,
        typer.Option(
            metavar="DEVICE",
            show_default="auto",
            help="Where the teacher, the search's trials and the student train: auto (CUDA, then MPS, "
            "then the CPU; default), cpu, cuda, cuda:N or mps; mixed precision on a GPU. Export, parity "
            "and latency run on the CPU.",
            rich_help_panel=RUN,
        ),
    ] = None,
    sync_batchnorm: Annotated[
        bool | None,
        typer.Option(
            "--sync-batchnorm/--no-sync-batchnorm",
            show_default="no-sync-batchnorm",
            help="Under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm).",
            rich_help_panel=RUN,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            rich_help_panel=RUN,
            help="YAML with any of these options: keys = option names (epochs, lr), at the top level or "
            "under training: and distillation: as a run's config.yaml has them.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(metavar="RUN", rich_help_panel=RUN, help="Continue an interrupted run directory."),
    ] = None,
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
    with RichObserver(on_run=_log_into_run) as observer:
        result = run_fit(fit_config, resume=resume, observer=observer)
    _print_summary(console, result)
    _print_next_steps(console, result, fit_config.device)


def _print_next_steps(console, result, device: str | None) -> None:
    from edgekd._capture import active_log
    from edgekd._console import print_next_steps

    run = Path(result.run)
    artifact = run / result.targets[0].export.file
    steps = [
        (f"edgekd predict {artifact} IMAGE...", "the student's top labels for your images"),
        (f"edgekd profile {artifact} --device {device or 'ssh://USER@HOST'}", "its latency on a device"),
        (f"edgekd export {run} --all", "every format and precision, checked against PyTorch"),
    ]
    log = active_log()
    print_next_steps(console, steps, str(log) if log else None)


def _log_into_run(run: str) -> None:
    """The command's log moves into the run directory once there is one: the run keeps its own."""
    from edgekd._capture import move_log
    from edgekd.rundir import RunDir

    move_log(RunDir(Path(run)).log)


def _print_summary(console, result) -> None:
    from rich.table import Table

    from edgekd._console import fit_columns, identifier_column, wrapping_column
    from edgekd.devices import central_figure, runtime_description
    from edgekd.rundir import RunDir

    s, t = result.student, result.teacher
    table = Table(title=f"edgekd fit → {result.run}", show_header=False)
    identifier_column(table, "")
    wrapping_column(table, "")
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
            f"predicted for {device['predicted_for']} "
            f"({100 * (device['measured_over_predicted'] - 1):+.0f} % against the prediction)",
        )
    table.add_row("report", str(RunDir(Path(result.run)).report_html))
    console.print(fit_columns(table, console))
