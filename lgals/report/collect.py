"""Collecting the report's runs from MLflow: each mode's latest finished evaluate run per
repetition with its seed runs (:class:`ModeRuns`), and the diagnose run of their data
(:class:`Diagnosis`)."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lgals.data import DEFAULT_DATASET, NoiseRecipe
from lgals.losses import SUITES
from lgals.schema import (
    MODE,
    PARENT,
    SEED,
    SOURCE_RUN,
    VAL_LABELS,
    Stage,
    repeat_of,
    runs_filter,
)
from lgals.tracking.store import mlflow_client

# Per-sample scores for detecting flipped labels: the metric each logs per epoch, its name.
DETECTORS = {"noise_auroc": "1 − s_i (LGALS's alignment)", "noise_auroc_loss": "training loss",
             "noise_auroc_confidence": "1 − p_y", "noise_auroc_el2n": "‖g_i‖ (EL2N)",
             "noise_auroc_aum": "−AUM (area under the margin)"}
# The per-epoch curves collected from every seed run.
CURVES = ("test_acc", "eps_clean_mean", "eps_noisy_mean", "epoch_seconds", *DETECTORS)
# The diagnose run's statistics, per checkpoint epoch.
DIAGNOSIS_KEYS = ("all.pearson", "layer1.pearson", "layer2.pearson", "layer3.pearson",
                  "weight.layer3", "auroc.alignment", "auroc.weight_alignment")
SEARCH_PAGE = 1000  # runs per search request; collect pages through all of them

Key = tuple[int, int]  # (repetition, seed)


def grid(keys: Iterable[Key]) -> tuple[list[int], list[int]]:
    """The repetitions among ``keys`` and the seeds every one of them ran: the full
    ``[R, S]`` grid (a ragged one would weigh repetitions unequally)."""
    keys = set(keys)
    repeats = sorted({repeat for repeat, _ in keys})
    seeds = set.intersection(*({s for r, s in keys if r == repeat} for repeat in repeats)) \
        if repeats else set()
    return repeats, sorted(seeds)


def matrix(values: Mapping[Key, float], keys: Iterable[Key]) -> np.ndarray:
    """``values`` on the full grid of ``keys`` as ``[R, S]``."""
    repeats, seeds = grid(keys)
    return np.array([[values[(r, s)] for s in seeds] for r in repeats],
                    dtype=float).reshape(len(repeats), len(seeds))


@dataclass(frozen=True)
class Selection:
    """How one evaluate run's numbers were chosen, as its runs logged them: the epochs it
    trained (its test accuracy is the last epoch's), where its hyperparameters came from and,
    when tuned, its tune run's trials, validation share and validation labels."""

    epochs: int | None
    source: str  # "tune", "file:<path>" or "defaults"; "" when the run logged none
    n_trials: int | None = None
    val_fraction: float | None = None
    val_labels: str | None = None  # "noisy", or "clean" (an oracle)


@dataclass
class ModeRuns:
    """One mode's latest evaluate run per repetition: final accuracy per (repetition, seed)
    and per-epoch curves."""

    mode: str
    run_ids: list[str]  # the evaluate runs used, one per repetition
    n_stacked: int  # seeds trained in one stacked computation (epoch_seconds covers them all)
    final_acc: dict[Key, float]  # (repetition, seed) -> final test accuracy (fraction)
    curves: dict[str, np.ndarray]  # name -> [runs, epochs], rows in sorted(final_acc) order
    eps_counts: np.ndarray | None = None  # [epochs, 2, bins], summed over runs
    eps_edges: np.ndarray | None = None
    selections: list[Selection] = field(default_factory=list)  # one per run of run_ids
    dataset: str = DEFAULT_DATASET  # what the runs trained on
    precision: str = "fp32"  # of their matrix products (lgals.model.Compute)

    def matrix(self, keys: Iterable[Key] | None = None) -> np.ndarray:
        """Final accuracies ``[R, S]`` (fractions) on ``keys`` (default: all of them)."""
        return matrix(self.final_acc, self.final_acc if keys is None else keys)

    def curve_matrix(self, name: str) -> np.ndarray:
        """Each run's curve ``name`` averaged over epochs, as ``[R, S]``."""
        per_run = dict(zip(sorted(self.final_acc), self.curves[name].mean(axis=1)))
        return matrix(per_run, per_run)


@dataclass
class Diagnosis:
    """The ``lgals diagnose`` run the card quotes: per statistic, its value at each checkpoint
    epoch."""

    run_id: str
    mode: str
    values: dict[str, dict[int, float]]  # metric key -> epoch -> value


def collect(experiment_id: str, modes: Sequence[str] | None = None,
            noise: NoiseRecipe | None = None, repeats: int | None = None,
            seeds: int | None = None, dataset: str | None = None,
            precision: str | None = None) -> dict[str, ModeRuns]:
    """For each of ``modes`` (default: the paper suite's) and each repetition, the latest
    finished evaluate run and its seed runs, from MLflow only.

    ``noise``: only runs of its dataset and noise setting (:meth:`NoiseRecipe.same_setting`:
    its draw and split aside, any type at rate 0); without it, the dataset and setting of the
    first mode's latest run (of ``dataset``, if given), so that neither datasets nor settings
    ever mix; likewise ``precision`` (default: the latest run's): runs of different precisions
    are never one set. ``repeats``: repetitions 0..repeats-1 only. ``seeds``: per (mode, repetition)
    prefer the latest run that ran seeds 0..seeds-1, and use only those. A run without a
    repetition tag (:data:`lgals.schema.REPEAT`) is repetition 0.
    """
    modes = SUITES["paper"] if modes is None else modes
    client = mlflow_client()
    runs = _search(client, experiment_id,
                   runs_filter(Stage.EVALUATE, status="FINISHED"))
    children: dict[str, list] = {}
    for run in runs:
        if SEED in run.data.tags and "final_test_acc" in run.data.metrics:
            children.setdefault(run.data.tags.get(PARENT), []).append(run)
    parents = [r for r in runs if SEED not in r.data.tags
               and r.data.tags.get(MODE) in modes
               and r.info.run_id in children
               and (repeats is None or repeat_of(r) < repeats)]
    def of_dataset(run) -> bool:
        logged = _noise(run)
        return dataset is None or (logged is not None and logged.dataset == dataset)

    if noise is None:
        latest = next((r for mode in modes for r in parents
                       if r.data.tags[MODE] == mode and of_dataset(r)), None)
        noise = _noise(latest) if latest else None
    parents = [r for r in parents if _same_setting(_noise(r), noise)]
    if precision is None:
        precision = next((precision_of(r) for mode in modes for r in parents
                          if r.data.tags[MODE] == mode), "fp32")
    parents = [r for r in parents if precision_of(r) == precision]
    wanted = set(range(seeds)) if seeds is not None else None
    found = {}
    for mode in modes:
        chosen = []
        of_mode = [r for r in parents if r.data.tags[MODE] == mode]
        for repeat in sorted({repeat_of(r) for r in of_mode}):
            candidates = [r for r in of_mode if repeat_of(r) == repeat]
            parent = next((r for r in candidates if wanted is None or wanted <= {
                int(c.data.tags[SEED]) for c in children[r.info.run_id]}), candidates[0])
            members = [c for c in children[parent.info.run_id]
                       if wanted is None or int(c.data.tags[SEED]) in wanted]
            chosen.append((repeat, parent, members, len(children[parent.info.run_id])))
        if chosen:
            found[mode] = _mode_runs(client, mode, chosen,
                                     noise.dataset if noise else DEFAULT_DATASET, precision)
    return found


def precision_of(run) -> str:
    """The precision a run trained at (a run from before precisions had names: fp32)."""
    return run.data.params.get("precision", "fp32")


def other_precisions(experiment_id: str, runs: Mapping[str, ModeRuns]) -> dict[str, int]:
    """Finished evaluate runs of ``runs``' modes, dataset and noise setting that trained at
    another precision than they did (:func:`collect` left them out), counted by precision."""
    chosen = next(iter(runs.values()))
    setting = _noise(mlflow_client().get_run(chosen.run_ids[0]))
    candidates = _search(mlflow_client(), experiment_id,
                         runs_filter(Stage.EVALUATE, status="FINISHED"))
    return dict(Counter(precision_of(r) for r in candidates
                        if SEED not in r.data.tags and r.data.tags.get(MODE) in runs
                        and _same_setting(_noise(r), setting)
                        and precision_of(r) != chosen.precision))


def _search(client, experiment_id: str, query: str) -> list:
    """Every run matching ``query``, latest first (ties by run id, so the order never
    depends on the store)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=SEARCH_PAGE,
                                  page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda r: (-r.info.start_time, r.info.run_id))


def _noise(run) -> NoiseRecipe | None:
    """The noise setting ``run`` logged, its dataset, rate and type (the rest left at their
    defaults: no setting depends on them; a run from before datasets had names was on
    mnist1d), if it logged one."""
    params = run.data.params
    if "noise_type" not in params or "noise_rate" not in params:
        return None
    return NoiseRecipe(float(params["noise_rate"]), params["noise_type"],
                       dataset=params.get("dataset", DEFAULT_DATASET))


def _same_setting(a: NoiseRecipe | None, b: NoiseRecipe | None) -> bool:
    """Whether both are one noise setting; a run that logged none matches only none."""
    if a is None or b is None:
        return a == b
    return a.same_setting(b)


def collect_diagnosis(experiment_id: str, runs: Mapping[str, ModeRuns],
                      run_id: str | None = None) -> Diagnosis | None:
    """Diagnose run ``run_id`` (the one a protocol ran or reused), else the latest finished one
    on the dataset, at the noise setting and at the precision of the report's evaluate
    ``runs`` (a diagnosis of other data or training says nothing about them); its statistics
    per checkpoint, if there is one."""
    client = mlflow_client()
    if run_id is None:
        chosen = next(iter(runs.values()))
        setting = _noise(client.get_run(chosen.run_ids[0]))

        def of_these(run) -> bool:
            measured = _measured(client, run)
            return (_same_setting(_noise(measured), setting)
                    and precision_of(measured) == chosen.precision)

        found = _search(client, experiment_id, runs_filter(Stage.DIAGNOSE, status="FINISHED"))
        run = next((r for r in found if of_these(r)), None)
        if run is None:
            return None
    else:
        run = client.get_run(run_id)
    values = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
              for key in DIAGNOSIS_KEYS}
    return Diagnosis(run.info.run_id, run.data.params.get("mode", ""), values)


def _measured(client, run):
    """The run that names the data and precision diagnose ``run`` measured: itself, or the
    seed run whose model it reloaded (``lgals diagnose --run`` logs neither)."""
    source = run.data.tags.get(SOURCE_RUN)
    return client.get_run(source) if source and _noise(run) is None else run


def unfinished(experiment_id: str) -> dict[str, int]:
    """How many evaluate runs the report leaves out, by status: only FINISHED runs are
    results (a killed process's half-logged seed run is not)."""
    runs = mlflow_client().search_runs(
        [experiment_id], runs_filter(Stage.EVALUATE, status_not="FINISHED"),
        max_results=1000)
    return dict(Counter(run.info.status for run in runs))


def _mode_runs(client, mode: str, chosen: list[tuple[int, object, list, int]],
               dataset: str, precision: str) -> ModeRuns:
    """One mode's runs on ``dataset`` from ``(repeat, evaluate run, its seed runs used, seeds
    it stacked)`` per repetition."""
    members = sorted(((repeat, int(r.data.tags[SEED]), r)
                      for repeat, _, runs, _ in chosen for r in runs), key=lambda m: m[:2])
    curves = {}
    for key in CURVES:
        histories = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, key),
                                              key=lambda m: m.step)] for _, _, r in members]
        if all(histories) and len({len(h) for h in histories}) == 1:
            curves[key] = np.array(histories)
    _, first, _, stacked = chosen[0]
    vary_noise = first.data.params.get("vary_noise", "False") == "True"
    runs = ModeRuns(mode, [parent.info.run_id for _, parent, _, _ in chosen],
                    1 if vary_noise else stacked,
                    {(repeat, seed): r.data.metrics["final_test_acc"]
                     for repeat, seed, r in members}, curves, dataset=dataset,
                    precision=precision)
    tunes: dict[str, object] = {}
    runs.selections = [_selection(client, parent, tunes) for _, parent, _, _ in chosen]
    with tempfile.TemporaryDirectory() as tmp:
        counts = []
        for _, _, r in members:
            path = client.download_artifacts(r.info.run_id, "epsilon_distributions.npz", tmp)
            with np.load(path, allow_pickle=False) as npz:
                counts.append(npz["eps_counts"])
                runs.eps_edges = npz["eps_edges"]
        runs.eps_counts = np.sum(counts, axis=0)
    return runs


def _selection(client, run, tunes: dict[str, object]) -> Selection:
    """``run``'s :class:`Selection`, its tune run read once into ``tunes``."""
    params = run.data.params
    epochs, tune_id = _integer(params.get("epochs")), params.get("tune_run_id", "")
    if not tune_id:
        return Selection(epochs, params.get("params_source", ""))
    if tune_id not in tunes:
        tunes[tune_id] = client.get_run(tune_id)
    tune = tunes[tune_id].data
    fraction = tune.params.get("val_fraction")
    return Selection(epochs, params.get("params_source", ""),
                     _integer(tune.params.get("n_trials")),
                     float(fraction) if fraction is not None else None,
                     tune.tags.get(VAL_LABELS))


def _integer(value: str | None) -> int | None:
    return int(value) if value is not None else None
