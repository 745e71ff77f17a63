"""The final evaluation: each mode's tuned params, several seeds, the full noisy training set.

The validation split existed only for tuning: evaluation trains on all the noisy training rows
(the same noise draw, since noise is drawn before any split) and reads the test set once per
epoch for the learning curves; ``final_test_acc`` is the last epoch's, never the best.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from lgals.data import NoiseRecipe, load_dataset
from lgals.documents import read_document
from lgals.errors import BadSetting
from lgals.losses import MODES
from lgals.model import Compute
from lgals.schema import (
    LATEST_FIRST,
    MODE,
    NOTE,
    PARAMS_SOURCE,
    STAGE,
    STUDY,
    VAL_LABELS,
    Stage,
    repeat_of,
    runs_filter,
)
from lgals.tracking.claims import Work
from lgals.tracking.runs import group_run, in_run, mode_tags, run_name, source_info
from lgals.tracking.seeds import tracked_train
from lgals.tracking.store import mlflow_client
from lgals.train import MemberResult, TrainConfig


def file_params(mode: str) -> tuple[str, ...]:
    """What a --params-from file may set for ``mode``; ``epochs`` (early_stop's tuned epoch
    count) overrides the command's --epochs for that mode."""
    return (*MODES[mode].reads, "batch_size", "epochs")


@dataclass
class ParamsSource:
    """Where a mode's hyperparameters came from (logged on the evaluate run)."""

    params: dict
    source: str  # "tune", "file:<path>" or "defaults"
    tune_run_id: str = ""
    tune_study: str = ""

    @property
    def where(self) -> str:
        """The source as an error names it."""
        if self.source.startswith("file:"):
            return f"--params-from {self.source[len('file:'):]}"
        return f"tune run {self.tune_run_id}" if self.source == "tune" else self.source


def latest_tune(experiment_id: str, mode: str, repeat: int = 0) -> ParamsSource:
    """Best params of the mode's latest finished tune of repetition ``repeat`` (noisy
    validation labels, not oracle)."""
    query = runs_filter(Stage.TUNE, tags={MODE: mode, VAL_LABELS: "noisy"}, status="FINISHED")
    runs = mlflow_client().search_runs(
        [experiment_id], query, order_by=list(LATEST_FIRST), max_results=200)
    for run in (r for r in runs if repeat_of(r) == repeat):
        best = {k[len("best."):]: v for k, v in run.data.params.items() if k.startswith("best.")}
        best.pop("trial", None)  # best.epochs stays: early_stop's chosen epoch count
        if best:
            best["batch_size"] = run.data.params.get("batch_size", TrainConfig.batch_size)
            return ParamsSource(best, "tune", run.info.run_id,
                                run.data.tags.get(STUDY, ""))
    where = f" repetition {repeat}" if repeat else ""
    raise BadSetting(f"no finished tune with best params for mode {mode!r}{where} in "
                     f"experiment {experiment_id}: run `lgals tune --mode {mode}` first, "
                     "name the experiment that holds it with --tune-experiment, or pass "
                     "--params-from FILE or defaults")


def params_from_file(path: str, mode: str) -> ParamsSource:
    """``{mode: {lr: ..., ...}}`` from a JSON or YAML file."""
    kind = "YAML" if path.endswith((".yaml", ".yml")) else "JSON"
    table = read_document(path, f"--params-from {path}", kind,
                          hint="; give `tune`, `defaults` or a JSON/YAML file")
    if not isinstance(table, dict) or not isinstance(table.get(mode), dict):
        raise BadSetting(f"--params-from {path}: no entry for mode {mode!r} "
                         "(expected {mode: {param: value}})")
    unknown = set(table[mode]) - set(file_params(mode))
    if unknown:
        raise BadSetting(f"--params-from {path}: unknown hyperparameters {sorted(unknown)} "
                         f"for {mode!r} (allowed: {', '.join(file_params(mode))})")
    return ParamsSource(table[mode], f"file:{path}")


def resolve_params(params_from: str, experiment_id: str, mode: str,
                   repeat: int = 0) -> ParamsSource:
    """The mode's params from their source, held to the command line's rules."""
    if params_from == "tune":
        source = latest_tune(experiment_id, mode, repeat)
    elif params_from == "defaults":
        source = ParamsSource({}, "defaults")
    else:
        source = params_from_file(params_from, mode)
    make_config(mode, TrainConfig.epochs, source)
    return source


