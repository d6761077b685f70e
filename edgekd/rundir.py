"""The run directory of `edgekd fit`: every file a run writes, named in one place.

A stage learns whether it finished in an earlier attempt from the files named here (`RunDir` is
what a stage's `is_done` looks at), so the layout and the resume rule cannot drift apart.

Example:
    >>> from pathlib import Path
    >>> run = RunDir(Path("runs/20250101-120000-pi5"), ("pi5",))
    >>> run.student.name, run.exports_for("pi5").name
    ('student.safetensors', 'exports')
    >>> RunDir(Path("r"), ("pi5", "pi4")).profile_for("pi4").name
    'profile-pi4.json'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """One fit's directory and the names of what it holds. `targets` decides the per-target names: a
    one-target run keeps `exports/` and `profile.json`, a run for several has one of each per target."""

    path: Path
    targets: tuple[str, ...] = ()

    @classmethod
    def create(cls, runs_dir: Path, targets: tuple[str, ...]) -> RunDir:
        """A new, empty run directory `runs_dir/<timestamp>-<targets>`; a name already taken (two runs
        started in the same second) gets a numbered suffix."""
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{'+'.join(targets)}"
        path, suffix = Path(runs_dir) / name, 1
        while path.exists():
            suffix += 1
            path = Path(runs_dir) / f"{name}-{suffix}"
        path.mkdir(parents=True)
        return cls(path, tuple(targets))

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        """The resolved FitConfig, as YAML; a directory without one is not a run."""
        return self.path / "config.yaml"

    @property
    def log(self) -> Path:
        """Every attempt's log: edgekd's lines, and the converters' and runtimes' own messages."""
        return self.path / "edgekd.log"

    @property
    def search(self) -> Path:
        """The search's trials and choice, read back on a resume."""
        return self.path / "search.json"

    @property
    def search_csv(self) -> Path:
        return self.path / "search.csv"

    @property
    def student(self) -> Path:
        """The distilled float student with its ModelInfo."""
        return self.path / "student.safetensors"

    @property
    def history(self) -> Path:
        """The distillation's epochs; with `student`, what says the distillation finished."""
        return self.path / "history.json"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        """Training checkpoints (`student/`, `qat/`, `baseline/`): an interrupted training resumes there."""
        return self.path / "checkpoints"

    @property
    def baseline(self) -> Path:
        """`--baseline scratch`'s finished record."""
        return self.path / "baseline.json"

    @property
    def device_profile(self) -> Path:
        """`--device`'s measurement, kept so that a resumed run does not measure again."""
        return self.path / "device-profile.json"

    @property
    def result(self) -> Path:
        """Written last: a run directory with result.json finished."""
        return self.path / "result.json"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    def exports_for(self, target: str) -> Path:
        """Where `target`'s artifacts go: `exports/`, or `exports/<target>/` in a run for several."""
        exports = self.path / "exports"
        return exports if len(self.targets) == 1 else exports / target

    def artifact(self, target: str, stem: str, precision: str, suffix: str) -> Path:
        """The file `edgekd.export.export` writes for `target` with `stem` at `precision`."""
        return self.exports_for(target) / f"{stem}-{precision}{suffix}"

    def bundle(self, platform: str) -> Path:
        """An app's bundle (`edgekd.export.bundle`): `exports/android/` or `exports/ios/`, one per run."""
        return self.path / "exports" / platform

    def profile_for(self, target: str) -> Path:
        """`target`'s host latency: `profile.json`, or `profile-<target>.json` in a run for several."""
        return self.path / ("profile.json" if len(self.targets) == 1 else f"profile-{target}.json")

    def relative(self, path: Path) -> str:
        """`path` as result.json names it: relative to the run directory."""
        return str(Path(path).relative_to(self.path))
