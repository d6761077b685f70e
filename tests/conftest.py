import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache, device list or profile rows."""
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgekd-cache"))
    monkeypatch.setenv("EDGEKD_CONFIG_DIR", str(tmp_path_factory.getbasetemp() / "edgekd-config"))


@pytest.fixture(scope="session")
def digits():
    from edgekd.data import load_digits_splits

    return load_digits_splits(32)


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
