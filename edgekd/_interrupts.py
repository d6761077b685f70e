"""Ctrl-C that always stops edgekd.

Python raises KeyboardInterrupt at the next bytecode after SIGINT arrives, which can be inside a
garbage-collector callback, a `__del__` or a weakref callback; an exception raised there is printed as
"Exception ignored" and dropped. JAX, which the TFLite converter imports, registers a gc callback that
runs at every collection, so a Ctrl-C during an export (or any stage after one) was often lost and
the run went on as if nothing had happened. Within `deliver_dropped_interrupts`, a dropped
KeyboardInterrupt is sent again a moment later, from another thread (sent from the hook itself, it
would be raised in the same place), until it is raised where the running code sees it.
"""

from __future__ import annotations

import _thread
import signal
import sys
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
