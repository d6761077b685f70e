"""edgekd: distil a large vision model into a small one that fits a real edge device.

`import edgekd` stays light (no torch): the public functions load their stage on first use.

Example:
    >>> import edgekd
    >>> edgekd.get_target("pi5").compute.cores
    4
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["EdgeKDError", "__version__", "fit", "get_target", "list_targets"]

from edgekd.errors import EdgeKDError

_LAZY = {
    "fit": "edgekd.pipeline",
    "FitConfig": "edgekd.pipeline",
    "get_target": "edgekd.targets",
    "list_targets": "edgekd.targets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
