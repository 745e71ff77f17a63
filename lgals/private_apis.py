"""Every private API of another package that lgals relies on, named once, here.

A private API is one its package does not promise to keep: a name with a leading underscore,
an undocumented module, a duck-typed call into its internals. lgals uses each where no public
API does the job (``why``). ``tests/unit/test_private_apis.py`` checks every entry against the
installed package (present, and taking the parameters lgals passes), so an upgrade that
removes or changes one fails there, naming it; ``pyproject.toml`` caps each package below the
next release that could change them, and ``docs/dependencies.md`` says how far each was tested.

Nothing imports this module at run time: the call sites use the APIs directly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateApi:
    """``path``: the dotted name, a module then attributes; an attribute that only instances
    have is ``instance=True`` (checked on a real one). ``parameters``: the names lgals passes
    (by keyword, or the leading positional ones), checked against its signature."""

    path: str
    package: str  # the distribution that provides it; "python" for the standard library
    used_in: str
    why: str
    parameters: tuple[str, ...] = ()
    instance: bool = False


PRIVATE_APIS: tuple[PrivateApi, ...] = (
    # torch
    PrivateApi("torch._fused_adamw_", "torch", "lgals.optim.StackedAdamW.step",
               "AdamW over a whole [S, P] buffer in one pass (on CPU from torch 2.4), with a "
               "float lr and per-call weight decay; torch.optim.AdamW would step one "
               "parameter tensor per member",
               ("self", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps",
                "lr", "beta1", "beta2", "weight_decay", "eps", "amsgrad", "maximize")),
    PrivateApi("torch.cpu._is_avx512_bf16_supported", "torch", "lgals.model.bf16_supported",
               "whether the CPU multiplies bfloat16 in hardware (torch 2.5 on); no public query"),
    PrivateApi("torch.cpu._is_amx_tile_supported", "torch", "lgals.model.bf16_supported",
               "whether the CPU has AMX tiles (torch 2.5 on); no public query"),
    PrivateApi("torch.ops.aten.threshold_backward", "torch", "lgals.model.StackedMLP.backward",
               "ReLU's backward as one ATen kernel, no autograd graph",
               ("grad_output", "self", "threshold")),
    # optuna: the RDB storage, subclassed and wrapped (lgals.storage)
    PrivateApi("optuna.storages.RDBStorage._get_stale_trial_ids", "optuna",
               "lgals.storage._HeartbeatStorage, _ServerStorage",
               "overridden: a trial that never beat goes stale too; none while a PostgreSQL "
               "server has just come back", ("study_id",)),
    PrivateApi("optuna.storages._rdb.models.TrialModel._datetime_start_utc", "optuna",
               "lgals.storage._HeartbeatStorage._get_stale_trial_ids",
               "a trial's start, naive UTC (Optuna 5.0 on), to find those that never beat"),
    PrivateApi("optuna.storages._rdb.models.TrialModel.heartbeats", "optuna",
               "lgals.storage._HeartbeatStorage._get_stale_trial_ids",
               "the trial's heartbeat rows, to find those that never beat"),
    PrivateApi("optuna.storages.RDBStorage._create_new_trial", "optuna",
               "lgals.storage._SERVER_CALLS",
               "retried while a PostgreSQL server restarts, as every call that reaches the "
               "database is (tests/unit/test_private_apis.py checks the list is complete)"),
    PrivateApi("optuna.storages.RDBStorage._set_trial_param", "optuna",
               "lgals.storage._SERVER_CALLS", "retried, as _create_new_trial"),
    PrivateApi("optuna.storages.RDBStorage._get_trials", "optuna", "lgals.storage._SERVER_CALLS",
               "retried, as _create_new_trial (Optuna's cache reads trials through it)"),
    PrivateApi("optuna.storages.RDBStorage._get_best_trial_id", "optuna",
               "lgals.storage._SERVER_CALLS", "retried, as _create_new_trial"),
    PrivateApi("optuna.storages._cached_storage._CachedStorage._backend", "optuna",
               "lgals.storage.asking",
               "the RDB storage under Optuna's cache: its engine takes the advisory lock",
               instance=True),
    PrivateApi("optuna.study.Study._storage", "optuna", "lgals.tuning, lgals.storage.asking",
               "ask/tell without study.optimize: lgals writes the heartbeats and per-epoch "
               "values itself (lgals.storage.TrialRecorder)", instance=True),
    PrivateApi("optuna.study.Study._study_id", "optuna", "lgals.storage.asking",
               "the key of the study's advisory lock", instance=True),
    PrivateApi("optuna.trial.Trial._trial_id", "optuna", "lgals.tuning",
               "the storage's key for a trial's heartbeats and values", instance=True),
    PrivateApi("optuna.pruners.MedianPruner.prune", "optuna",
               "lgals.tuning._should_prune (_CompletedTrials)",
               "called with a stand-in study holding a round's snapshot of complete trials: "
               "relies on the pruner reading only study.direction and "
               "study.get_trials(deepcopy=False, states=(COMPLETE,))", ("study", "trial")),
    # mlflow
    PrivateApi("mlflow.utils.file_utils.get_local_path_or_none", "mlflow",
               "lgals.tracking.writer.local_artifact_dir",
               "the directory behind a local artifact URI (a path or file:), or None",
               ("path_or_uri",)),
    PrivateApi("mlflow.data.dataset.Dataset._to_mlflow_entity", "mlflow",
               "lgals.tracking.seeds.log_dataset",
               "the entity MlflowClient.log_inputs takes (mlflow.log_input makes it itself, "
               "but for the active run only)"),
    PrivateApi("mlflow.data.code_dataset_source.CodeDatasetSource", "mlflow",
               "lgals.tracking.seeds.log_dataset",
               "a dataset source that is a mapping (the data recipe), not a file or URL",
               ("tags",)),
    PrivateApi("mlflow.utils.validation._validate_model_name", "mlflow",
               "lgals.tracking.register.name_problem",
               "MLflow's rule for a registered model's name, checked before anything trains",
               ("model_name",)),
    PrivateApi("mlflow.store.artifact.utils.models._parse_model_uri", "mlflow",
               "lgals.tracking.register.name_problem",
               "how MLflow reads models:/NAME@ALIAS back, so a name it would misread is refused",
               ("uri",)),
    PrivateApi("mlflow.utils.request_utils._get_request_session", "mlflow",
               "lgals.tracking.deadline.install",
               "where MLflow makes its HTTP sessions (retry policy, keepalives): wrapped so "
               "that each session's adapter retries within lgals' one deadline for a server "
               "that stopped answering; MLflow's own retries count per request"),
    PrivateApi("mlflow.store.db.utils", "mlflow", "lgals.tracking.store.connect",
               "its logger's name: the tracebacks it logs for a full disk are filtered out"),
    # the standard library
    PrivateApi("atexit._run_exitfuncs", "python", "lgals.cli.run",
               "the exit handlers, then os._exit: without the interpreter's teardown of "
               "torch's, MLflow's and SQLAlchemy's modules"),
)
