"""Snapshot what ``lgals reproduce --quick`` produces, and diff two snapshots.

A refactor that claims "no behaviour changes" can be checked with it: capture on the code
before, capture on the code after, diff::

    python tools/runs_snapshot.py capture --out before.json   # on the old code
    python tools/runs_snapshot.py capture --out after.json    # on the new code
    python tools/runs_snapshot.py diff before.json after.json # exit 0: the same, 1: not

``capture`` runs ``python -m lgals.cli reproduce --quick --out results`` in a fresh directory
(a temporary one, or ``--workdir``) with everything the command writes inside it: the MLflow
store (``MLFLOW_TRACKING_URI=sqlite:///DIR/mlflow.db``, artifacts in ``DIR/mlruns``), the Optuna
storage (lgals' default, ``optuna.db`` beside ``mlflow.db``) and the mnist1d cache
(``LGALS_CACHE_DIR=DIR/cache``); other ``MLFLOW_*`` and ``LGALS_*`` variables are not passed
on. The ``lgals`` imported is whatever the environment gives (set ``PYTHONPATH`` to the
checkout under test); the snapshot's ``meta`` names it. Then it reads every run of every
experiment through ``MlflowClient`` and writes one JSON document with sorted keys:

- ``runs``, keyed by identity ``EXPERIMENT:ROOT/.../PARENT/RUN`` (run names from the top run
  down; a second run with the same identity gets ``#2``): status, tags, params, metric
  histories, artifact paths, the ``.npz`` artifacts' array digests, dataset inputs, and the
  logged models that the run produced (status, params, metrics, tags, artifact paths);
- ``experiments``: tags and number of runs, by name;
- ``command``: exit code, stdout and stderr; ``output``: the ``results`` folder's files and
  the text of its ``.md`` and ``.csv`` files.

What is normalised, and why (looked up in the store of an actual run, MLflow 3.17):

- Run and model ids are random: they never key anything, and wherever one appears in a tag,
  param, text or output (``evaluate_runs``, ``tune_run_id``, "run <id>" in the log) it is
  replaced by ``<run:IDENTITY>`` / ``<model:IDENTITY#NAME>``; an unknown 32-hex id by
  ``<id>``. ``mlflow.runName`` and ``mlflow.parentRunId`` become the identity itself.
- The capture directory (in the Optuna ``storage`` param, the tracking URI printed) becomes
  ``<WORKDIR>``.
- Dropped tags: ``lgals.heartbeat`` (a Unix time), ``mlflow.user``, ``mlflow.source.*`` (the
  script's path, git commit, branch), ``mlflow.git*``, ``mlflow.databricks.*``,
  ``mlflow.log-model.history`` (ids and times). lgals sets the user and source tags on every
  run (MLflow's context: the machine's user, the script, the commit), ``mlflow run`` its own.
- Dropped params: ``git_commit`` (differs between the two commits by definition);
  ``lgals_version`` stays.
- Date-times (``2026-01-02 03:04:05``, MLflow's and Optuna's log lines, a dead run's
  ``lgals.status_reason``) become ``<datetime>``.
- Metrics: each value rounded to ``--digits`` significant digits (default 8: float32
  metrics carry about 7, so this keeps every real change and drops repr noise); histories
  sorted by (step, value), timestamps dropped. Timing metrics (key containing ``seconds``,
  ``time``, ``duration`` or ``elapsed``: ``epoch_seconds``) vary run to run and are kept as
  their number of values only.
- Text (stdout, stderr, ``results.md``; stderr echoes the report too): durations (``11 s``,
  ``0.0264 s``) become ``<t> s``, speed ratios (``1.08x``) ``<t>x``; cells of Markdown table
  columns whose header names a timing (``s/epoch/seed``, ``cost vs Baseline``) become
  ``<t>``; and the cost claim's verdict and
  its "within/above" (claim 4 compares LGALS's seconds per epoch with Baseline's, so it can
  flip with the machine's load) become ``<timing-dependent>``. CSV: the timing columns
  (``seconds_per_epoch_per_seed``, ``cost_vs_baseline``) become ``<t>``, other numbers are
  rounded to ``--digits`` significant digits.
- Artifacts are compared by path only (PNGs and MLflow's model files hold times and ids),
  except ``.npz`` files, whose arrays are digested (dtype, shape, SHA-256 of the bytes): the
  data recipes and epsilon histograms are deterministic.

Determinism: lgals seeds everything (data, noise, split, initialisation, batch order,
Optuna's sampler), so two captures of the same code on the same machine (same thread count,
CPU; on CUDA results may differ) diff clean. Checked on commit 977e809 on a loaded 2-core
machine: the first pair differed only in the cost columns of the report echoed on stderr
(hence the table masking above in all text, not just ``results.md``); since then the
captures are identical, stderr's line order included (the MLflow writer process writes
nothing there in a good run). Library warnings on stderr (scipy's, with the venv's path) stay:
compare captures made in the same environment.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FORMAT = 1
COMMAND = ["reproduce", "--quick", "--out", "results"]
OUT_DIR = "results"

DROP_TAGS = {"lgals.heartbeat", "mlflow.user", "mlflow.log-model.history", "mlflow.runName",
             "mlflow.parentRunId"}
DROP_TAG_PREFIXES = ("mlflow.source.", "mlflow.git", "mlflow.databricks.")
DROP_PARAMS = {"git_commit"}

TIMING_KEY = re.compile(r"seconds|time|duration|elapsed", re.IGNORECASE)
TIMING_HEADER = re.compile(r"s/epoch|seconds|cost|time|duration", re.IGNORECASE)
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
MODEL_ID = re.compile(r"\bm-[0-9a-f]{32}\b")
TABLE_RULE = re.compile(r"^\|\s*:?-{3,}")
DATETIME = re.compile(r"\d{4}[-/]\d{2}[-/]\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?")
# (pattern, replacement): timings in free text, applied in this order
TIMING_TEXT = [
    (re.compile(r"\b\d+(?:\.\d+)?(\s?)(s|ms|sec|secs|seconds|min)\b"), r"<t>\1\2"),
    (re.compile(r"\b\d+(?:\.\d+)?x\b"), "<t>x"),
    (re.compile(r"(negligible cost: )(?:supported|not supported|inconclusive)"),
     r"\1<timing-dependent>"),
    (re.compile(r"\b(?:within|above) <t>x"), "<timing-dependent> <t>x"),
]

Json = dict[str, Any]


# --- normalisation ---------------------------------------------------------------------------

class Normaliser:
    """Replaces what varies between two captures of the same behaviour (ids, paths, times)."""

    def __init__(self, workdir: Path, digits: int) -> None:
        self.workdirs = sorted({str(workdir), str(workdir.resolve())}, key=len, reverse=True)
        self.digits = digits
        self.runs: dict[str, str] = {}  # run id -> identity
        self.models: dict[str, str] = {}  # model id -> identity#name

    def value(self, text: str) -> str:
        """A tag's, param's or text's ids, capture directory and date-times replaced."""
        for workdir in self.workdirs:
            text = text.replace(workdir, "<WORKDIR>")
        text = MODEL_ID.sub(lambda m: f"<model:{self.models.get(m.group(), '?')}>", text)
        text = RUN_ID.sub(lambda m: f"<run:{self.runs[m.group()]}>" if m.group() in self.runs
                          else "<id>", text)
        return DATETIME.sub("<datetime>", text)

    def text(self, text: str) -> list[str]:
        """Command output or a Markdown report, as lines: the cells of table columns whose
        header names a timing masked, then :meth:`value`, then timings in the prose."""
        text = self.value("\n".join(_mask_timing_columns(text.splitlines())))
        for pattern, replacement in TIMING_TEXT:
            text = pattern.sub(replacement, text)
        return text.splitlines()

    def number(self, value: float) -> float | str:
        if not math.isfinite(value):
            return str(value)
        return float(f"{value:.{self.digits}g}")

    def metrics(self, history: dict[str, list[tuple[int, float]]]) -> Json:
        """Per key the sorted (step, value) pairs; a timing key's count only."""
        out: Json = {}
        for key, points in history.items():
            if TIMING_KEY.search(key):
                out[key] = {"timing_values": len(points)}
            else:
                rounded = [(step, self.number(v)) for step, v in points]
                out[key] = [list(p) for p in sorted(rounded, key=lambda p: (p[0], str(p[1])))]
        return out

    def tags(self, tags: dict[str, str]) -> dict[str, str]:
        return {k: self.value(v) for k, v in tags.items()
                if k not in DROP_TAGS and not k.startswith(DROP_TAG_PREFIXES)}

    def params(self, params: dict[str, str]) -> dict[str, str]:
        return {k: self.value(v) for k, v in params.items() if k not in DROP_PARAMS}

    def csv(self, text: str) -> list[str]:
        """Timing columns masked, numbers rounded, then :meth:`value`."""
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return []
        timing = [bool(TIMING_HEADER.search(name)) for name in rows[0]]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(rows[0])
        for row in rows[1:]:
            writer.writerow(["<t>" if j < len(timing) and timing[j] and cell else
                             self._csv_number(cell) for j, cell in enumerate(row)])
        return self.value(buffer.getvalue()).splitlines()

    def _csv_number(self, cell: str) -> str:
        """A float cell rounded; integers and text as they are."""
        try:
            int(cell)
            return cell
        except ValueError:
            pass
        try:
            return str(self.number(float(cell)))
        except ValueError:
            return cell


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _mask_timing_columns(lines: list[str]) -> list[str]:
    """Markdown tables' cells in the columns whose header names a timing, as ``<t>``."""
    masked, columns = [], None
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            columns = None
        elif columns is None and i + 1 < len(lines) and TABLE_RULE.match(lines[i + 1]):
            columns = [j for j, cell in enumerate(_cells(line)) if TIMING_HEADER.search(cell)]
        elif columns and not TABLE_RULE.match(line):
            line = "| " + " | ".join("<t>" if j in columns else cell
                                     for j, cell in enumerate(_cells(line))) + " |"
        masked.append(line)
    return masked


