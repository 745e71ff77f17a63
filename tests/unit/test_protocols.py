"""Repeated studies and noise sweeps: the protocols as data, what each repetition varies,
the tags every run carries, resuming, and the options' bad values.

The process-level and seconds-long tests: ``tests/system/test_protocols.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support.errors import assert_one_line_error

from lgals import cli
from lgals.data import NoiseRecipe
from lgals.protocols import CLAIM, PROTOCOLS, ROBUST
from lgals.tuning import TuneSettings

# --- the protocols as data -----------------------------------------------------------------


def test_the_named_protocols():
    assert (CLAIM.repeats, CLAIM.seeds, CLAIM.n_trials, CLAIM.epochs) == (1, 5, 20, 100)
    assert (ROBUST.repeats, ROBUST.seeds) == (5, 10)
    assert dataclasses.replace(ROBUST, name="claim", repeats=1, seeds=5, diagnose=False) == CLAIM
    assert ROBUST.diagnose and not CLAIM.diagnose and not PROTOCOLS["quick"].diagnose
    assert set(PROTOCOLS) == {"claim", "robust", "quick"}
    choices = {p.name: p for p in cli.cli.commands["reproduce"].params}["protocol"].type.choices
    assert set(choices) == set(PROTOCOLS)
    for protocol in PROTOCOLS.values():  # --help states each protocol's size without importing
        assert f"{protocol.name}: " in cli.PROTOCOL_HELP


def test_a_repetition_varies_noise_draw_split_and_sampler_seed_only():
    base = TuneSettings(mode="lgals", study_name="lgals-lgals", sampler_seed=3)
    assert base.repeated(0) is base  # repetition 0 is the note's protocol, its study unchanged
    second = base.repeated(2)
    assert second.noise == dataclasses.replace(base.noise, noise_seed=2)
    assert second.sampler_seed == 5 and second.study_name == "lgals-lgals-r2"
    assert dataclasses.replace(second, noise=base.noise, sampler_seed=3,
                               study_name=base.study_name) == base
    # another repetition flips other labels (as many) and holds out other rows
    from lgals.data import load_dataset

    first, other = load_dataset(base.noise), load_dataset(second.noise)
    assert not np.array_equal(first.val_index, other.val_index)
    full = [load_dataset(dataclasses.replace(s.noise, val_fraction=0.0)).noise_mask
            for s in (base, second)]
    assert not np.array_equal(*full) and full[0].sum() == full[1].sum() == 800


def test_every_repetition_of_a_protocol_has_its_own_studies():
    names = {s.study_name for r in range(ROBUST.repeats) for s in ROBUST.tune_settings(r)}
    assert len(names) == 5 * 3
    assert [s.study_name for s in CLAIM.tune_settings(0)] == [
        "lgals-baseline", "lgals-fixed_ls", "lgals-lgals"]  # today's studies resume
    pair = dataclasses.replace(CLAIM, noise=NoiseRecipe(0.4, "pair", val_fraction=0.1))
    assert [s.study_name for s in pair.tune_settings(1)][0] == "lgals-pair-0.4-baseline-r1"
    assert {s.noise for s in pair.tune_settings(1)} == {NoiseRecipe(0.4, "pair", 1, 0.1)}


def test_sweep_settings_run_rate_zero_once():
    settings = NoiseRecipe.distinct(CLAIM.noise.swept([0.0, 0.2, 0.4], ["symmetric", "pair"]))
    assert [s.setting for s in settings] == ["symmetric-0", "symmetric-0.2", "symmetric-0.4",
                                            "pair-0.2", "pair-0.4"]
    assert all(s.val_fraction == CLAIM.noise.val_fraction for s in settings)


def test_project_argv_drops_only_what_means_not_given():
    def kept(command, *argv):
        command_, *args = cli.project_argv(command, list(argv))
        assert command_ == command
        return args

    assert kept("reproduce", "--claim", "note", "--dataset", "mnist1d", "--out", "note") == [
        "--out", "note"]
    assert kept("report", "--claim", "x.yaml", "--dataset", "digits") == [
        "--claim", "x.yaml", "--dataset", "digits"]
    assert kept("sweep", "--out", "0", "--repeats", "0", "--seeds", "0", "--batch", "0") == [
        "--out", "0", "--batch", "0"]
    assert kept("reproduce", "--repeats", "3", "--seeds", "10") == [
        "--repeats", "3", "--seeds", "10"]
    # an empty parameter is an option left out, on every entry point; train's --seeds 0 is
    # its own (refused) value
    assert kept("tune", "--study-name", "", "--epochs", "3", "--storage", "") == [
        "--epochs", "3"]
    assert kept("train", "--seeds", "0", "--precision", "") == ["--seeds", "0"]
    assert kept("report", "--precision", "", "--repeats", "0") == []


# --- bad values: one line, exit 2, nothing started -------------------------------------------

@pytest.mark.parametrize("argv, option", [
    (["reproduce", "--repeats", "0"], "--repeats"),
    (["reproduce", "--seeds", "0"], "--seeds"),
    (["reproduce", "--protocol", "thorough"], "--protocol"),
    (["reproduce", "--quick", "--protocol", "robust"], "--quick"),
    (["tune", "--repeats", "0"], "--repeats"),
    (["evaluate", "--repeats", "0"], "--repeats"),
    (["report", "--repeats", "0"], "--repeats"),
    (["report", "--seeds", "-1"], "--seeds"),
    (["sweep", "--repeats", "0"], "--repeats"),
    (["sweep", "--seeds", "0"], "--seeds"),
    (["sweep", "--protocol", "robustest"], "--protocol"),
    (["sweep", "--noise-rates", "0.2,0.95"], "--noise-rates"),
    (["sweep", "--noise-rates", "-0.1"], "--noise-rates"),
    (["sweep", "--noise-rates", "nan"], "--noise-rates"),
    (["sweep", "--noise-rates", "0.2,high"], "--noise-rates"),
    (["sweep", "--noise-rates", "0.2,0.4,0.2"], "--noise-rates"),
    (["sweep", "--noise-rates", ""], "--noise-rates"),
    (["sweep", "--noise-types", "gaussian"], "--noise-types"),
    (["sweep", "--noise-types", "pair,pair"], "--noise-types"),
    (["sweep", "--noise-types", ""], "--noise-types"),
])
def test_a_bad_protocol_or_sweep_value_is_one_line(run_main, argv, option, tmp_path,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(argv)
    assert_one_line_error(code, out, err, option)
    assert list(tmp_path.iterdir()) == []  # no store, no cache, no report


def test_the_sweep_lists_name_what_is_wrong(run_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, err = run_main(["sweep", "--noise-rates", "0.2,0.4,0.2"])
    assert "0.2 given twice" in err
    _, _, err = run_main(["sweep", "--noise-rates", "0.95"])
    assert "0.95 is not in the range 0<=x<=0.9" in err
    _, _, err = run_main(["sweep", "--noise-types", "gaussian"])
    assert "'gaussian' is not one of symmetric, pair" in err
