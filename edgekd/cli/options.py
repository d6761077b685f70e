"""Options that several commands share, declared once so that they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TargetsDirOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--targets-dir",
        metavar="DIR",
        help="A directory of your own target YAML files (repeatable; also EDGEKD_TARGETS_PATH).",
    ),
]