# --- capture ---------------------------------------------------------------------------------

def _paged(search, *args, **kwargs) -> Iterator[Any]:
    """Every item of an MLflow search, across its pages."""
    token = None
    while True:
        page = search(*args, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def _artifact_paths(list_artifacts, path: str | None = None) -> list[str]:
    """Every file under ``path``, recursively, via ``list_artifacts(path)``."""
    found = []
    for info in list_artifacts(path):
        found.extend(_artifact_paths(list_artifacts, info.path) if info.is_dir else [info.path])
    return sorted(found)


def _npz_digest(path: Path) -> dict[str, str]:
    import numpy as np

    with np.load(path, allow_pickle=False) as arrays:
        return {name: f"{arrays[name].dtype}{list(arrays[name].shape)} sha256:"
                      + hashlib.sha256(np.ascontiguousarray(arrays[name]).tobytes())
                      .hexdigest()[:16] for name in arrays.files}


def _identities(runs: list, experiments: dict[str, str]) -> dict[str, str]:
    """Run id -> ``EXPERIMENT:ROOT/.../RUN`` by names; repeated identities get ``#N`` in
    start order."""
    by_id = {run.info.run_id: run for run in runs}

    def chain(run) -> list[str]:
        names, seen = [], set()
        while run is not None and run.info.run_id not in seen:
            seen.add(run.info.run_id)
            names.append(run.info.run_name or "<unnamed>")
            run = by_id.get(run.data.tags.get("mlflow.parentRunId", ""))
        return names[::-1]

    identities: dict[str, str] = {}
    counts: dict[str, int] = {}
    for run in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_name or "")):
        base = f"{experiments[run.info.experiment_id]}:" + "/".join(chain(run))
        counts[base] = counts.get(base, 0) + 1
        identities[run.info.run_id] = base + (f"#{counts[base]}" if counts[base] > 1 else "")
    return identities


