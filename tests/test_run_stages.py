"""The run directory's layout, the one resume rule of `fit`'s stages, and result.json's schema."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgekd.fit_result import SCHEMA_VERSION, FitResult
from edgekd.fit_stages import DONE_EARLIER, run_stages
from edgekd.rundir import RunDir
from tests.test_report import as_result, make_result

# result.json's keys as edgekd 0.1.0 wrote them, and those added since; other tools read these.
RESULT_KEYS = {
    "run", "config", "target", "targets", "data", "teacher", "student", "search", "export",
    "host_latency", "device_latency", "history", "augmentation", "baseline", "plan", "test_predictions",
    "teacher_latency", "stages",
}  # fmt: skip


def test_one_target_keeps_flat_names_and_several_get_one_per_target(tmp_path):
    one = RunDir.create(tmp_path, ("pi5",))
    several = RunDir.create(tmp_path, ("pi5", "pi4"))
    assert one.path.is_dir() and several.path.is_dir() and one.path.parent == tmp_path
    assert one.path.name.endswith("-pi5") and several.path.name.endswith("-pi5+pi4")
    assert one.exports_for("pi5") == one.path / "exports"
    assert several.exports_for("pi4") == several.path / "exports" / "pi4"
    assert one.profile_for("pi5") == one.path / "profile.json"
    assert several.profile_for("pi4") == several.path / "profile-pi4.json"
    assert one.artifact("pi5", "student", "fp32", ".tflite") == one.path / "exports" / "student-fp32.tflite"
    assert one.relative(one.artifact("pi5", "student", "int8", ".tflite")) == "exports/student-int8.tflite"


def test_two_runs_started_in_the_same_second_get_two_directories(tmp_path):
    first, second = RunDir.create(tmp_path, ("pi5",)), RunDir.create(tmp_path, ("pi5",))
    assert first.path != second.path and second.path.is_dir()


@dataclass
class _FileStage:
    """A stage whose output is one file in the run directory, recording what the rule asked of it."""

    name: str
    file: str
    detail: str = ""
    calls: list[str] = field(default_factory=list)

    def is_done(self, run: RunDir) -> bool:
        return (run.path / self.file).exists()

    def run(self, context) -> None:
        self.calls.append("run")
        (context.run.path / self.file).write_text(self.name)

    def load(self, context) -> None:
        self.calls.append("load")


class _Banners:
    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def stage(self, name: str, detail: str = "") -> None:
        self.shown.append((name, detail))


@dataclass
class _Context:
    run: RunDir
    observer: _Banners
    stage_seconds: dict[str, float] = field(default_factory=dict)
    done_by: dict[str, str] = field(default_factory=dict)
    rank: int = 0


def test_a_stage_with_its_outputs_is_loaded_and_one_without_is_run(tmp_path):
    run = RunDir(tmp_path, ("pi5",))
    (tmp_path / "search.json").write_text("{}")  # an earlier attempt finished the search
    stages = [_FileStage("search", "search.json"), _FileStage("distill", "student.safetensors")]
    context = _Context(run, _Banners())
    run_stages(stages, context)
    assert [s.calls for s in stages] == [["load"], ["run"]]
    assert context.observer.shown == [("search", DONE_EARLIER), ("distill", "")]
    run_stages(stages, context)  # a second resume: everything is done
    assert [s.calls for s in stages] == [["load", "load"], ["run", "load"]]


def test_consecutive_stages_of_one_phase_share_a_banner(tmp_path):
    stages = [
        _FileStage("export", "a.tflite", detail="pi5"),
        _FileStage("export", "a-ptq.tflite", detail="pi5"),
        _FileStage("parity", "never", detail="pi5"),
        _FileStage("export", "b.onnx", detail="android"),
    ]
    context = _Context(RunDir(tmp_path, ("pi5", "android")), _Banners())
    run_stages(stages, context)
    assert context.observer.shown == [("export", "pi5"), ("parity", "pi5"), ("export", "android")]


class _SearchThatDistils(_FileStage):
    """The small-data search: its full training is the final student, which rank 0 alone writes, a
    moment after every rank has the search's result (`fit_stages.SearchStage._confirm`)."""

    def run(self, context) -> None:
        import time

        self.calls.append("run")
        if context.rank == 0:
            time.sleep(1.0)  # the writes rank 0 does after the ranks part
            (context.run.path / "student.safetensors").write_text("the search's full training")


def test_under_torchrun_every_rank_takes_rank_0s_word_on_which_stages_are_done(tmp_path):
    """Rank 0 alone writes the run directory: a stage an earlier one finished (the search's training is
    the student) is done once rank 0 has written it, and every rank must load it then. A rank that
    looked at the disk itself found nothing yet and trained the student again, waiting in DDP for a
    rank 0 that had gone on (the two-rank `fit` hung)."""
    from tests.helpers import on_two_ranks

    def work(world) -> None:
        stages = [_SearchThatDistils("search", "search.json"), _FileStage("distill", "student.safetensors")]
        context = _Context(RunDir(tmp_path / "run", ("pi5",)), _Banners(), rank=world.rank)
        run_stages(stages, context, world)
        (tmp_path / f"rank{world.rank}.json").write_text(json.dumps([s.calls for s in stages]))

    (tmp_path / "run").mkdir()
    on_two_ranks(work, tmp_path)
    for rank in (0, 1):
        calls = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert calls == [["run"], ["load"]], f"rank {rank}"


def test_result_json_keeps_its_keys_adds_a_schema_version_and_reads_back():
    result = as_result(make_result())
    written = json.loads(json.dumps(result.to_json()))
    assert set(written) == RESULT_KEYS | {"schema_version"} and written["schema_version"] == SCHEMA_VERSION
    assert written["target"] == written["targets"][0]["target"] and written["export"]["format"] == "tflite"
    assert written["host_latency"] == written["targets"][0]["host_latency"]
    again = FitResult.from_json(written)
    assert again == result and again.student.arch == "mobilenetv3_small_050"
    assert again.export.parity["samples"] == 269 and again.target.name == "pi5"


def test_a_result_json_from_a_newer_edgekd_is_refused_by_name():
    written = as_result(make_result()).to_json()
    with pytest.raises(ValueError, match=f"schema_version {SCHEMA_VERSION + 1}; .* upgrade edgekd"):
        FitResult.from_json({**written, "schema_version": SCHEMA_VERSION + 1})


def test_nothing_outside_the_run_directory_module_names_a_run_file():
    """The layout has one owner: the modules of fit name run files through RunDir, not by string."""
    names = (
        '"config.yaml"', '"search.json"', '"search.csv"', '"student.safetensors"', '"history.json"',
        '"baseline.json"', '"device-profile.json"', '"result.json"', '"metrics.csv"', '"report.md"',
        '"report.html"', '"profile.json"', '"checkpoints"',
    )  # fmt: skip
    edgekd = Path(__file__).resolve().parents[1] / "edgekd"
    modules = ["pipeline.py", "fit_config.py", "fit_stages.py", "fit_shipping.py", "report.py"]
    modules += sorted(str(p.relative_to(edgekd)) for p in (edgekd / "cli").glob("*.py"))
    found = [(m, n) for m in modules for n in names if n in (edgekd / m).read_text()]
    assert not found
