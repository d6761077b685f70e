"""Where edgekd reads and writes outside a run directory: the YAML it ships (inside the wheel, or at the
top of a source checkout), the user's config directory and the cache. The one module that decides
these paths, so that every floor can ask for them without importing the module that fills them."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """`targets`, `models`, `profiles` or `config`: the wheel copies them to `edgekd/_data/`; an
    editable install reads the repo."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgekd's {name}/ folder is missing from the installation ({_PACKAGE}).")


def user_config_dir() -> Path:
    """edgekd's directory in the user's config: `$EDGEKD_CONFIG_DIR`, else `$XDG_CONFIG_HOME/edgekd`,
    else `~/.config/edgekd` (the device list, the user's own profile rows)."""
    if os.environ.get("EDGEKD_CONFIG_DIR"):
        return Path(os.environ["EDGEKD_CONFIG_DIR"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edgekd"


def default_cache_dir() -> Path:
    """`$EDGEKD_CACHE_DIR`, else the platform's user cache dir (`~/.cache/edgekd` on Linux): cached
    teachers, decoded data, analyses and measured rates."""
    if os.environ.get("EDGEKD_CACHE_DIR"):
        return Path(os.environ["EDGEKD_CACHE_DIR"])
    from platformdirs import user_cache_dir  # imported only when needed: not every machine has it

    return Path(user_cache_dir("edgekd"))
