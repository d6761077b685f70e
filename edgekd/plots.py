"""The report's figures, each rendered to PNG bytes.

matplotlib is imported inside the functions that draw, so `import edgekd` and `edgekd --help` stay light.
Each figure is a plain `matplotlib.figure.Figure` on its own Agg canvas rather than a pyplot figure: that
needs no display, leaves the user's chosen backend alone and keeps no global figure registry alive.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_COLUMNS = 3  # panels per row; five panels stay readable at a report's width


@dataclass(frozen=True)
class Series:
    """One curve: a label and one value per epoch (`None` where that epoch did not record it)."""

    label: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Panel:
    """One set of axes of the training-curves figure."""

    title: str
    series: tuple[Series, ...]


# (panel title, ((history key, curve label, scale), ...)). Fractions are drawn as percentages.
_CURVES = (
    ("train loss", (("train_loss", "train loss", 1.0),)),
    (
        "val accuracy (%)",
        (("val_accuracy", "accuracy", 100.0), ("val_teacher_agreement", "agreement with teacher", 100.0)),
    ),
    ("val KL to the teacher", (("val_teacher_kl", "KL(teacher, student)", 1.0),)),
    ("val ECE", (("val_ece", "expected calibration error", 1.0),)),
    ("learning rate", (("lr", "learning rate", 1.0),)),
)


def curve_panels(
    history: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None = None
) -> list[Panel]:
    """Which curves the training-curves figure shows.

    A series that no epoch recorded (no teacher, hence no agreement or KL) is left out, and so is a panel
    left with no series. Keys missing from an older `history.json` count as not recorded.

    Args:
        history: one dict per epoch, as `dataclasses.asdict(EpochMetrics)` writes it.
        baseline: the same for the student trained without the teacher (`--baseline scratch`), drawn
            beside the distilled student's validation accuracy.

    Returns:
        The panels in drawing order; empty when there is nothing to draw.

    Example:
        >>> [p.title for p in curve_panels([{"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.9}])]
        ['train loss', 'val accuracy (%)']
    """
    panels = []
    for title, curves in _CURVES:
        series = tuple(
            Series(label, tuple(None if m.get(key) is None else scale * m[key] for m in history))
            for key, label, scale in curves
            if any(m.get(key) is not None for m in history)
        )
        if series and baseline and curves[0][0] == "val_accuracy":
            values = tuple(100.0 * m["val_accuracy"] for m in baseline)
            series = (*series, Series("accuracy without the teacher", values))
        if series:
            panels.append(Panel(title, series))
    return panels


def training_curves(
    history: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None = None
) -> bytes | None:
    """Draw the per-epoch training curves, one panel per quantity, epoch on the x axis.

    Args:
        history: one dict per epoch, as `dataclasses.asdict(EpochMetrics)` writes it.

    Returns:
        The figure as PNG bytes, or `None` when the history is empty.

    Example:
        >>> png = training_curves([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.3}])
        >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    panels = curve_panels(history, baseline)
    if not history or not panels:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in history]
    columns = min(_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), dpi=100, layout="constrained")
    for index, panel in enumerate(panels, start=1):
        axes = figure.add_subplot(rows, columns, index)
        for series in panel.series:
            # NaN leaves a gap where one epoch did not record the value, instead of joining its neighbours.
            values = [math.nan if v is None else v for v in series.values]
            # the baseline trains its own epochs, which need not be as many as the history's
            x = epochs if len(values) == len(epochs) else list(range(1, len(values) + 1))
            axes.plot(x, values, marker="o", markersize=3, label=series.label)
        axes.set_title(panel.title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axes.grid(alpha=0.3)
        if len(panel.series) > 1:
            axes.legend()
    return to_png(figure)


@dataclass(frozen=True)
class CandidatePoint:
    """One candidate of the student search as the Pareto plot draws it."""

    label: str
    latency_ms: float
    memory_mb: float
    accuracy: float | None  # the evidence (first-rung validation accuracy, comparable); None: not trained
    feasible: bool
    on_front: bool
    chosen: bool = False


def pareto_plot(
    points: Sequence[CandidatePoint], budget_ms: float | None = None, target: str = "the target"
) -> bytes | None:
    """`pareto_figure` as PNG bytes; None when no candidate was trained.

    Example:
        >>> png = pareto_plot([CandidatePoint("a", 1.0, 2.0, 0.8, True, True, True)], budget_ms=5.0)
        >>> png[:4] == b"\\x89PNG"
        True
    """
    figure = pareto_figure(points, budget_ms, target)
    return None if figure is None else to_png(figure)


def pareto_figure(
    points: Sequence[CandidatePoint], budget_ms: float | None = None, target: str = "the target"
) -> Any:
    """The trained candidates only: predicted latency on `target` against their accuracy evidence
    (marker area: peak memory; hollow: rejected by a budget), the Pareto front drawn as a staircase and
    named, the chosen one starred, the latency budget a labelled line. Candidates never trained have
    no accuracy to place, so they are counted in the title, not drawn. None when none was trained.

    Example:
        >>> pareto_figure([CandidatePoint("a", 1.0, 2.0, None, True, False)]) is None
        True
    """
    trained = [p for p in points if p.accuracy is not None]
    if not trained:
        return None
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(8.0, 5.0), dpi=100, layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    largest = max(p.memory_mb for p in trained) or 1.0

    def size(p: CandidatePoint) -> float:
        return 30 + 270 * p.memory_mb / largest

    for p in trained:
        face = "tab:blue" if p.feasible else "none"
        axes.scatter([p.latency_ms], [100 * p.accuracy], s=size(p), facecolors=face, edgecolors="tab:blue",
                     alpha=0.7, zorder=3)  # fmt: skip
        axes.annotate(p.label, (p.latency_ms, 100 * p.accuracy), fontsize=7, xytext=(5, 4),
                      textcoords="offset points")  # fmt: skip
    handles = [
        Line2D([], [], ls="", marker="o", color="tab:blue", label="trained, within the budgets"),
        Line2D([], [], ls="", marker="o", mfc="none", color="tab:blue", label="trained, over a budget"),
    ]
    front = sorted((p for p in trained if p.on_front), key=lambda p: p.latency_ms)
    if front:
        xs, ys = [p.latency_ms for p in front], [100 * p.accuracy for p in front]
        # a staircase: each front member is the best accuracy up to the next one's latency
        axes.step(xs, ys, where="post", color="tab:orange", lw=1.6, zorder=2)
        axes.scatter(xs, ys, s=[size(p) for p in front], facecolors="none", edgecolors="tab:orange",
                     lw=1.6, zorder=4)  # fmt: skip
        handles.append(
            Line2D([], [], color="tab:orange", marker="o", mfc="none", label=f"Pareto front ({len(front)})")
        )
    for p in (p for p in trained if p.chosen):
        axes.scatter([p.latency_ms], [100 * p.accuracy], s=260, marker="*", color="tab:red", zorder=5)
        handles.append(Line2D([], [], ls="", marker="*", ms=12, color="tab:red", label=f"chosen: {p.label}"))
    if budget_ms is not None:
        axes.axvline(budget_ms, color="tab:gray", ls="--", lw=1.2)
        handles.append(Line2D([], [], color="tab:gray", ls="--", label=f"latency budget {budget_ms:g} ms"))
    axes.set_xscale("log")
    # plain milliseconds (0.5, 2, 20) rather than powers of ten, at 1, 2 and 5 of each decade
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    axes.set_xlabel(f"predicted latency on {target} (ms, log scale)")
    axes.set_ylabel("first-rung validation accuracy (%)")
    untrained = len(points) - len(trained)
    axes.set_title(
        f"{len(trained)} trained candidates"
        + (f" ({untrained} not trained, not drawn)" if untrained else "")
        + "; marker area = peak memory",
        fontsize=10,
    )
    axes.grid(alpha=0.3, which="both")
    axes.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
    return figure


def confusion_plot(labels: Sequence[str], panels: Sequence[tuple[str, Any]]) -> bytes:
    """Confusion matrices side by side (row: true class, column: predicted), each cell shaded by the
    share of its row, with the count written in when the classes are few enough to read.

    Args:
        labels: the class names, in the matrices' order.
        panels: (title, square matrix of counts) per model.

    Example:
        >>> png = confusion_plot(["a", "b"], [("student", [[3, 1], [0, 4]])])
        >>> png[:4] == b"\\x89PNG"
        True
    """
    import numpy as np
    from matplotlib.figure import Figure

    classes = len(labels)
    side = min(7.0, max(3.6, 0.38 * classes + 1.8))
    figure = Figure(figsize=(side * len(panels) + 0.8, side), dpi=100, layout="constrained")
    image = None
    for index, (title, counts) in enumerate(panels, start=1):
        counts = np.asarray(counts)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axes = figure.add_subplot(1, len(panels), index)
        image = axes.imshow(100 * shares, cmap="Blues", vmin=0, vmax=100)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        if classes <= 40:
            ticks = range(classes)
            font = 8 if classes <= 15 else 6
            axes.set_xticks(ticks, [str(label) for label in labels], rotation=90, fontsize=font)
            axes.set_yticks(ticks, [str(label) for label in labels], fontsize=font)
        if classes <= 20:
            for (row, column), count in np.ndenumerate(counts):
                if count:
                    dark = shares[row, column] > 0.5
                    axes.text(column, row, str(count), ha="center", va="center", fontsize=7,
                              color="white" if dark else "black")  # fmt: skip
    figure.colorbar(image, ax=figure.axes, shrink=0.8, label="share of the true class (%)")
    return to_png(figure)


def examples_grid(examples: Sequence[tuple[Any, str]], columns: int = 6) -> bytes:
    """Images in a grid, each captioned (the report's "true → predicted").

    Args:
        examples: (uint8 HWC RGB array, caption) per image.
        columns: images per row at most.

    Example:
        >>> import numpy as np
        >>> examples_grid([(np.zeros((8, 8, 3), np.uint8), "cat → dog")])[:4] == b"\\x89PNG"
        True
    """
    from matplotlib.figure import Figure

    columns = max(1, min(columns, len(examples)))
    rows = math.ceil(len(examples) / columns)
    figure = Figure(figsize=(1.9 * columns, 2.1 * rows), dpi=100, layout="constrained")
    for index, (pixels, caption) in enumerate(examples, start=1):
        axes = figure.add_subplot(rows, columns, index)
        axes.imshow(pixels, interpolation="nearest")
        axes.set_title(caption, fontsize=8)
        axes.set_axis_off()
    return to_png(figure)


def to_png(figure: Any) -> bytes:
    """Render a `matplotlib.figure.Figure` to PNG bytes on an Agg canvas.

    Args:
        figure: the figure to render; it is attached to a fresh Agg canvas.

    Returns:
        The PNG file's bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # binds itself to the figure; an explicit canvas needs no global backend
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
