"""Ctrl-C that always stops edgekd.

Python raises KeyboardInterrupt at the next bytecode after SIGINT arrives, which can be inside a
garbage-collector callback, a `__del__` or a weakref callback; an exception raised there is printed as
"Exception ignored" and dropped. JAX, which the TFLite converter imports, registers a gc callback that
runs at every collection, so a Ctrl-C during an export (or any stage after one) was often lost and
the run went on as if nothing had happened. Within `deliver_dropped_interrupts`, a dropped
KeyboardInterrupt is sent again a moment later, from another thread (sent from the hook itself, it
would be raised in the same place), until it is raised where the running code sees it.

A Ctrl-C during the import of a native library that runs Python code from C++ is worse: it aborts
the process. Within `imports_uninterrupted`, those imports finish first and the interrupt is raised
after them.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# A gc callback or finaliser takes microseconds: an interrupt sent again after this lands after it.
RESEND_AFTER_S = 0.01


def _resend_interrupt() -> None:
    time.sleep(RESEND_AFTER_S)
    _thread.interrupt_main(signal.SIGINT)


@contextmanager
def deliver_dropped_interrupts() -> Iterator[None]:
    """Within the block, a KeyboardInterrupt that Python would drop as unraisable is raised again."""
    previous = sys.unraisablehook

    def resend_interrupts(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # A bare thread: threading.Thread.start() waits for it, and the interrupt it sends could
            # then be raised in this hook, where it would be dropped again.
            _thread.start_new_thread(_resend_interrupt, ())
            return
        previous(unraisable)

    sys.unraisablehook = resend_interrupts
    try:
        yield
    finally:
        sys.unraisablehook = previous


# Native modules whose import runs Python code from C++ (pybind11): a KeyboardInterrupt raised there is
# thrown through C++ frames and aborts the process ("terminate called after throwing an instance of
# 'pybind11::error_already_set'", exit 134), or leaves CPython's flag that turns exit code 130 into
# death by SIGINT. torch's distributed package does this while `import torch` runs.
HELD_DURING_IMPORT = frozenset({"torch", "openvino", "onnxruntime", "ai_edge_litert", "tensorflow"})


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Within the block a Ctrl-C is only noted; it is sent again a moment after the block ends, so
    that it lands after the code that follows at once (the import system's own bookkeeping, which
    would otherwise forget the module just imported). Outside the main thread, where Python never
    raises it, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            _thread.start_new_thread(_resend_interrupt, ())


class _HeldImportLoader:
    """The module's own loader, run with interrupts held; the module sees its own loader."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        with interrupts_held():
            self.loader.exec_module(module)


class _HoldInterruptsWhileImporting:
    """A meta path finder that finds nothing itself: it hands the top-level modules in `names` to the
    finders after it and holds interrupts while the module found is executed."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1 :]:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HeldImportLoader(spec.loader)
                return spec
        return None


@contextmanager
def imports_uninterrupted(names: frozenset[str] = HELD_DURING_IMPORT) -> Iterator[None]:
    """Within the block, a Ctrl-C during the first import of one of `names` is raised after it."""
    finder = _HoldInterruptsWhileImporting(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