def read_store(uri: str, norm: Normaliser) -> tuple[Json, Json]:
    """Every experiment and run of the store at ``uri``, normalised."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # .npz downloads
    client = MlflowClient(uri)
    experiments = list(_paged(client.search_experiments, view_type=ViewType.ALL))
    names = {e.experiment_id: e.name for e in experiments}
    ids = list(names)
    runs = list(_paged(client.search_runs, ids, run_view_type=ViewType.ALL, max_results=1000))
    models = list(_paged(client.search_logged_models, ids, max_results=100))
    norm.runs = _identities(runs, names)
    for model in models:
        norm.models[model.model_id] = (f"{norm.runs.get(model.source_run_id, '<no run>')}"
                                       f"#{model.name}")

    out_runs: Json = {}
    for run in runs:
        run_id = run.info.run_id
        history = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
                   for key in run.data.metrics}
        artifacts = _artifact_paths(lambda p, r=run_id: client.list_artifacts(r, p))
        digests = {}
        with tempfile.TemporaryDirectory() as tmp:
            for path in (p for p in artifacts if p.endswith(".npz")):
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=uri)
                digests[path] = _npz_digest(Path(local))
        out_runs[norm.runs[run_id]] = {
            "status": run.info.status,
            "lifecycle_stage": run.info.lifecycle_stage,
            "tags": norm.tags(run.data.tags),
            "params": norm.params(run.data.params),
            "metrics": norm.metrics(history),
            "artifacts": artifacts,
            "npz_digests": digests,
            "inputs": sorted((_dataset_input(d, norm) for d in run.inputs.dataset_inputs),
                             key=lambda d: json.dumps(d, sort_keys=True)),
            "logged_models": {},
        }
    for model in models:
        owner = out_runs.setdefault(norm.runs.get(model.source_run_id, "<no run>"),
                                    {"logged_models": {}})
        owner["logged_models"][model.name] = {
            "status": str(model.status),
            "tags": norm.tags(model.tags),
            "params": norm.params(model.params),
            "metrics": norm.metrics(_model_history(model.metrics)),
            "artifacts": _artifact_paths(
                lambda p, m=model.model_id: client.list_logged_model_artifacts(m, p)),
        }
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.info.experiment_id] = counts.get(run.info.experiment_id, 0) + 1
    out_experiments = {e.name: {"lifecycle_stage": e.lifecycle_stage, "tags": norm.tags(e.tags),
                                "runs": counts.get(e.experiment_id, 0)} for e in experiments}
    return out_experiments, out_runs


def _model_history(metrics: list | None) -> dict[str, list[tuple[int, float]]]:
    history: dict[str, list[tuple[int, float]]] = {}
    for metric in metrics or []:
        history.setdefault(metric.key, []).append((metric.step, metric.value))
    return history


def _dataset_input(dataset_input, norm: Normaliser) -> Json:
    d = dataset_input.dataset
    return {"name": d.name, "digest": d.digest, "source_type": d.source_type,
            "source": norm.value(d.source), "schema": d.schema, "profile": d.profile,
            "tags": {t.key: norm.value(t.value) for t in dataset_input.tags}}


def _lgals_source(env: dict[str, str], cwd: Path) -> Json:
    """Which lgals the command imports: its folder, and the commit there."""
    found = subprocess.run([sys.executable, "-c", "import lgals; print(lgals.__file__)"],
                           env=env, cwd=cwd, capture_output=True, text=True)
    package = Path(found.stdout.strip()).parent if found.returncode == 0 else None
    info: Json = {"package": str(package) if package else found.stderr.strip()[-300:]}
    if package:
        git = ["git", "-C", str(package)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True)
        info["commit"] = head.stdout.strip() or None
        info["dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    return info


def capture(out: Path, workdir: Path | None, digits: int, timeout: float) -> int:
    """Run the command in a fresh directory, snapshot it to ``out``; the command's exit code."""
    started = time.perf_counter()
    temporary = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="runs-snapshot-")) if temporary else workdir
    workdir = workdir.absolute()
    if workdir.exists() and any(workdir.iterdir()):
        sys.exit(f"runs_snapshot: {workdir} is not empty: a store there would be resumed")
    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LGALS_"))}
    env.update(MLFLOW_TRACKING_URI=uri, LGALS_CACHE_DIR=str(workdir / "cache"))
    argv = [sys.executable, "-m", "lgals.cli", *COMMAND]
    try:
        source = _lgals_source(env, workdir)
        print(f"runs_snapshot: lgals from {source}", file=sys.stderr)
        print(f"runs_snapshot: running {' '.join(COMMAND)} in {workdir}", file=sys.stderr)
        command_started = time.perf_counter()
        done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout)
        command_seconds = time.perf_counter() - command_started
        norm = Normaliser(workdir, digits)
        experiments, runs = read_store(uri, norm)
        results = workdir / OUT_DIR
        files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
        texts = {name: (norm.text if name.endswith(".md") else norm.csv)(
            (results / name).read_text()) for name in files if name.endswith((".md", ".csv"))}
        snapshot = {
            "format": FORMAT,
            "meta": {
                "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "lgals": source, "python": sys.version.split()[0], "cpus": os.cpu_count(),
                "digits": digits, "command_seconds": round(command_seconds, 1),
                "capture_seconds": round(time.perf_counter() - started, 1),
            },
            "command": {"args": COMMAND, "returncode": done.returncode,
                        "stdout": norm.text(done.stdout), "stderr": norm.text(done.stderr)},
            "experiments": experiments,
            "runs": runs,
            "output": {"files": files, "texts": texts},
        }
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(snapshot, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"runs_snapshot: {len(runs)} runs -> {out} (command {command_seconds:.0f} s, capture "
          f"{snapshot['meta']['capture_seconds']:.0f} s)", file=sys.stderr)
    if done.returncode != 0:
        print(f"runs_snapshot: the command exited {done.returncode}; its stderr ends:\n"
              + done.stderr[-2000:], file=sys.stderr)
    return done.returncode


