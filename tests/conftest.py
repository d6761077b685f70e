import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The teacher's epochs in every fit that does not test the teacher itself: one recipe, so the session
# cache holds one teacher (and its timed TFLite file) that those fits train and time once. Three epochs
# because test_devices_cli's int8 parity gate needs a student of a teacher that good.
SHARED_TEACHER_EPOCHS = 3


def _isolate(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(base / "edgekd-cache"))
    monkeypatch.setenv("EDGEKD_CONFIG_DIR", str(base / "edgekd-config"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache, device list or profile rows."""
    _isolate(monkeypatch, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """The session's cache (EDGEKD_CACHE_DIR of every test): a fit that is not about caching leaves
    out --cache-dir and finds the teacher, the rates, the decoded digits, the candidates' costs and the
    teacher's timing that an earlier test of the session left there."""
    return tmp_path_factory.getbasetemp() / "edgekd-cache"


@pytest.fixture(scope="session")
def digits():
    from edgekd.data import load_digits_splits

    return load_digits_splits(32)


@pytest.fixture(scope="session")
def searched_fit(tmp_path_factory):
    """One fit that searches, shared by the tests that read its search and its plan (test_search_select,
    test_training_time): pi5, a search of 2 trials under a 30-minute time budget, 2 epochs from a
    1-epoch teacher in a cache of its own (so its teacher trains and its rates are measured in this
    fit, as the plan's assertions need), in one torch thread. Returns (FitResult, the run directory,
    the INFO log); a test that changes the run copies it first."""
    from edgekd.pipeline import FitConfig, fit
    from tests.helpers import one_torch_thread

    root = tmp_path_factory.mktemp("searched-fit")
    config = FitConfig.from_options(
        target="pi5",
        search_budget="2",
        epochs=2,
        teacher_epochs=1,
        time_budget="30m",
        runs_dir=root / "runs",
        cache_dir=root / "cache",
    )
    handler = _Recorder()
    edgekd_log = logging.getLogger("edgekd")
    level = edgekd_log.level
    with pytest.MonkeyPatch.context() as monkeypatch, one_torch_thread():
        _isolate(monkeypatch, tmp_path_factory.getbasetemp())  # before any test's autouse fixture
        edgekd_log.addHandler(handler)
        edgekd_log.setLevel(logging.INFO)
        try:
            result = fit(config)
        finally:
            edgekd_log.removeHandler(handler)
            edgekd_log.setLevel(level)
    return result, Path(result.run), config, "\n".join(handler.lines)


class _Recorder(logging.Handler):
    """Every record formatted as caplog formats it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)-8s %(name)s:%(filename)s:%(lineno)d %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def pytest_configure(config):
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")


@pytest.fixture(scope="session")
def loopback_ssh(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (tests/sshd.py), stopped after the session."""
    from tests import sshd

    reason = sshd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = sshd.start(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
