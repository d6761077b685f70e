"""Ctrl-C that always stops edgekd.

Python runs a signal handler at the next bytecode, which can be inside a garbage-collector callback,
and an exception raised there is printed as "Exception ignored" and dropped. JAX, which the TFLite
converter imports, registers a callback that runs at every collection, so a Ctrl-C during an export
(or any stage after one) was often lost and the run went on as if nothing had happened. The handler
here sees that it was called inside such a callback and has the interrupt sent again a moment later,
from another thread (sent from the handler itself, it would be handled at once, in the handler),
until it arrives outside the callback and is raised there.
"""

from __future__ import annotations

import _thread
import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# A gc callback takes microseconds: an interrupt sent again after this lands after it returns.
RESEND_AFTER_S = 0.001


def _inside_gc_callback(frame: FrameType | None) -> bool:
    codes = {getattr(getattr(cb, "__func__", cb), "__code__", None) for cb in gc.callbacks}
    codes.discard(None)
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _raise_interrupt_outside_gc_callbacks(signum: int, frame: FrameType | None) -> None:
    if _inside_gc_callback(frame):
        threading.Timer(RESEND_AFTER_S, _thread.interrupt_main, (signum,)).start()
        return
    raise KeyboardInterrupt


@contextmanager
def interrupts_outside_gc_callbacks() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt where the code that was running can see it.
    Leaves SIGINT alone when it is ignored or handled by someone else, or off the main thread."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_interrupt_outside_gc_callbacks)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
