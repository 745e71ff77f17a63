"""Claims as files: the shipped note's claim, a user's claim, every malformed field refused in
one line (also by ``lgals reproduce --claim``, before anything starts), and the card a claim
of two arbitrary modes gets.

No mocks: real files in a tmp dir, the real loader and CLI, reports built from ``ModeRuns``
made by hand as in ``test_report_stats.py``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from support.mlflow_fixtures import PROJECT, run_main

from lgals.claim import NOTE_FILE, Accuracy, Alignment, Cost, Detection, load, note
from lgals.data import NoiseRecipe
from lgals.errors import BadSetting
from lgals.protocols import CLAIM, PROTOCOLS, ROBUST
from lgals.report.analysis import SUPPORTED, build, claim_card
from lgals.report.render import markdown
from unit.test_report_stats import mode_runs


def dump(document: dict) -> str:
    """``document`` as YAML, in its own key order (a claim's modes keep the order named)."""
    return yaml.safe_dump(document, sort_keys=False)


# --- the note's claim, shipped as a file -----------------------------------------------------


def test_the_shipped_note_gives_the_notes_numbers_exactly():
    claim = note()
    assert claim.accuracy == {"baseline": (53.12, 0.54), "fixed_ls": (55.33, 0.65),
                              "lgals": (57.15, 1.17)}
    assert claim.orderings == (("lgals", "baseline"), ("lgals", "fixed_ls"),
                               ("fixed_ls", "baseline"))
    assert claim.alignment == Alignment(correlation=0.75, r_min=0.5)
    assert claim.detection == Detection("lgals", auroc_above=0.5, eps_gap_above=0.0)
    assert claim.cost == Cost("lgals", "baseline", ratio_max=1.10)
    assert (claim.name, claim.dataset) == ("the note", "mnist1d")
    assert claim.protocol == dataclasses.replace(CLAIM, modes=("baseline", "fixed_ls", "lgals"))
    assert claim.protocol.noise.same_setting(NoiseRecipe(0.2, "symmetric"))
    assert claim.claimed("lgals", "fixed_ls") == pytest.approx(1.82)


def test_the_note_file_ships_inside_the_package():
    """It is package data (pyproject's package-data), beside lgals/claim.py."""
    assert NOTE_FILE.parent.parent == Path(__import__("lgals").__file__).parent
    package_data = (PROJECT / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\nlgals = ["claims/*.yaml"]' in package_data


# --- a user's claim ------------------------------------------------------------------------

def docs_example() -> str:
    """The complete example in docs/claim.md."""
    text = (PROJECT / "docs" / "claim.md").read_text()
    return re.search(r"```yaml\n(name: my paper.*?)```", text, re.S).group(1)


def test_the_docs_example_loads_once_its_mode_is_registered(tmp_path):
    """``my_loss`` is the user's own mode; GCE stands in for it, registered."""
    path = tmp_path / "my_claim.yaml"
    path.write_text(docs_example().replace("my_loss", "gce"))
    claim = load(path)
    assert claim.name == "my paper" and claim.dataset == "mnist1d"
    assert claim.accuracy == {"gce": Accuracy(56.0, 0.8), "baseline": Accuracy(53.1, 0.5)}
    assert claim.orderings == (("gce", "baseline"),)
    assert claim.cost == Cost("gce", "baseline", 1.10)
    assert (claim.detection, claim.alignment) == (None, None)
    assert claim.protocol == dataclasses.replace(ROBUST, modes=("gce", "baseline"))
    assert claim.modes == ("gce", "baseline")


def test_a_user_claim_round_trips(tmp_path):
    """What a file says is what the Claim holds; its own protocol sizes, the rest robust's."""
    document = {"dataset": "mnist1d", "noise": {"rate": 0.4, "type": "pair"},
                "protocol": {"seeds": 3, "repeats": 2},
                "accuracy": {"sce": {"mean": 60.5, "std": 1.25}},
                "orderings": [["sce", "nls"], ["nls", "baseline"]],
                "alignment": {"correlation": -0.25, "r_min": 0.1}}
    path = tmp_path / "pair40.yaml"
    path.write_text(dump(document))
    claim = load(path)
    assert claim.name == "pair40"  # the file's name when it gives none
    assert claim.path == str(path)
    assert {m: dict(a._asdict()) for m, a in claim.accuracy.items()} == document["accuracy"]
    assert [list(pair) for pair in claim.orderings] == document["orderings"]
    assert claim.alignment == Alignment(-0.25, 0.1)
    assert claim.protocol == dataclasses.replace(
        ROBUST, name="custom", seeds=3, repeats=2, modes=("sce", "nls", "baseline"),
        noise=NoiseRecipe(0.4, "pair", val_fraction=ROBUST.noise.val_fraction))
    assert claim.claimed("sce", "nls") is None  # no claimed mean for NLS


@pytest.mark.parametrize("protocol, expected", [(None, ROBUST), *PROTOCOLS.items()])
def test_a_claim_names_a_protocol_or_gets_the_robust_one(tmp_path, protocol, expected):
    document = yaml.safe_load(docs_example().replace("my_loss", "gce"))
    document.pop("protocol")
    if protocol is not None:
        document["protocol"] = protocol
    path = tmp_path / "claim.yaml"
    path.write_text(dump(document))
    assert load(path).protocol == dataclasses.replace(expected, modes=("gce", "baseline"))


# --- a malformed claim: one line naming the field -------------------------------------------

VALID = {"name": "mine", "dataset": "mnist1d", "noise": {"rate": 0.2, "type": "symmetric"},
         "protocol": "quick", "accuracy": {"gce": {"mean": 55.0, "std": 1.0}},
         "orderings": [["gce", "baseline"]],
         "detection": {"mode": "lgals", "auroc_above": 0.5, "eps_gap_above": 0.0},
         "alignment": {"correlation": 0.75, "r_min": 0.5},
         "cost": {"mode": "gce", "reference": "baseline", "ratio_max": 1.1}}


def changed(path: str, value) -> dict:
    """VALID with the field at dotted ``path`` set to ``value`` (``...`` removes it)."""
    document = yaml.safe_load(dump(VALID))
    *parents, last = path.split(".")
    inner = document
    for key in parents:
        inner = inner[key]
    if value is ...:
        del inner[last]
    else:
        inner[last] = value
    return document


MALFORMED = [
    ("accuracy.gce.mean", "abc", "accuracy.gce.mean must be a number, got 'abc'"),
    ("accuracy.gce.mean", 101, "accuracy.gce.mean must be a percentage in [0, 100], got 101"),
    ("accuracy.gce.mean", True, "accuracy.gce.mean must be a number, got True"),
    ("accuracy.gce.mean", float("nan"), "accuracy.gce.mean must be a number, got nan"),
    ("accuracy.gce.std", -1, "accuracy.gce.std must be at least 0, got -1"),
    ("accuracy.gce.std", ..., "accuracy.gce.std is missing"),
    ("accuracy.gce.median", 55, "accuracy.gce.median is not a field a claim has"),
    ("accuracy.gce", [55, 1], "accuracy.gce must be a mapping (mean, std), got [55, 1]"),
    ("accuracy", [1], "accuracy must be a mapping"),
    ("accuracy.my_loss", {"mean": 1, "std": 1}, "accuracy.my_loss must be a mode ("),
    ("orderings", [], "orderings must be a non-empty list of [A, B] pairs"),
    ("orderings", "gce > baseline", "orderings must be a non-empty list"),
    ("orderings", [["gce"]], "orderings[0] must be a pair [A, B] of modes"),
    ("orderings", [["gce", "fancy"]], "orderings[0][1] must be a mode (baseline, "),
    ("orderings", [["gce", "gce"]], "orderings[0] compares 'gce' with itself"),
    ("orderings", [["gce", "baseline"], ["baseline", "gce"]],
     "orderings[1] repeats or reverses an earlier ordering of 'baseline' and 'gce'"),
    ("orderings", ..., "orderings is missing"),
    ("dataset", 3, "dataset must be a non-empty string, got 3"),
    ("dataset", ..., "dataset is missing"),
    ("name", "", "name must be a non-empty string, got ''"),
    ("noise.rate", 0.95, "noise.rate must be in [0, 0.9], got 0.95"),
    ("noise.rate", "20%", "noise.rate must be a number, got '20%'"),
    ("noise.type", "asymmetric", "noise.type must be one of symmetric, pair, got 'asymmetric'"),
    ("noise.seed", 1, "noise.seed is not a field a claim has (allowed: rate, type)"),
    ("noise", ..., "noise is missing"),
    ("protocol", "huge", "protocol must be one of claim, robust, quick or a mapping of"),
    ("protocol", {"seeds": 0}, "protocol.seeds must be a whole number of at least 1, got 0"),
    ("protocol", {"seeds": 2.5}, "protocol.seeds must be a whole number of at least 1, got 2.5"),
    ("protocol", {"trials": 5}, "protocol.trials is not a field a claim has (allowed: n_trials"),
    ("detection.mode", "fancy", "detection.mode must be a mode ("),
    ("detection.auroc_above", 2, "detection.auroc_above must be in [0, 1], got 2"),
    ("detection.eps_gap_above", ..., "detection.eps_gap_above is missing"),
    ("alignment.correlation", 1.5, "alignment.correlation must be in [-1, 1], got 1.5"),
    ("alignment", 0.75, "alignment must be a mapping (correlation, r_min), got 0.75"),
    ("cost.ratio_max", 0, "cost.ratio_max must be above 0, got 0"),
    ("cost.reference", None, "cost.reference must be a mode ("),
    ("verdict", "yes", "verdict is not a field a claim has (allowed: name, dataset, noise"),
]


@pytest.mark.parametrize("field, value, message", MALFORMED,
                         ids=[f"{f}={v!r}" for f, v, _ in MALFORMED])
def test_each_malformed_field_is_one_line_naming_it(tmp_path, field, value, message):
    path = tmp_path / "x.yaml"
    path.write_text(dump(changed(field, value)))
    with pytest.raises(BadSetting) as error:
        load(path)
    said = str(error.value)
    assert "\n" not in said
    assert said.startswith(f"claim file {path}: {message}"), said


@pytest.mark.parametrize("text, message", [
    ("orderings: [[gce, baseline]\n", "not valid YAML ("),
    ("- just\n- a list\n", "the file must be a mapping"),
    ("", "the file must be a mapping"),
])
def test_a_file_that_is_no_claim_is_one_line(tmp_path, text, message):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(BadSetting, match=re.escape(f"claim file {path}: {message}")) as error:
        load(path)
    assert "\n" not in str(error.value)


def test_the_valid_document_of_these_tests_loads(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(dump(VALID))
    assert load(path).modes == ("gce", "baseline", "lgals")


@pytest.mark.parametrize("argv", [["reproduce"], ["reproduce", "--quick"], ["report"]])
def test_a_bad_claim_file_stops_the_command_before_anything_starts(tmp_path, argv):
    """Exit 2, one line naming the field, no traceback, and nothing created: no store, no
    experiment, no run, no results."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(dump(changed("accuracy.gce.mean", "abc")))
    result = run_main([*argv, "--claim", str(bad), "--tracking-uri",
                       f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(tmp_path / "out")],
                      tmp_path)
    assert result.code == 2
    assert result.err.strip() == (f"lgals: error: claim file {bad}: accuracy.gce.mean must be a "
                                  "number, got 'abc'")
    assert result.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_missing_claim_file_is_one_line(tmp_path):
    result = run_main(["reproduce", "--claim", str(tmp_path / "none.yaml")], tmp_path)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip() == (f"lgals: error: claim file {tmp_path / 'none.yaml'}: cannot "
                                  "read it (No such file or directory)")
    assert list(tmp_path.iterdir()) == []


# --- the card of a claim about any two modes ------------------------------------------------

GCE = {0: 58.0, 1: 58.5, 2: 57.0, 3: 59.0, 4: 57.5}
BASE = {0: 53.0, 1: 54.0, 2: 55.5, 3: 53.5, 4: 52.0}


def gce_claim(tmp_path):
    path = tmp_path / "gce.yaml"
    path.write_text(dump({
        "name": "a GCE paper", "dataset": "mnist1d", "noise": {"rate": 0.2, "type": "symmetric"},
        "accuracy": {"gce": {"mean": 58.0, "std": 0.5}, "baseline": {"mean": 53.0, "std": 0.5}},
        "orderings": [["gce", "baseline"]]}))
    return load(path)


def test_a_claim_about_two_arbitrary_modes_gets_a_card_naming_them(tmp_path):
    claim = gce_claim(tmp_path)
    report = build({"gce": mode_runs("gce", GCE), "baseline": mode_runs("baseline", BASE),
                    "lgals": mode_runs("lgals", GCE)}, claim)
    (verdict,) = claim_card(report)  # one ordering, no mechanism claims
    assert verdict.claim == "GCE beats Baseline" and verdict.status == SUPPORTED
    c = report.comparison("gce", "baseline")
    assert verdict.evidence.startswith(
        f"GCE − Baseline = {c.diff_pp:+.2f} pp [95% CI {c.ci[0]:+.2f}, {c.ci[1]:+.2f}] "
        f"(claimed +5.00), P(GCE > Baseline) = 1.00, Holm p = {c.holm_p:.3g}.")
    text = markdown(report)
    lines = text.splitlines()
    assert lines[0] == ("# Claims of a GCE paper on mnist1d with 20% symmetric label noise: our "
                        "measurement")
    assert lines[4].startswith("1. **GCE beats Baseline: supported.** GCE − Baseline = ")
    assert lines[6].startswith("**Intervals.** Each difference's 95% CI is a Student t")
    assert "AUROC" not in lines[6]  # no detection claim: no such intervals
    # the first table is the claim's modes, against the mode it claims to beat
    assert "| Mode | n | Final test acc. (%) mean ± std | 95% CI (%) | vs Baseline (pp, p) | " \
           "Claim (%) | s/epoch/seed | cost vs Baseline |" in text
    assert "| GCE | 5 | " in text and "| 58.00 ± 0.50 |" in text
    assert [line for line in lines if line.startswith("- ")][0].startswith(
        "- GCE − Baseline = ")
    assert "(the claim: +5.00 pp)" in text
    # the other mode is compared apart, and the note's sections are absent
    assert "## Every mode against Baseline, FixedLS and LGALS" in text
    for absent in ("Which per-sample score", "Does s_i track", "negligible cost", "the note"):
        assert absent not in text
    # the claim's ordering once (not again as GCE against the reference Baseline), then GCE
    # against the other reference present
    assert [(c.a, c.b) for c in report.comparisons] == [("gce", "baseline"), ("gce", "lgals")]


def test_a_claim_with_a_mode_the_note_never_references(tmp_path):
    """SCE beats GCE: GCE is no usual reference, so the rows gain a column for it."""
    path = tmp_path / "sce.yaml"
    path.write_text(dump({
        "dataset": "mnist1d", "noise": {"rate": 0.2, "type": "symmetric"},
        "orderings": [["sce", "gce"]]}))
    claim = load(path)
    report = build({"sce": mode_runs("sce", GCE), "gce": mode_runs("gce", BASE)}, claim)
    rows = {row["mode"]: row for row in report.rows()}
    assert rows["SCE"]["diff_vs_gce_pp"] == pytest.approx(report.comparison("sce", "gce").diff_pp)
    text = markdown(report)
    assert "| SCE | 5 | " in text and " | — | " in text  # no claimed accuracy
    assert "(the claim: no size claimed)" in text
    assert "(claimed none)" in text
