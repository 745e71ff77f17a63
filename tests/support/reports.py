"""Hand-made ``lgals evaluate`` runs in a real sqlite MLflow store, for the report tests.

Imported by both halves of ``test_report_repeats.py`` (in ``tests/unit/`` and
``tests/system/``); the store they are made in, ``store``, is a fixture in
``tests/conftest.py``.
"""

from __future__ import annotations

from lgals.data import NoiseRecipe

EPOCHS = 2
NOISY = NoiseRecipe(0.2)  # the note's setting


def evaluate(store, mode: str, accs: dict[int, float], repeat: int | None = 0,
             noise: NoiseRecipe = NOISY, seconds: float = 1.0, precision: str = "fp32") -> str:
    """A finished evaluate run of ``mode`` with one finished child per seed (final accuracy
    ``accs[seed]``, a flat test_acc and epoch_seconds curve), started after every earlier
    one; its id. On mnist1d its params name no dataset, as before datasets had names; in
    fp32 they name no precision, as before precisions had names."""
    client = store.client
    tags = {"lgals.stage": "evaluate", "lgals.mode": mode}
    if repeat is not None:
        tags["lgals.repeat"] = str(repeat)
    parent = client.create_run(store.experiment_id, start_time=next(store.clock),
                               tags=tags).info.run_id
    for key, value in {"noise_type": noise.noise_type, "noise_rate": str(noise.noise_rate),
                       "noise_seed": str(repeat or 0),
                       "seeds": ",".join(map(str, sorted(accs))),
                       **({} if noise.dataset == "mnist1d" else {"dataset": noise.dataset}),
                       **({} if precision == "fp32" else {"precision": precision}),
                       }.items():
        client.log_param(parent, key, value)
    for seed, acc in sorted(accs.items()):
        child = client.create_run(store.experiment_id, start_time=next(store.clock), tags={
            **tags, "lgals.seed": str(seed), "mlflow.parentRunId": parent}).info.run_id
        client.log_metric(child, "final_test_acc", acc)
        for step in range(EPOCHS):
            client.log_metric(child, "test_acc", acc, step=step)
            client.log_metric(child, "epoch_seconds", seconds, step=step)
        client.log_artifact(child, str(store.npz))
        client.set_terminated(child, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent
