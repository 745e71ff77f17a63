"""One owner per concept: the MLflow schema (tag keys, stages, filters) lives in lgals.schema,
a run ends in one place, and an untracked command trains through the same call."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from lgals import schema
from lgals.schema import MODE, SEED, SEED_RUNS, STAGE, VAL_LABELS, Stage, runs_filter
from lgals.tracking.null import Untracked
from lgals.train import TrainConfig, train

PACKAGE = Path(schema.__file__).parent
TAG_KEYS = {value for name, value in vars(schema).items()
            if name.isupper() and isinstance(value, str) and value.startswith("lgals.")}


def _strings(tree: ast.AST):
    """Every string constant of a module but its docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node


def test_a_stage_is_its_value_wherever_it_is_written():
    assert f"{Stage.EVALUATE}" == str(Stage.EVALUATE) == "evaluate" == Stage.EVALUATE
    assert json.dumps({"stage": Stage.TUNE}) == '{"stage": "tune"}'
    assert Stage("trial") is Stage.TRIAL


def test_filters_by_hand():
    assert SEED_RUNS == "tags.lgals.stage = 'evaluate' and tags.lgals.seed != ''"
    assert runs_filter(Stage.TUNE, tags={MODE: "lgals", VAL_LABELS: "noisy"},
                       status="FINISHED") == (
        "tags.`lgals.stage` = 'tune' and tags.`lgals.mode` = 'lgals' and "
        "tags.`lgals.val_labels` = 'noisy' and attributes.status = 'FINISHED'")
    assert runs_filter(Stage.EVALUATE, status_not="FINISHED") == (
        "tags.`lgals.stage` = 'evaluate' and attributes.status != 'FINISHED'")
    assert runs_filter(has=(SEED,), status="RUNNING") == (
        "tags.`lgals.seed` != '' and attributes.status = 'RUNNING'")


def test_no_tag_key_is_written_outside_the_schema():
    assert {STAGE, MODE, SEED} <= TAG_KEYS and len(TAG_KEYS) >= 17
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "schema.py":
            continue
        for node in _strings(ast.parse(path.read_text())):
            # a key followed by more of a name (lgals.modes, lgals.plugin.Mode) is not it
            if any(re.search(rf"{re.escape(key)}(?![\w.])", node.value) for key in TAG_KEYS):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_runs_end_in_one_place():
    """``set_terminated`` is called by ``tracking.runs.end_runs`` alone."""
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "set_terminated":
                callers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert len(callers) == 1 and callers[0].startswith("tracking/runs.py:"), callers


def test_untracked_training_is_the_engine_alone(dataset):
    config = TrainConfig.of("lgals", epochs=2)
    results, run_ids, parent = Untracked().train(dataset, [config] * 2, [0, 1],
                                                 stage=Stage.TRAIN)
    alone = train(dataset, config, [0, 1])
    assert (run_ids, parent) == ([], None)
    for got, expected in zip(results, alone, strict=True):
        assert got.final_test_acc == expected.final_test_acc
        np.testing.assert_array_equal(got.history["train_loss"], expected.history["train_loss"])


def test_the_untracked_stand_in_imports_no_mlflow():
    code = ("import sys, lgals.tracking.null, lgals.tracking.writer; "
            "assert 'mlflow' not in sys.modules, 'mlflow imported'")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120)
    assert process.returncode == 0, process.stderr
