"""Workers sharing one study: ``lgals tune --workers W`` on the local SQLite default, and
one to W hosts against PostgreSQL, side by side in one run.

``local``: one ``lgals tune --mode all --workers W`` on the default SQLite stores with short
trials (``--batch 1``, few epochs: the most storage writes per second), checked for what
would be a defect: a "database is locked" (or any other) error, a lost or duplicated trial,
a trial run missing in MLflow, a stall (the longest wait between two trials finishing).

``postgres``: the same study on a real PostgreSQL (tests/support/pg_fixtures.py: its own
cluster on a free port, stopped at the end; durable commits unless ``--no-fsync``), tracked by
an ``mlflow server`` on it, with 1, then 2, ... ``lgals tune`` processes joining it, as hosts
would. Per setting: trials per minute and the
time the database spent executing statements per trial (``pg_stat_database.active_time`` of
the Optuna database: waits for the hosts' advisory locks included), with its transactions
per trial. Each host gets one torch thread, as if it had a core of its own.

    python benchmarks/team_workers.py [--only local|postgres] [--json]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from common import describe_machine, emit_json, machine, parser
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.pg_fixtures import (  # noqa: E402  (a real PostgreSQL, as the tests use)
    mlflow_server_on,
    postgres_server,
)

from lgals.losses import SUITES  # noqa: E402
from lgals.schema import Stage, runs_filter  # noqa: E402
from lgals.tuning import TuneSettings  # noqa: E402

LGALS = str(Path(sys.executable).parent / "lgals")
# A host stands for a machine of its own: one torch thread each, so that two hosts on these
# 2 cores do not oversubscribe them (two 2-thread processes made each other 3.6x slower).
ONE_CORE = {"OMP_NUM_THREADS": "1"}
ERRORS = re.compile(r"database is locked|Traceback|error", re.IGNORECASE)


def tune(directory: Path, *argv: str, hosts: int = 1,
         env: dict[str, str] | None = None) -> tuple[float, list[str]]:
    """``hosts`` copies of ``lgals tune ARGV`` started at once, each in a directory of its
    own (with ``env`` added to its environment); the wall seconds until the last one ends,
    and their stderr."""
    environment = {**os.environ, **(env or {})}
    processes = []
    started = time.perf_counter()
    for host in range(hosts):
        work = directory / f"host{host}"
        work.mkdir()
        processes.append(subprocess.Popen([LGALS, "tune", *argv], cwd=work, text=True,
                                          env=environment, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))
    errors = []
    for process in processes:
        errors.append(process.communicate()[1])
        print(f"  a host ended after {time.perf_counter() - started:.1f} s", file=sys.stderr)
    wall = time.perf_counter() - started
    for process, stderr in zip(processes, errors):
        if process.returncode != 0:
            raise SystemExit(f"lgals tune failed ({process.returncode}):\n{stderr[-2000:]}")
    return wall, errors


def study_check(storage: str, study_names: list[str], n_trials: int, client: MlflowClient,
                experiment: str) -> dict:
    """What a defect would look like: trials per study, duplicates, trial runs, the stall."""
    trials = [t for name in study_names
              for t in optuna.load_study(study_name=name, storage=storage).trials]
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    numbers = [(t.number, name) for name in study_names
               for t in optuna.load_study(study_name=name, storage=storage).trials]
    ends = sorted(t.datetime_complete.timestamp() for t in counted)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], runs_filter(Stage.TRIAL),
                              max_results=10000)
    return {"expected": n_trials * len(study_names), "counted": len(counted),
            "failed": sum(t.state.name == "FAIL" for t in trials),
            "duplicated": len(numbers) - len(set(numbers)),
            "trial_runs": len(runs),
            "trial_runs_finished": sum(r.info.status == "FINISHED" for r in runs),
            "longest_gap_s": max((b - a for a, b in zip(ends, ends[1:])), default=0.0)}


def local(workers: int, n_trials: int, epochs: int) -> dict:
    """``lgals tune --mode all --workers W`` on the default stores, short trials."""
    directory = Path(tempfile.mkdtemp(prefix="team-local-"))
    try:
        wall, errors = tune(directory, "--mode", "all", "--workers", str(workers),
                            "--n-trials", str(n_trials), "--epochs", str(epochs),
                            "--batch", "1", "--device", "cpu")
        work = directory / "host0"
        row = study_check(f"sqlite:///{work / 'optuna.db'}",
                          [TuneSettings(mode=mode, epochs=epochs).study_name
                           for mode in SUITES["paper"]], n_trials,
                          MlflowClient(f"sqlite:///{work / 'mlflow.db'}"), "lgals")
        lines = [ln for text in errors for ln in text.splitlines() if ERRORS.search(ln)]
        return {"storage": "sqlite (default)", "workers": workers, "wall_s": wall,
                "trials_per_min": 60 * row["counted"] / wall, "error_lines": len(lines),
                "first_error": lines[0] if lines else "", **row}
    finally:
        shutil.rmtree(directory)


def postgres(hosts_list: list[int], n_trials: int, epochs: int, fsync: bool) -> list[dict]:
    """The same study (--mode lgals) with 1, 2, ... hosts joining it on PostgreSQL."""
    rows = []
    directory = Path(tempfile.mkdtemp(prefix="team-postgres-"))
    try:
        with postgres_server(directory, durable=fsync) as server:
            for hosts in hosts_list:
                name = f"optuna{hosts}"
                storage = server.create_database(name)
                server.create_database(f"mlflow{hosts}")
                work = directory / f"hosts{hosts}"
                work.mkdir()
                with mlflow_server_on(server, work, f"mlflow{hosts}") as tracking:
                    before = database_stats(server, name)
                    wall, _ = tune(work, "--mode", "lgals", "--storage", storage,
                                   "--tracking-uri", tracking.uri, "--study-name", "bench",
                                   "--n-trials", str(n_trials), "--epochs", str(epochs),
                                   "--device", "cpu", hosts=hosts, env=ONE_CORE)
                    after = database_stats(server, name)
                    row = study_check(storage, ["bench"], n_trials, MlflowClient(tracking.uri),
                                      "lgals")
                active_ms, transactions = (a - b for a, b in zip(after, before))
                rows.append({"storage": "postgresql", "hosts": hosts, "wall_s": wall,
                             "trials_per_min": 60 * row["counted"] / wall,
                             "db_ms_per_trial": active_ms / row["counted"],
                             "transactions_per_trial": transactions / row["counted"], **row})
                print(f"{hosts} host(s): {wall:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def database_stats(server, name: str) -> tuple[float, int]:
    """(ms spent executing statements, committed transactions) of database ``name``."""
    server.psql("SELECT pg_stat_force_next_flush()")
    out = server.psql(f"SELECT active_time, xact_commit FROM pg_stat_database "
                      f"WHERE datname = '{name}'")
    active, commits = out.strip().split("|")
    return float(active), int(commits)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--only", choices=["local", "postgres"])
    cli.add_argument("--workers", type=int, default=4, help="local workers")
    cli.add_argument("--local-trials", type=int, default=40, help="per study, local")
    cli.add_argument("--local-epochs", type=int, default=1)
    cli.add_argument("--hosts", default="1,2", help="PostgreSQL hosts, in this order")
    cli.add_argument("--n-trials", type=int, default=20, help="PostgreSQL study")
    cli.add_argument("--epochs", type=int, default=10, help="PostgreSQL study")
    cli.add_argument("--no-fsync", action="store_true",
                     help="PostgreSQL without durable commits (as the tests run it)")
    args = cli.parse_args()
    info = machine()
    document = {"machine": info, "local": None, "postgres": None}
    if args.only in (None, "local"):
        document["local"] = local(args.workers, args.local_trials, args.local_epochs)
    if args.only in (None, "postgres"):
        document["postgres"] = postgres([int(h) for h in args.hosts.split(",")],
                                        args.n_trials, args.epochs, not args.no_fsync)
    if args.json:
        emit_json(document)
        return
    print(describe_machine(info))
    if document["local"]:
        row = document["local"]
        print(f"\nlocal: lgals tune --mode all --workers {row['workers']} --n-trials "
              f"{args.local_trials} --epochs {args.local_epochs} --batch 1, SQLite\n")
        print("| trials counted / expected | failed | duplicated | trial runs finished | "
              "error lines | longest gap s | wall s | trials/min |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {row['counted']} / {row['expected']} | {row['failed']} | {row['duplicated']} "
              f"| {row['trial_runs_finished']} / {row['trial_runs']} | {row['error_lines']} | "
              f"{row['longest_gap_s']:.1f} | {row['wall_s']:.1f} | "
              f"{row['trials_per_min']:.1f} |")
        if row["first_error"]:
            print(f"first error line: {row['first_error']}")
    if document["postgres"]:
        print(f"\npostgres: lgals tune --mode lgals --n-trials {args.n_trials} --epochs "
              f"{args.epochs}, one study, hosts (one torch thread each) joining at once "
              f"({'fsync off' if args.no_fsync else 'durable commits'})\n")
        print("| hosts | trials counted / expected | failed | duplicated | wall s | trials/min "
              "| database ms / trial | transactions / trial |")
        print("|---|---|---|---|---|---|---|---|")
        for row in document["postgres"]:
            print(f"| {row['hosts']} | {row['counted']} / {row['expected']} | {row['failed']} "
                  f"| {row['duplicated']} | {row['wall_s']:.1f} | {row['trials_per_min']:.1f} "
                  f"| {row['db_ms_per_trial']:.1f} | {row['transactions_per_trial']:.0f} |")


if __name__ == "__main__":
    main()
