"""edgekd's floors (docs/architecture.md), checked: the import-linter contracts in pyproject.toml (every
module of edgekd/ has a floor and imports only downwards; no cycle between sibling modules), and no
import cycle at all between any two modules, which also covers a package's `__init__` and its own
modules (import-linter's acyclic_siblings contract compares siblings only)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgekd

# import-linter (and grimp, which it brings) needs Python 3.11, where tomllib is standard too.
pytest.importorskip("importlinter", reason="the dev extra installs import-linter on Python 3.11 and later")
import grimp
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_under_test_is_this_checkout():
    # import-linter finds edgekd on sys.path: the contracts must be checked against these sources.
    assert Path(edgekd.__file__).resolve().parent == ROOT / "edgekd"


def test_import_linter_contracts_are_kept():
    # In a process of its own: import-linter configures logging, which disables the loggers of the
    # modules already imported here (other tests read edgekd's logs). Run from the checkout's root,
    # `-c` puts it first on sys.path, so the contracts are checked against these sources.
    linter = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    command = [sys.executable, "-c", linter]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    imports = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(imports):
        if start in index:
            continue
        work = [(start, iter(imports[start]))]
        index[start] = lowest[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = lowest[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(imports[child])))
                elif child in on_stack:
                    lowest[module] = min(lowest[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowest[parent] = min(lowest[parent], lowest[module])
            if lowest[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_imports_itself_back():
    # Lazy imports inside functions and TYPE_CHECKING imports count: grimp reads them all.
    assert import_cycles(grimp.build_graph("edgekd")) == []


def test_a_cycle_is_found():
    graph = grimp.ImportGraph()
    for importer, imported in (("p", "p.a"), ("p.a", "p.b"), ("p.b", "p"), ("p.b", "p.c")):
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == [["p", "p.a", "p.b"]]


def test_docs_show_the_floors_the_contract_checks():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [floors] = [c for c in contracts if c["type"] == "layers"]
    docs = (ROOT / "docs" / "architecture.md").read_text()
    [block] = re.findall(r"```toml\n(layers = \[.*?\n\])\n```", docs, flags=re.S)
    assert tomllib.loads(block)["layers"] == floors["layers"]
