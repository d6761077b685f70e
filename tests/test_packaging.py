import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_ships_targets_and_models(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("edgekd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgekd/_data/targets/pi5.yaml" in names
    assert {"edgekd/_data/models/students.yaml", "edgekd/_data/models/teachers.yaml"} <= set(names)
    assert "edgekd/_data/config/parity.yaml" in names
