"""One front: `edgekd search` marks exactly the candidates `fit`'s search ranks first and records as
its front before training, at every input size, for one target and for several."""

import pytest

from edgekd.catalog import load_students, student_registry
from edgekd.search import assess, entry_order, front, select_student
from edgekd.search.halving import Budget
from edgekd.targets import get_target

# ghostnet_050 is slower, larger and has fewer MACs than mobilenetv2_050 at both sizes (off the
# front); resnet10t breaks the 4 ms budget at 64 px only; lcnet_035 is the fastest and smallest.
NAMES = ("lcnet_035", "mobilenetv2_050", "resnet10t", "ghostnet_050", "tf_mobilenetv3_small_minimal_100")
SIZES = (32, 64)


@pytest.fixture(scope="module")
def candidates():
    registry = student_registry(load_students())
    return [registry.get(name) for name in NAMES]


@pytest.fixture
def targets_dir(tmp_path):
    """Two targets that take 32 and 64 px, pi5's with a 4 ms latency budget."""
    for name, parent, budget in (("small-pi5", "pi5", 4.0), ("small-android", "android-cpu", 33.0)):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\ndescription: {parent} at small input sizes\nextends: {parent}\n"
            f"input_size: 32\ninput_sizes: [32, 64]\nbudgets:\n  latency_ms: {budget}\n"
            "sources:\n  input_size: test\n  input_sizes: test\n  budgets.latency_ms: test\n"
        )
    return tmp_path


def marked_by_search_command(target_names, targets_dir, monkeypatch, capsys) -> dict[int, set[str]]:
    """The candidates `edgekd search` stars, by input size, read off its table."""
    import edgekd.catalog
    from edgekd.cli import main

    registry = student_registry(load_students())
    monkeypatch.setattr(edgekd.catalog, "load_students", lambda: [registry.get(n) for n in NAMES])
    monkeypatch.setenv("COLUMNS", "400")  # one line a row: no wrapped reasons
    options = [option for name in target_names for option in ("--target", name)]
    capsys.readouterr()
    assert main(["search", *options, "--targets-dir", str(targets_dir)]) == 0
    marked: dict[int, set[str]] = {size: set() for size in SIZES}
    rows = 0
    for line in capsys.readouterr().out.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if cells[0] in NAMES:
            rows += 1
            if cells[-1] == "feasible *":
                marked[int(cells[1])].add(cells[0])
    assert rows == len(NAMES) * len(SIZES)
    return marked


@pytest.mark.parametrize("target_names", [("small-pi5",), ("small-pi5", "small-android")])
def test_search_command_marks_the_front_fit_ranks_on(
    target_names, candidates, targets_dir, monkeypatch, capsys
):
    marked = marked_by_search_command(target_names, targets_dir, monkeypatch, capsys)
    targets = [get_target(name, (targets_dir,)) for name in target_names]
    for size in SIZES:
        assessed = assess(candidates, targets, size, 10)
        chosen = select_student(
            assessed,
            lambda name, rung: pytest.fail("no trial runs without a trial budget"),
            budget=Budget(trials=0),
            max_epochs=1,
            max_images=10,
            target_name=" and ".join(target_names),
        )
        assert set(chosen.front) == marked[size], size
        # fit lets the front enter its trials first
        entering = entry_order([a for a in assessed if a.feasible])
        assert {a.candidate.name for a in entering[: len(chosen.front)]} == marked[size]
        assert {a.candidate.name for a in front(assessed)} == marked[size]
        # a front, not everything feasible: the dominated and the infeasible are left off it
        assert "ghostnet_050" not in marked[size] and "lcnet_035" in marked[size]
    # the biggest model is on the front where it fits (most MACs), and off where it breaks the budget
    assert "resnet10t" in marked[32] and "resnet10t" not in marked[64]
