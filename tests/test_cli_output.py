"""What the commands print, read at 80 columns: names whole in every table, `fit --help` in panels with
its defaults, and progress on screen before the slow work of `search` and `latency predict` starts."""

import io
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from rich.console import Console

from edgekd.cli import main
from tests.conftest import REPO

LONG_NAMES = ("tf_mobilenetv3_small_minimal_100", "mobilenetv4_conv_small_050", "mobilenetv3_small_050")


@pytest.fixture
def eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def _table_rows(text: str) -> list[list[str]]:
    """The cells of a Rich table's body lines, stripped (one list per printed line)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]


def test_targets_list_keeps_every_target_name_whole_at_80_columns(eighty_columns, capsys):
    from edgekd.targets import list_targets

    assert main(["targets", "list"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    first_cells = [row[0] for row in _table_rows(out)]
    for name in list_targets():
        assert name in first_cells, (name, out)
    assert "…" not in out


def test_models_list_keeps_every_architecture_whole_at_80_columns(eighty_columns, capsys):
    from edgekd.catalog import load_students

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    first_cells = [row[0] for row in _table_rows(out)]
    assert all(c.arch in first_cells for c in load_students()) and "…" not in out


def test_search_shows_its_progress_before_costing_and_names_whole_at_80_columns(
    eighty_columns, capsys, monkeypatch
):
    """Acceptance 5, in process: the bar naming the costing is up when the first candidate is costed
    (three real candidates at one input size, to keep the test short); then no name is cut."""
    import edgekd.catalog
    import edgekd.search
    from edgekd import _console

    students = [c for c in edgekd.catalog.load_students() if c.arch in LONG_NAMES]
    real_space, real_assess, seen = edgekd.search.search_space, edgekd.search.assess, []

    def first_size_only(candidates, targets):
        space = real_space(candidates, targets)
        return [(c, size) for c, size in space if size == space[0][1]]

    def assess(*args, **kwargs):
        seen.append(_console.activity)
        return real_assess(*args, **kwargs)

    monkeypatch.setattr(edgekd.catalog, "load_students", lambda: students)
    monkeypatch.setattr(edgekd.search, "search_space", first_size_only)
    monkeypatch.setattr(edgekd.search, "assess", assess)
    assert main(["search", "--target", "pi5", "--target", "pi4"]) == 0
    assert seen[0] == "costing 3 candidates at 1 input size for pi5, pi4" and len(seen) == 3
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert {row[0] for row in _table_rows(out)} >= set(LONG_NAMES) and "…" not in out


def test_export_table_keeps_formats_and_precisions_whole_at_80_columns():
    from edgekd._console import fit_columns
    from edgekd.cli.export import _export_table
    from edgekd.export.suite import ExportRow

    rows = [
        ExportRow("pytorch", "fp32", "reference", accuracy=0.9, latency_ms=1.5),
        ExportRow("coreml", "fp16", "exported, spec checked (cannot run here)", size_mb=1.27),
        ExportRow("openvino", "int8", "ok", size_mb=0.7, accuracy=0.91, top1_agreement=0.995, latency_ms=0.9),
        ExportRow("tflite", "int8", "ok", size_mb=0.7, latency_ms=0.912, latency_ratio=0.61),
    ]
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(fit_columns(_export_table(rows, "edgekd export mobilenetv3_small_050 → runs/x"), console))
    out = console.file.getvalue()
    cells = _table_rows(out)
    assert [c[0] for c in cells if c[0]] == [f"{r.format} {r.precision}" for r in rows]
    assert "…" not in out and "(0.61×)" in out and max(len(line) for line in out.splitlines()) <= 80


def test_fit_help_has_its_panels_its_defaults_and_no_python_types(monkeypatch, capsys):
    import typer

    from edgekd.cli import app
    from edgekd.fit_config import OPTION_GROUPS
    from edgekd.fit_recipe import DEFAULT_EPOCHS
    from edgekd.pipeline import FitConfig

    monkeypatch.setenv("COLUMNS", "100")
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    for panel in ("Target and devices", "Data", "Teacher", "Student search", "Distillation", "Export", "Run"):
        assert f"─ {panel} ─" in out, panel
    assert "<" not in out and "[default: (15)]" in out  # no `<list[Path]>`, `<bool>`, `<int>`
    params = typer.main.get_command(app).commands["fit"].params
    assert all(p.rich_help_panel for p in params), [p.name for p in params if not p.rich_help_panel]
    config, checked = FitConfig(), 0
    for p in params:  # a default the help states is the one FitConfig has
        value = config.option(p.name) if p.name in OPTION_GROUPS else None
        if p.name == "epochs":  # None in FitConfig: decided from the data, DEFAULT_EPOCHS but on small data
            value = DEFAULT_EPOCHS
        if not isinstance(p.show_default, str) or value is None:
            continue
        if isinstance(value, bool):
            expected = (p.opts if value else p.secondary_opts)[0].lstrip("-")
        elif isinstance(value, float):
            expected = f"{value:g}"
        elif isinstance(value, tuple):
            expected = ", ".join(value)
        else:
            expected = str(value)
        assert p.show_default == expected, p.name
        checked += 1
    assert checked >= 18


def _seconds_to_show(argv: list[str], env: dict, stage: str) -> tuple[float, str, bool]:
    """Run the CLI on a pty (so Rich draws as on a terminal) until `stage` shows on stderr: seconds
    until it did, what was shown, and whether the command was still working then."""
    primary, secondary = pty.openpty()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgekd.cli", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env=env,
        cwd=REPO,
    )
    os.close(secondary)
    shown = ""
    try:
        while stage not in shown and time.perf_counter() - started < 60:
            ready, _, _ = select.select([primary], [], [], 1)
            if ready:
                try:
                    shown += os.read(primary, 4096).decode(errors="replace")
                except OSError:  # the command ended and closed the pty
                    break
        return time.perf_counter() - started, shown, process.poll() is None
    finally:
        process.kill()
        process.wait()
        os.close(primary)


@pytest.mark.parametrize(
    ("argv", "stage"),
    [
        (["search", "--target", "pi5"], "loading the student catalog for pi5"),
        (["latency", "predict", "mobilenetv3_small_100", "--target", "pi5"], "tracing mobilenetv3_small_100"),
    ],
    ids=["search", "latency-predict"],
)
def test_progress_is_on_the_terminal_while_the_work_has_not_finished(tmp_path, argv, stage):
    """Acceptance 5 on a real terminal: the first thing `search` or `latency predict` prints, with an
    empty cache (minutes of tracing ahead), is its named progress, while it is still working."""
    env = {**os.environ, "EDGEKD_CACHE_DIR": str(tmp_path), "COLUMNS": "120", "PYTHONPATH": str(REPO)}
    seconds, shown, working = _seconds_to_show(argv, env, stage)
    assert stage in shown and working, (seconds, shown)
    print(f"{argv[0]}: progress shown after {seconds:.2f} s")
