"""`edgekd predict`: an exported artifact run on image files, with its contract's preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def predict_command(
    artifact: Annotated[
        Path,
        typer.Argument(
            metavar="ARTIFACT",
            help="An exported file (.tflite, .xml, .onnx) with its sidecar .json beside it.",
        ),
    ],
    images: Annotated[
        list[Path], typer.Argument(metavar="IMAGE", help="Image files to classify.", show_default=False)
    ],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Labels to print per image.")] = 5,
    threads: Annotated[int, typer.Option(min=1, help="Runtime threads.")] = 1,
) -> None:
    """Classify images with an exported model, preprocessed as its sidecar says; print the top-k labels."""
    from rich.console import Console
    from rich.markup import escape

    from edgekd.classify import classify

    predictions = classify(artifact, images, top=top_k, threads=threads)
    console = Console()
    width = max(len(label) for p in predictions for label, _ in p.top)
    for prediction in predictions:
        # The path on a line of its own, never wrapped or cut: a user copies it.
        console.print(f"[bold]{escape(str(prediction.image))}[/bold]", soft_wrap=True)
        for label, probability in prediction.top:
            console.print(f"  {escape(label.ljust(width))}  {100 * probability:6.2f} %", soft_wrap=True)