# --- diff ------------------------------------------------------------------------------------

def _show(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _key(path: str, key: str) -> str:
    """``path.key``, or ``path[key]`` for a key that is not a plain word (a run's identity, a
    dotted tag)."""
    if not path:
        return key
    return f"{path}.{key}" if re.fullmatch(r"\w+", key) else f"{path}[{key}]"


def differences(before: Any, after: Any, path: str = "") -> Iterator[str]:
    """Readable lines for every difference between two normalised documents: one headline
    each (``-`` removed, ``+`` added, ``~`` changed), a text's diff indented below it."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() - after.keys()):
            yield f"- {_key(path, key)} removed: {_show(before[key])}"
        for key in sorted(after.keys() - before.keys()):
            yield f"+ {_key(path, key)} added: {_show(after[key])}"
        for key in sorted(before.keys() & after.keys()):
            yield from differences(before[key], after[key], _key(path, key))
    elif (isinstance(before, list) and isinstance(after, list) and before != after
          and all(isinstance(x, str) for x in before + after)):
        yield f"~ {path}:"
        for line in difflib.unified_diff(before, after, "before", "after", lineterm="", n=1):
            yield "    " + line
    elif isinstance(before, list) and isinstance(after, list) and before != after:
        first = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b),
                     min(len(before), len(after)))
        yield (f"~ {path}: {len(before)} -> {len(after)} items, first difference at [{first}]: "
               f"{_show(before[first:first + 3])} -> {_show(after[first:first + 3])}")
    elif before != after:
        yield f"~ {path}: {_show(before)} -> {_show(after)}"


def diff(before_path: Path, after_path: Path) -> int:
    """Print the differences; 0 when there are none, else 1."""
    before, after = (json.loads(p.read_text()) for p in (before_path, after_path))
    for name, doc in (("before", before), ("after", after)):
        meta = doc.get("meta", {})
        print(f"{name}: {meta.get('lgals')} captured {meta.get('captured_at')}")
    if before.get("meta", {}).get("digits") != after.get("meta", {}).get("digits"):
        print("warning: captured with different --digits; rounded values may differ")
    compared = {k: v for k, v in before.items() if k != "meta"}
    lines = list(differences(compared, {k: v for k, v in after.items() if k != "meta"}))
    runs_before, runs_after = before.get("runs", {}), after.get("runs", {})
    print(f"runs: {len(runs_before)} before, {len(runs_after)} after; "
          f"{len(runs_before.keys() - runs_after.keys())} removed, "
          f"{len(runs_after.keys() - runs_before.keys())} added")
    for line in lines:
        print(line)
    found = sum(not line.startswith(" ") for line in lines)  # not a text diff's body
    print(f"{found} difference(s)" if found else "identical")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring for what is normalised.")
    commands = parser.add_subparsers(dest="command", required=True)
    grab = commands.add_parser("capture", help="run `lgals reproduce --quick`, snapshot it")
    grab.add_argument("--out", type=Path, required=True, help="snapshot JSON to write")
    grab.add_argument("--workdir", type=Path,
                      help="empty or new directory to run in, kept [default: a temporary one, "
                           "removed]")
    grab.add_argument("--digits", type=int, default=8,
                      help="significant digits metrics and CSV numbers keep [default: 8]")
    grab.add_argument("--timeout", type=float, default=900,
                      help="seconds the command may take [default: 900]")
    compare = commands.add_parser("diff", help="compare two snapshots; exit 1 if they differ")
    compare.add_argument("before", type=Path, help="snapshot of the code before")
    compare.add_argument("after", type=Path, help="snapshot of the code after")
    args = parser.parse_args(argv)
    if args.command == "capture":
        return 2 if capture(args.out, args.workdir, args.digits, args.timeout) else 0
    return diff(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
