"""The ImageNet priors in models/students.yaml: every candidate has a cited figure or a reasoned null,
the figures match timm's results table for timm's default weights, and bad entries are refused."""

import csv
import io
import re

import pytest

from edgekd.catalog import load_students
from edgekd.errors import ConfigError

TIMM_CITATION = re.compile(r"timm results-imagenet\.csv, (?P<arch>\w+)\.(?P<tag>\w+), commit [0-9a-f]{7,40}$")

# The independent record: these lines copied verbatim from timm's results/results-imagenet.csv (commit
# aa4b5850). resnet10t's tag is listed twice, at its input_size (176) and at its test_input_size (224);
# fastvit_t8's default tag is not its best one (apple_dist_in1k is): both must pick the right row.
CSV_RECORD = """\
model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation
fastvit_t8.apple_dist_in1k,256,77.170,22.830,93.274,6.726,4.03,0.900,bicubic
fastvit_t8.apple_in1k,256,76.184,23.816,93.042,6.958,4.03,0.900,bicubic
resnet10t.c3_in1k,224,68.354,31.646,88.034,11.966,5.44,0.950,bicubic
resnet10t.c3_in1k,176,66.724,33.276,86.976,13.024,5.44,0.875,bicubic
mobilenetv3_small_050.lamb_in1k,224,57.918,42.082,80.144,19.856,1.59,0.875,bicubic
"""


def _by_arch():
    return {c.arch: c for c in load_students()}


def test_every_shipped_candidate_has_a_cited_prior_or_a_null_that_says_why():
    students = load_students()
    with_prior = [c for c in students if c.imagenet_top1 is not None]
    assert len(with_prior) >= len(students) - 3  # nulls are the exception, not the rule
    for c in students:
        if c.imagenet_top1 is None:
            assert c.imagenet_size is None, c.arch
            assert c.imagenet_source.startswith("null: ") and len(c.imagenet_source) > 30, c.arch
            continue
        assert isinstance(c.imagenet_top1, float) and 40 < c.imagenet_top1 < 90, c.arch
        assert isinstance(c.imagenet_size, int) and 128 <= c.imagenet_size <= 320, c.arch
        cited = TIMM_CITATION.match(c.imagenet_source)
        if cited:
            assert cited["arch"] == c.arch, c.imagenet_source
        else:  # no timm row: the authors' own figure, named by paper or repository file
            assert f"no timm weights ({c.arch}.untrained)" in c.imagenet_source, c.arch
            assert re.search(r"arXiv \d{4}\.\d{4,5}|README\.md|\.md", c.imagenet_source), c.arch


def test_timm_figures_are_for_timms_default_weights_at_their_input_size():
    from timm.models import get_pretrained_cfg

    for c in load_students():
        default = get_pretrained_cfg(c.arch)
        cited = TIMM_CITATION.match(c.imagenet_source)
        if cited:
            assert cited["tag"] == default.tag, f"{c.arch}: cites {cited['tag']}, timm loads {default.tag}"
            assert c.imagenet_size == default.input_size[-1], c.arch
        else:
            assert default.tag == "untrained", f"{c.arch}: timm has {default.tag} weights, cite its row"


@pytest.mark.parametrize(
    "arch, row, size",
    [
        ("mobilenetv3_small_050", "mobilenetv3_small_050.lamb_in1k", 224),
        ("resnet10t", "resnet10t.c3_in1k", 176),  # not the 224 px row of the same tag
        ("fastvit_t8", "fastvit_t8.apple_in1k", 256),  # not the better apple_dist_in1k
    ],
)
def test_figure_equals_the_timm_csv_row(arch, row, size):
    candidate = _by_arch()[arch]
    assert candidate.imagenet_source.startswith(f"timm results-imagenet.csv, {row}, commit ")
    (line,) = [
        r for r in csv.DictReader(io.StringIO(CSV_RECORD)) if r["model"] == row and int(r["img_size"]) == size
    ]
    assert (candidate.imagenet_top1, candidate.imagenet_size) == (float(line["top1"]), int(line["img_size"]))


def _students_yaml(tmp_path, entry: str):
    path = tmp_path / "students.yaml"
    path.write_text(f"students:\n  - {{arch: lcnet_050, family: lcnet}}\n  - {entry}\n")
    return path


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            '{arch: resnet18, imagenet_top1: 140, imagenet_size: 224, imagenet_source: "made up"}',
            r"'resnet18': imagenet_top1 140\.0 is not a percentage in \(0, 100\)",
        ),
        ("{arch: resnet18, imagenet_top1: 0, imagenet_size: 224, imagenet_source: x}", r"not a percentage"),
        ("{arch: resnet18, imagenet_top1: 71.5, imagenet_size: 224}", r"'resnet18': .* no imagenet_source"),
        ("{arch: resnet18, imagenet_top1: 71.5, imagenet_size: 224, imagenet_source: ''}", "no imagenet_"),
        ("{arch: resnet18, imagenet_top1: 71.5, imagenet_source: x}", r"'resnet18': .* needs imagenet_size"),
        ("{arch: resnet18, imagenet_top1: '71.5'}", r"field 'students\[1\]\.imagenet_top1' must be a number"),
        (
            "{arch: resnet18, imagenet_top5: 90.1}",
            r"unknown field students\[1\]\.'imagenet_top5'\. Did you mean 'imagenet_top1'",
        ),
    ],
)
def test_a_bad_prior_is_refused_naming_the_file_and_the_arch(tmp_path, entry, message):
    path = _students_yaml(tmp_path, entry)
    with pytest.raises(ConfigError, match=message) as caught:
        load_students(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_entries_without_a_prior_still_load(tmp_path):
    entry = '{arch: resnet18, imagenet_top1: null, imagenet_source: "null: none found"}'
    path = _students_yaml(tmp_path, entry)
    plain, nulled = load_students(path)
    assert (plain.imagenet_top1, plain.imagenet_size, plain.imagenet_source) == (None, None, "")
    assert (nulled.imagenet_top1, nulled.imagenet_source) == (None, "null: none found")


def test_search_list_shows_each_candidates_prior(capsys, monkeypatch):
    from edgekd.cli import main

    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    assert main(["search", "--target", "pi5", "--list"]) == 0
    out = capsys.readouterr().out
    assert "ImageNet top-1" in out
    assert re.search(r"\bresnet10t\b.*\b66\.7 @ ?176\b", out)
    assert re.search(r"\bmnasnet_050\b\s*│\s*-\s*│", out)
