"""The project explains itself from its own files: the package, the README and the docs point at no
file outside the repository, such as a design note that only its authors have at hand."""

import re

from tests.conftest import REPO

# Names of notes kept beside the repository, and the relative way out of it.
OUTSIDE = re.compile(r"STYLE\.md|DESIGN\.md|\.\./shared")


def _documents():
    yield REPO / "README.md"
    for folder in ("edgekd", "docs"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".txt", ".html"}:
                yield path


def test_package_readme_and_docs_mention_no_file_outside_the_repository():
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _documents()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "these lines point outside the repository:\n" + "\n".join(found)


def test_the_check_sees_a_reference_outside():
    assert OUTSIDE.search("see ../shared/DESIGN.md") and OUTSIDE.search("(STYLE.md item 7)")
    assert not OUTSIDE.search("--data /shared/flowers")
