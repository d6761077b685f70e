"""Other libraries' output goes to the command's log, edgekd's own lines to the terminal: C++ logs on
fd 2, Python writes to sys.stderr, warnings and other loggers, each caught in a real subprocess."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

PROBE = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from pathlib import Path
    from edgekd import _capture, _console

    debug = sys.argv[1] == "debug"
    _console.setup_logging(debug)
    with _capture.captured_output("probe", debug=debug, terminal_console=_console.console):
        first = _capture.active_log()
        os.write(2, b"I0000 native line from C++ before the move\\n")
        _capture.move_log(Path(sys.argv[2]))
        os.write(2, b"W0000 native line from C++ after the move\\n")
        print("a library printing to sys.stderr", file=sys.stderr)
        warnings.warn("a library's UserWarning")
        logging.getLogger("somelib").info("a library's chatter")
        logging.getLogger("somelib").warning("a library's warning")
        logging.getLogger("somelib").error("a library's error")
        logging.getLogger("edgekd.probe").info("edgekd's own line")
    print(json.dumps({"first": str(first), "named": str(_capture.last_log_with_library_output())}))
    """
).replace("import logging,", "import json, logging,")

LIBRARY_LINES = (
    "native line from C++ before the move",
    "native line from C++ after the move",
    "a library printing to sys.stderr",
    "a library's UserWarning",
    "a library's warning",
)


def _probe(tmp_path, mode):
    log = tmp_path / "run" / "edgekd.log"
    env = {**os.environ, "EDGEKD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(log)], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return done, log, json.loads(done.stdout.splitlines()[-1])


def test_library_output_goes_to_the_log_and_edgekd_lines_to_the_terminal(tmp_path):
    done, log, paths = _probe(tmp_path, "quiet")
    terminal = done.stderr
    assert "edgekd's own line" in terminal and "a library's error" in terminal  # errors still reach you
    for line in (*LIBRARY_LINES, "a library's chatter"):
        assert line not in terminal, line
    logged = log.read_text()
    for line in (*LIBRARY_LINES, "edgekd's own line", "a library's error"):
        assert line in logged, line
    assert "a library's chatter" not in logged  # other libraries' INFO: not even in the log
    # The log moved into the run directory with what it held; the cache keeps no copy.
    assert logged.index("before the move") < logged.index("after the move")
    assert not os.path.exists(paths["first"]) and paths["named"] == str(log)


def test_with_debug_the_libraries_print_on_the_terminal_and_python_records_still_reach_the_log(tmp_path):
    done, log, _ = _probe(tmp_path, "debug")
    for line in (*LIBRARY_LINES, "a library's chatter", "edgekd's own line"):
        assert line in done.stderr, line
    assert "a library's chatter" in log.read_text() and "native line" not in log.read_text()


@pytest.mark.slow
def test_export_all_prints_no_line_of_another_library(tmp_path, digits):
    """Acceptance: `edgekd export --all` of a real model at default verbosity shows edgekd's lines
    alone; what coremltools, TensorFlow/LiteRT, XNNPACK and torch print is in the run's log."""
    from edgekd.checkpoint import ModelInfo, save_model
    from tests.helpers import tiny_export_model

    checkpoint = tmp_path / "student.safetensors"
    save_model(checkpoint, tiny_export_model(), ModelInfo("mobilenetv3_small_050", digits.preprocessing))
    env = {**os.environ, "COLUMNS": "80", "EDGEKD_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "edgekd.cli", "export", str(checkpoint), "--all", "--no-latency"]
    options = ["--parity-images", "32", "--calibration-images", "200", "--out", str(tmp_path / "out")]
    done = subprocess.run([*command, *options], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    third_party = re.compile(
        r"coremltools|absl|oneDNN|XNNPACK|TensorFlow|UserWarning|Warning:|torch/|jax|onnxscript|"
        r"^[IWEF]\d{4} |^(INFO|WARNING): ",
        re.IGNORECASE | re.MULTILINE,
    )
    assert not third_party.findall(printed), printed
    logged = (tmp_path / "out" / "edgekd.log").read_text()
    assert third_party.search(logged)  # they did print: the log has them (a test that can fail)
    assert "XNNPACK" in logged and "coremltools" in logged
    for name in ("coreml", "onnx", "openvino", "tflite"):  # the table's formats, whole at 80 columns
        assert re.search(rf"│ {name} (fp32|fp16|int8) +│", done.stdout), name
    assert f"edgekd predict {tmp_path / 'out'}" in done.stdout and "edgekd profile" in done.stdout
