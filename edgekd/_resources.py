"""Where the YAML that ships with edgekd lives: inside the wheel, or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """`targets`, `models`, `profiles` or `config`: the wheel copies them to `edgekd/_data/`; an
    editable install reads the repo."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgekd's {name}/ folder is missing from the installation ({_PACKAGE}).")
