"""A call run in a forked child process while the parent goes on (`ForkedCall`): for single-threaded
Python work that would leave a core idle beside other single-threaded work. The fit exports the
teacher for the latency comparison this way while it exports the student (each conversion is a few
seconds of one core; on `make fit`'s two cores they now overlap).

Fork, not spawn: the child shares the parent's model without pickling it and starts in milliseconds.
Hence Linux only (macOS's fork is unsafe with the frameworks torch loads), never once CUDA is
initialised in the parent (a forked child cannot use it), and never once the parent has loaded a
multithreaded runtime the child's work would call into (`FORK_UNSAFE`: JAX, which the TFLite converter
lowers through, warns that a fork after it started its threads will likely deadlock, and in a test
process that had converted before, the child did hang there): `can_fork()` says whether it may be used.
The child ignores Ctrl-C (the parent is interrupted and ends it), runs one torch thread, and writes
nothing to the parent's console or log: it logs nothing and its Python output goes to /dev/null.
`result(timeout)` ends a child that has not answered in time.

Example:
    >>> call = ForkedCall(lambda: 6 * 7) if can_fork() else None
    >>> call.result() if call is not None else 42
    42
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


# Runtimes whose threads, once started in the parent, make a forked child that calls into them hang:
# the converters' (JAX, TensorFlow, LiteRT). Loaded at all is taken as started.
FORK_UNSAFE = ("jax", "tensorflow", "litert_torch", "ai_edge_litert")


def can_fork() -> bool:
    """Whether a `ForkedCall` may run here: on Linux, with CUDA not initialised in this process and
    none of `FORK_UNSAFE` loaded."""
    if sys.platform != "linux" or any(name in sys.modules for name in FORK_UNSAFE):
        return False
    torch = sys.modules.get("torch")
    return torch is None or not torch.cuda.is_initialized()


class ForkedCall:
    """`call()` running in a forked child from construction; `result()` waits for its value."""

    def __init__(self, call: Callable[[], Any]) -> None:
        context = multiprocessing.get_context("fork")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_run_in_child, args=(call, sender), daemon=True)
        self._process.start()
        sender.close()  # the child holds the only sending end: its death reads as EOF here

    def result(self, timeout: float | None = None) -> Any:
        """The call's return value. A call that raised, a child that died first, or one that has not
        answered within `timeout` seconds (it is ended) raises `ForkedCallError` saying which."""
        if timeout is not None and not self._receiver.poll(timeout):
            self.cancel()
            raise ForkedCallError(f"the child process had not returned after {timeout:g} s and was ended")
        try:
            status, value = self._receiver.recv()
        except EOFError:
            self._process.join()
            raise ForkedCallError(
                f"the child process ended (exit code {self._process.exitcode}) before it returned"
            ) from None
        finally:
            self._receiver.close()
        self._process.join()
        if status == "error":
            raise ForkedCallError(value)
        return value

    def cancel(self) -> None:
        """End the child if it still runs and drop its result."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receiver.close()


class ForkedCallError(Exception):
    """The forked call raised (its type and message) or its process died before returning."""


def _run_in_child(call: Callable[[], Any], sender) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.CRITICAL)
    # The parent's sys.stdout may be a progress display's proxy whose lock another thread held at the
    # fork: writing through it could hang the child.
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the child's, until it exits
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)  # the parent's threads keep the other cores
    try:
        value = call()
    except BaseException as e:  # every failure, Ctrl-C aside (ignored), is reported to the parent
        sender.send(("error", f"{type(e).__name__}: {e}"))
    else:
        sender.send(("ok", value))
    finally:
        sender.close()
