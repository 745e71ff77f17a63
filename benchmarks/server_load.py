"""What tuning hosts ask of a team's MLflow server, and how many hosts one server takes.

``round``: a 30-trial round (``lgals tune --modes lgals --batch 30``) against an ``mlflow
server`` on a real PostgreSQL (tests/support/pg_fixtures.py), from 1 host, then from 3 hosts
at once, each with a round of its own in the same study (one torch thread each). The
server's access log gives the requests per second over the command, by kind: heartbeats
(``runs/set-tag``), metric batches (``runs/log-batch``) and the rest. Meanwhile an observer
reads the RUNNING runs' heartbeat tags every second: the oldest age it sees says whether
beats fell behind (they are due every ``LGALS_STALE_SECONDS`` / 6).

``capacity``: the same server, with ``--clients`` processes each sending heartbeats (one
``set_tag`` after another) as fast as it answers for ``--seconds``: the heartbeats per second
it takes at most. One server takes about ``capacity x 0.7 / (one host's requests per
second)`` hosts before its queue, and so the heartbeats, fall behind (70%: headroom for the
bursts of runs opening and ending together).

    python benchmarks/server_load.py [--epochs 20] [--hosts 1,3] [--clients 4]
        [--seconds 10] [--json]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import describe_machine, emit_json, machine, parser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.pg_fixtures import mlflow_server_on, postgres_server  # noqa: E402

LGALS = str(Path(sys.executable).parent / "lgals")
ONE_CORE = {"OMP_NUM_THREADS": "1"}  # a host stands for a machine of its own
REQUEST = re.compile(r'"(?:GET|POST|PATCH|DELETE) /(?:ajax-)?api/2\.0/mlflow/([\w/-]+)')
HEADROOM = 0.7

# Reads the experiment's RUNNING runs' heartbeat ages every second until stdin closes;
# prints the largest age seen (s) and how many readings there were.
OBSERVER = """
import json, sys, threading, time
from mlflow import MlflowClient
client, done = MlflowClient(sys.argv[1]), threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
oldest, readings = 0.0, 0
while not done.wait(1.0):
    experiment = client.get_experiment_by_name("lgals")
    if experiment is None:
        continue
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=1000):
        beat = run.data.tags.get("lgals.heartbeat")
        if beat:
            oldest, readings = max(oldest, time.time() - float(beat)), readings + 1
print(json.dumps([oldest, readings]))
"""

# Sends heartbeats to one run of its own for `seconds`; prints how many it sent.
CLIENT = """
import sys, time
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
run_id = client.create_run(client.get_experiment_by_name("lgals").experiment_id).info.run_id
sent, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    client.set_tag(run_id, "lgals.heartbeat", str(int(time.time())))
    sent += 1
client.set_terminated(run_id)
print(sent)
"""


def requests_in(log: Path, offset: int) -> Counter:
    """The server's requests, by API path, logged after byte ``offset`` of its log."""
    with open(log, "rb") as text:
        text.seek(offset)
        return Counter(match.group(1) for match in REQUEST.finditer(text.read().decode()))


def kinds(paths: Counter) -> dict[str, int]:
    return {"heartbeats": paths["runs/set-tag"], "metric batches": paths["runs/log-batch"],
            "other": sum(paths.values()) - paths["runs/set-tag"] - paths["runs/log-batch"]}


def tuning_round(directory: Path, storage: str, uri: str, log: Path, hosts: int,
                 epochs: int) -> dict:
    """``hosts`` processes tuning one study together, each a 30-trial round of its own; their
    requests per second."""
    offset = log.stat().st_size
    observer = subprocess.Popen([sys.executable, "-c", OBSERVER, uri], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    argv = [LGALS, "tune", "--modes", "lgals", "--n-trials", str(30 * hosts), "--batch", "30",
            "--epochs", str(epochs), "--storage", storage, "--tracking-uri", uri,
            "--study-name", f"round{hosts}", "--device", "cpu"]
    started = time.perf_counter()
    processes = []
    for host in range(hosts):
        work = directory / f"round{hosts}-host{host}"
        work.mkdir()
        processes.append(subprocess.Popen(argv, cwd=work, env={**os.environ, **ONE_CORE},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True))
    errors = [process.communicate()[1] for process in processes]
    wall = time.perf_counter() - started
    oldest, readings = json.loads(observer.communicate("")[0])
    for process, stderr in zip(processes, errors):
        if process.returncode != 0:
            raise SystemExit(f"lgals tune failed ({process.returncode}):\n{stderr[-2000:]}")
    counted = kinds(requests_in(log, offset))
    return {"hosts": hosts, "wall_s": wall, "requests": counted,
            "per_s": {kind: n / wall for kind, n in counted.items()},
            "total_per_s": sum(counted.values()) / wall,
            "oldest_heartbeat_s": oldest, "heartbeat_readings": readings}


def capacity(uri: str, clients: int, seconds: float) -> float:
    """Heartbeats per second the server takes with ``clients`` senders at once."""
    processes = [subprocess.Popen([sys.executable, "-c", CLIENT, uri, str(seconds)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    # the last line: MLflow prints the run's link as it ends
    return sum(int(process.communicate()[0].split()[-1]) for process in processes) / seconds


def main() -> None:
    from lgals.settings import heartbeat_seconds

    cli = parser(__doc__)
    cli.add_argument("--epochs", type=int, default=20)
    cli.add_argument("--hosts", default="1,3")
    cli.add_argument("--clients", type=int, default=4)
    cli.add_argument("--seconds", type=float, default=10.0)
    args = cli.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="server-load-"))
    with postgres_server(directory) as database:
        storage = database.create_database("optuna_load")
        database.create_database("mlflow_load")
        with mlflow_server_on(database, directory, "mlflow_load") as server:
            rounds = []
            for hosts in map(int, args.hosts.split(",")):
                rounds.append(tuning_round(directory, storage, server.uri, server.log, hosts,
                                           args.epochs))
                print(json.dumps(rounds[-1]), file=sys.stderr)  # a partial result
            most = capacity(server.uri, args.clients, args.seconds)
    one_host = rounds[0]["total_per_s"]
    document = {"machine": machine(), "epochs": args.epochs,
                "heartbeat_every_s": heartbeat_seconds(), "rounds": rounds,
                "capacity_per_s": most, "clients": args.clients,
                "hosts_per_server": most * HEADROOM / one_host}
    if args.json:
        emit_json(document)
        return
    print(describe_machine(document["machine"]))
    print(f"a 30-trial round of {args.epochs} epochs; heartbeats due every "
          f"{document['heartbeat_every_s']:g} s\n")
    print("| hosts | wall s | heartbeats /s | metric batches /s | other /s | total /s | "
          "oldest heartbeat seen s |")
    print("|---|---|---|---|---|---|---|")
    for row in rounds:
        per_s = row["per_s"]
        print(f"| {row['hosts']} | {row['wall_s']:.0f} | {per_s['heartbeats']:.1f} | "
              f"{per_s['metric batches']:.1f} | {per_s['other']:.1f} | "
              f"{row['total_per_s']:.1f} | {row['oldest_heartbeat_s']:.1f} |")
    print(f"\nserver capacity: {most:.0f} heartbeats/s ({args.clients} senders); one host "
          f"asks {one_host:.1f} requests/s: one server takes ~{document['hosts_per_server']:.0f}"
          f" hosts at {HEADROOM:.0%} of it")


if __name__ == "__main__":
    main()
