"""`python -m edgekd …`, which is how `torchrun` starts the CLI on every rank."""

from edgekd.cli import run

run()
