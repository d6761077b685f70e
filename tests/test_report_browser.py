"""report.html as a person sees it: rendered by headless Chromium (Debian's `chromium`, which
`make test` installs when it may), every figure decoded and every section there."""

import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from edgekd import report
from edgekd.rundir import RunDir
from tests.test_report import as_result
from tests.test_report_evidence import digits, full_result  # noqa: F401 (digits: a fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs Debian's chromium as root)"
)
SECTIONS = ["Data", "Per class (test, 269 images)", "Artifacts", "Latency", "Distillation", "Figures"]
# Appended to a copy of the page (the report itself has no scripts): once every image has loaded or
# failed, it writes what the browser decoded into the DOM, which --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight})),
    headings: [...document.querySelectorAll("h1, h2")].map(h => h.textContent),
    tables: document.querySelectorAll("table").length,
  });
  document.body.appendChild(out);
});
</script>"""


def chromium(*args, cwd):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={cwd / 'profile'}", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.slow
def test_chromium_shows_every_figure_and_section_of_the_report(tmp_path, digits):  # noqa: F811
    run = tmp_path / "run"
    run.mkdir()
    report.write_reports(RunDir(run, ("pi5",)), as_result(full_result(run, digits)))
    page = (run / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "\n</body>"))

    dumped = chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), cwd=tmp_path)
    match = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert match, dumped.stderr[-2000:]
    seen = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    alts = [image["alt"] for image in seen["images"]]
    assert len(alts) == 4 and alts[0].startswith("Confusion matrices (test, 269 images)")
    assert alts[1].startswith("Misclassified by the student") and alts[2] == "Training curves"
    assert alts[3].startswith("Student search on pi5: Pareto front")
    assert all(image["width"] > 0 and image["height"] > 0 for image in seen["images"]), seen["images"]
    assert seen["headings"][0] == "edgekd fit: mobilenetv3_small_050 for pi5"
    assert seen["headings"][1:] == SECTIONS and seen["tables"] >= 6

    shot = tmp_path / "report.png"
    window = ("--window-size=1280,2400", "--hide-scrollbars")
    chromium(*window, f"--screenshot={shot}", (run / "report.html").as_uri(), cwd=tmp_path)
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or ()) > 50  # text and figures, not blank
