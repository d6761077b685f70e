"""`edgekd report`: a fit run's report written again from its run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    run: Annotated[Path, typer.Argument(help="A finished `fit` run directory (it holds result.json).")],
) -> None:
    """Write a run's report.html, report.md and figures again from its result.json, exports.json and
    misclassified examples (after `edgekd export`, or with a newer edgekd)."""
    from edgekd.report import regenerate

    *figures, markdown, html = regenerate(run)
    typer.echo(f"wrote {html} and {markdown} ({len(figures)} figures)")
