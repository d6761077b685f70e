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


def pareto_plot(points: Sequence[CandidatePoint], budget_ms: float | None = None) -> bytes | None:
    """Predicted latency against accuracy evidence (marker area: peak memory), the Pareto front joined
    by a line, rejected candidates hollow, the chosen one ringed; candidates without evidence sit on
    a strip below the axis. None when there is nothing to draw.

    Example:
        >>> png = pareto_plot([CandidatePoint("a", 1.0, 2.0, 0.8, True, True, True)])
        >>> png[:4] == b"\\x89PNG"
        True
    """
    if not points:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.8), dpi=100, layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    scored = [p.accuracy for p in points if p.accuracy is not None]
    floor = (min(scored) - 0.05) if scored else 0.0
    largest = max(p.memory_mb for p in points) or 1.0

    def y(p: CandidatePoint) -> float:
        return 100 * (p.accuracy if p.accuracy is not None else floor)

    for p in points:
        size = 30 + 270 * p.memory_mb / largest
        face = "tab:blue" if p.feasible else "none"
        axes.scatter([p.latency_ms], [y(p)], s=size, facecolors=face, edgecolors="tab:blue", alpha=0.7)
        if p.accuracy is not None:  # untrained candidates crowd the bottom strip: no labels there
            axes.annotate(
                p.label, (p.latency_ms, y(p)), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
        if p.chosen:
            axes.scatter([p.latency_ms], [y(p)], s=size * 2.2, facecolors="none", edgecolors="tab:red", lw=2)
    front = sorted((p for p in points if p.on_front and p.accuracy is not None), key=lambda p: p.latency_ms)
    if len(front) > 1:
        axes.plot(
            [p.latency_ms for p in front],
            [y(p) for p in front],
            color="tab:orange",
            lw=1.2,
            label="Pareto front",
        )
        axes.legend(loc="lower right")
    if budget_ms is not None:
        axes.axvline(budget_ms, color="grey", ls="--", lw=1)
        axes.annotate("latency budget", (budget_ms, axes.get_ylim()[0]), fontsize=7, rotation=90, va="bottom")
    axes.set_xscale("log")
    axes.set_xlabel("predicted latency on the target (ms, log scale)")
    untrained = len(points) - len(scored)
    axes.set_ylabel(
        "validation accuracy (%)" + (f"; {untrained} not trained, at the bottom" if untrained else "")
    )
    axes.set_title("student search: filled = feasible, area = peak memory, ringed = chosen")
    axes.grid(alpha=0.3)
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