def make_config(mode: str, epochs: int, source: ParamsSource) -> TrainConfig:
    """A training config from a source's params (numbers or their strings, as MLflow keeps
    them); a value of the wrong type or out of range is one line naming source, mode and
    parameter."""
    integers = {f.name for f in fields(TrainConfig) if f.type in ("int", int)}
    values = {}
    for name, value in source.params.items():
        number = _number(value)
        if number is None or (name in integers and not number.is_integer()):
            kind = "an integer" if name in integers else "a number"
            raise BadSetting(f"{source.where}: {mode} {name} = {value!r} is not {kind}")
        values[name] = int(number) if name in integers else number
    try:
        return TrainConfig.of(mode, **{"epochs": epochs, **values})
    except ValueError as error:
        raise BadSetting(f"{source.where}: {mode} {error}") from None


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def evaluate_mode(mode: str, source: ParamsSource, experiment_id: str, seeds: list[int],
                  epochs: int, noise: NoiseRecipe, vary_noise: bool,
                  parent_run_id: str | None = None, progress: bool = True,
                  compute: Compute = Compute()) -> tuple[str, list[MemberResult]]:
    """Train ``seeds`` with the mode's params under one evaluate run; return its id, results."""
    config = make_config(mode, epochs, source)
    tags = {**mode_tags(mode), STAGE: Stage.EVALUATE, PARAMS_SOURCE: source.source}
    params = {**config.mode_params(), **noise.params(), "seeds": ",".join(map(str, seeds)),
              "vary_noise": vary_noise, "params_source": source.source,
              "tune_run_id": source.tune_run_id, "tune_study": source.tune_study,
              **compute.params(), **source_info()}
    tags[NOTE] = (f"Final evaluation of {MODES[mode].label}: seeds "
                  f"{', '.join(map(str, seeds))} x {epochs} epochs on the full noisy "
                  f"training set ({noise.setting}, noise seed {noise.noise_seed}), one "
                  f"run each below; params from {source.where}"
                  + (f" (study `{source.tune_study}`)" if source.tune_study else "")
                  + ".")
    with in_run(experiment_id, run_name(f"evaluate-{mode}"), tags, params,
                parent_run_id) as run_id:
        # Shared noise: one stacked computation. Redrawn noise: each seed has its own data.
        groups = ([[s] for s in seeds] if vary_noise else [seeds])
        results: list[MemberResult] = []
        for group in groups:
            recipe = (replace(noise, noise_seed=noise.noise_seed + group[0]) if vary_noise
                      else noise)
            data = load_dataset(recipe)
            done, _, _ = tracked_train(
                data, [config] * len(group), group, experiment_id=experiment_id,
                stage=Stage.EVALUATE, parent_run_id=run_id, progress=progress, compute=compute)
            results += done
    return run_id, results


def evaluation_work(experiment_id: str, mode: str, source: ParamsSource, seeds: list[int],
                    epochs: int, noise: NoiseRecipe, repeat: int, precision: str = "fp32"
                    ) -> Work:
    """The evaluation of exactly this work (params, seeds, dataset and noise draw,
    repetition, precision): a finished one is reused instead of trained again, one under way
    in another process waited for (:mod:`lgals.tracking.claims`)."""
    expected = {**make_config(mode, epochs, source).mode_params(),
                "seeds": ",".join(map(str, seeds)), "vary_noise": False}

    def accepts(run) -> bool:
        return (repeat_of(run) == repeat
                and run.data.params.get("precision", "fp32") == precision  # before: fp32
                # read back as a recipe: a run from before datasets had names was mnist1d's
                and NoiseRecipe.from_params(run.data.params) == noise)

    return Work(experiment_id, Stage.EVALUATE, mode,
                {key: str(value) for key, value in expected.items()}, accepts,
                {"repeat": str(repeat), "precision": precision,
                 **{key: str(value) for key, value in noise.params().items()}})


def describe_results(mode: str, results: list[MemberResult]) -> str:
    """One line: the mode's mean final test accuracy and each seed's."""
    accs = [100 * r.final_test_acc for r in results if r.final_test_acc is not None]
    mean = sum(accs) / len(accs) if accs else float("nan")
    return f"{MODES[mode].label}: final test accuracy {mean:.2f}% (seeds: " + ", ".join(
        f"{a:.1f}" for a in accs) + ")"


def tune_source(summary: dict, batch_size: int) -> ParamsSource:
    """The params a tune just found (what ``lgals reproduce`` hands to evaluation)."""
    return ParamsSource({**summary["best_params"], "batch_size": batch_size}, "tune",
                        summary["run_id"], summary["study_name"])


def evaluate_modes(sources: dict[str, ParamsSource], experiment_id: str, seeds: list[int],
                   epochs: int, noise: NoiseRecipe, vary_noise: bool = False,
                   parent_run_id: str | None = None, compute: Compute = Compute()
                   ) -> dict[str, tuple[str, list[MemberResult]]]:
    """Every mode's evaluation (its evaluate run's id, its results), under one umbrella run
    when several."""
    group = {"seeds": ",".join(map(str, seeds)), "epochs": epochs, **noise.params()}
    results = {}
    with group_run(experiment_id, Stage.EVALUATE, list(sources), group,
                   parent_run_id) as parent:
        for mode, source in sources.items():
            results[mode] = evaluate_mode(mode, source, experiment_id, seeds, epochs, noise,
                                          vary_noise, parent_run_id=parent, compute=compute)
    return results
