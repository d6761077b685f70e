"""`edgekd.forked_call`: a call run in a forked child, with its value, its failure or its death
reported to the parent; and the fit's use of it for the teacher's export (`fit_shipping`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import pytest

from edgekd.forked_call import FORK_UNSAFE, ForkedCall, ForkedCallError, can_fork

# Not can_fork(): in the whole suite an earlier test has loaded JAX, and these children never call it.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="calls are forked on Linux only")


def test_the_child_returns_what_the_call_computes_from_the_parents_memory_without_pickling_it():
    unpicklable = (lambda x: x + 1, [3] * 1000)  # a lambda: only a fork hands it over
    call = ForkedCall(lambda: unpicklable[0](sum(unpicklable[1])))
    assert call.result() == 3001


def test_a_call_that_raises_is_named_with_its_type_and_message():
    def fails():
        raise ValueError("no such op: aten.foo")

    with pytest.raises(ForkedCallError, match=r"^ValueError: no such op: aten\.foo$"):
        ForkedCall(fails).result()


def test_a_child_that_dies_before_returning_is_an_error_naming_its_exit_code():
    with pytest.raises(ForkedCallError, match="exit code 3"):
        ForkedCall(lambda: os._exit(3)).result()


def test_cancel_ends_a_running_child_and_ctrl_c_is_left_to_the_parent():
    """The child ignores SIGINT (a Ctrl-C at the terminal reaches it too): the parent, interrupted,
    ends it; the child is a daemon, ended at the latest when the parent exits."""
    started = time.perf_counter()
    call = ForkedCall(lambda: time.sleep(30))
    time.sleep(0.2)
    os.kill(call._process.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole group
    time.sleep(0.2)
    assert call._process.is_alive()  # ignored: the parent decides when the child ends
    call.cancel()
    assert not call._process.is_alive() and time.perf_counter() - started < 10


def test_the_child_writes_nothing_through_the_parents_python_output_or_log():
    """Not through sys.stdout (a progress display's proxy in the CLI, whose lock another thread may
    have held at the fork) and not through logging (the run's log is the parent's)."""

    def where_output_goes():
        return sys.stdout.name, sys.stderr.name, logging.getLogger("edgekd").isEnabledFor(logging.CRITICAL)

    assert ForkedCall(where_output_goes).result() == (os.devnull, os.devnull, False)
    assert logging.getLogger("edgekd").isEnabledFor(logging.CRITICAL)  # the parent's is untouched


def test_the_teachers_export_ahead_is_used_for_the_same_file_and_dropped_for_another(caplog):
    from edgekd.fit_shipping import TeacherExportAhead as Ahead
    from edgekd.fit_shipping import _ahead_artifact
    from edgekd.targets import get_target

    pi5, pi4, ethos = get_target("pi5"), get_target("pi4"), get_target("ethos-u55")
    # pi4 ships pi5's file (TFLite fp32): the export made for pi5 is the one pi4 would time
    assert _ahead_artifact(Ahead(pi5, "/unused", ForkedCall(lambda: "artifact")), pi4) == "artifact"
    other = ForkedCall(lambda: time.sleep(30))
    assert _ahead_artifact(Ahead(pi5, "/unused", other), ethos) is None and not other._process.is_alive()

    def fails():
        raise RuntimeError("converter crashed")

    with caplog.at_level(logging.INFO, logger="edgekd.fit_shipping"):
        assert _ahead_artifact(Ahead(pi5, "/unused", ForkedCall(fails)), pi5) is None
    assert "converter crashed" in caplog.text and "exporting it here" in caplog.text


def test_a_child_that_does_not_answer_in_time_is_ended():
    call = ForkedCall(lambda: time.sleep(30))
    with pytest.raises(ForkedCallError, match=r"had not returned after 0\.5 s and was ended"):
        call.result(timeout=0.5)
    assert not call._process.is_alive()


def test_no_fork_once_cuda_is_initialised_or_a_converter_runtime_is_loaded(monkeypatch):
    """JAX (the TFLite converter lowers through it) loaded before the fork hung the child's
    conversion in the test suite's process: then the teacher is exported in process."""
    torch = pytest.importorskip("torch")
    for name in FORK_UNSAFE:
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert can_fork()
    monkeypatch.setitem(sys.modules, "jax", object())
    assert not can_fork()
    monkeypatch.delitem(sys.modules, "jax")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert not can_fork()
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert not can_fork()
