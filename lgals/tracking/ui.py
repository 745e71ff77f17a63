"""What a person sees of lgals in MLflow's UI: the experiment's description and kind, and
links to its runs pages. Text only; setting it is :func:`lgals.tracking.store.connect`'s."""

from __future__ import annotations

from urllib.parse import urlencode

from lgals.schema import MODE, NOISE, NOTE, REPEAT, SEED, SEED_RUNS, STAGE

EXPERIMENT_DESCRIPTION = f"""\
lgals: Logit-Gradient Alignment Label Smoothing against no smoothing and fixed smoothing on
mnist1d with flipped training labels.

Runs by stage (tag `{STAGE}`): `trial` (one Optuna trial, named `<mode>-trial<NN>`, under
its `tune-<mode>` run), `tune`, `evaluate` (one run per seed, named `<mode>-seed<N>`, under
`evaluate-<mode>`), `report`, `reproduce`, `sweep`, `diagnose`. Tags `{MODE}`,
`{SEED}`, `{REPEAT}` (repetition of a repeated study) and `{NOISE}` (a sweep's
noise setting) filter them.

Switch the UI to "Model training" (top left; or add `?workflowType=machine_learning` to
the experiment's URL) to see the runs.

Compare modes: filter `{SEED_RUNS}`, sort by `final_test_acc` (sorted by creation time, the
table also pulls in their parent runs), open the chart view, group by `{MODE}`, and
search the charts for `test_acc`, `noise_auroc`, `eps_`, `memorized_frac`.
The statistics are in the latest `report` run's `results.md`."""


# The kind MLflow's experiment page reads from this tag (MLflow 3.17's server/js) when its
# GenAI / model training switch does not decide, which it does by default: see runs_page.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   NOTE: EXPERIMENT_DESCRIPTION}


def runs_page(server: str, experiment_id: str, search: str = "") -> str:
    """The experiment's runs in MLflow's UI; with ``search``, the runs it matches, sorted by
    ``final_test_acc``.

    MLflow 3.17's UI picks its GenAI or model training view from ``workflowType`` (URL, else
    the browser's last choice, else GenAI), not from the experiment's kind: the link says
    which. Sorted by creation time, the default, its table pulls in the parents of the runs
    a search matches; sorted by a metric, it lists just those runs.
    """
    query = {"workflowType": "machine_learning"}
    if search:
        query |= {"searchFilter": search, "orderByKey": "metrics.`final_test_acc`",
                  "orderByAsc": "false"}
    return f"{server}/#/experiments/{experiment_id}/runs?{urlencode(query)}"
