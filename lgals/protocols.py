"""The study's protocols as data: what one study end to end tunes, evaluates and repeats.

:data:`CLAIM` is the note's own protocol (``lgals.claim`` states the claim that goes with it);
``pipeline`` runs any of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from lgals.data import DEFAULT_DATASET, NoiseRecipe
from lgals.losses import SUITES
from lgals.train import TrainConfig
from lgals.tuning import DEFAULT_BATCH, TuneSettings


@dataclass(frozen=True)
class Protocol:
    """One study end to end: tuning budget, evaluation seeds, repetitions, the noise recipe.

    Each of the ``repeats`` repetitions has its own noise draw, validation split and sampler
    seed, tunes every mode from scratch, and evaluates each with seeds 0..``seeds``-1 on its
    noise draw; modes share a repetition's draw and seeds, so their differences are paired.
    ``experiment`` is the default MLflow experiment and the prefix of the Optuna studies.

    ``diagnose``: whether it also runs ``lgals diagnose`` (one seed of repetition 0's tuned
    LGALS) before its report, so that its card measures the alignment claim. The robust
    protocol does: its card is the complete answer, and one seed's training is a small part
    of 5 x 3 x 10 seeds'. The note's single run does not, as the note did not; nor does the
    quick one, a first look it would lengthen by a quarter, and whose runs the UI tests and
    run snapshots compare.
    """

    name: str
    n_trials: int
    epochs: int
    seeds: int
    repeats: int = 1
    batch: int = DEFAULT_BATCH  # trials per study trained together in a tuning round
    diagnose: bool = False
    noise: NoiseRecipe = NoiseRecipe(val_fraction=0.1)  # tuning's; evaluation's has no split
    experiment: str = "lgals"
    suite: str = "paper"  # which modes are tuned, evaluated and reported (losses.SUITES) ...
    modes: tuple[str, ...] = ()  # ... unless these name them (a claim's modes)
    precision: str = "fp32"  # of the engine's matrix products (lgals.model.Compute)

    def run_modes(self) -> tuple[str, ...]:
        """The modes it tunes, evaluates and reports: its own, else its suite's."""
        return self.modes or SUITES[self.suite]

    def params(self) -> dict:
        """The protocol verbatim as run params (the modes it runs, comma-separated), its
        noise recipe as its own params."""
        return {**{k: v for k, v in asdict(self).items() if k not in ("name", "noise")},
                "modes": ",".join(self.run_modes()), "protocol": self.name,
                **self.noise.params()}

    def study_prefix(self) -> str:
        """The Optuna studies' prefix: the experiment, the dataset unless it is mnist1d (whose
        studies keep the names they had before datasets), the precision unless it is fp32,
        and the noise setting unless it is
        the note's (so a sweep's note setting resumes a plain ``reproduce``'s studies)."""
        dataset = self.noise.dataset
        prefix = self.experiment if dataset == DEFAULT_DATASET else f"{self.experiment}-{dataset}"
        if self.precision != "fp32":
            prefix = f"{prefix}-{self.precision}"
        if self.noise.same_setting(replace(CLAIM.noise, dataset=dataset)):
            return prefix
        return f"{prefix}-{self.noise.setting}"

    def tune_settings(self, repeat: int) -> list[TuneSettings]:
        """Repetition ``repeat``'s studies, one per mode it runs."""
        return [TuneSettings(mode=mode, n_trials=self.n_trials, epochs=self.epochs,
                             noise=self.noise, precision=self.precision,
                             study_name=f"{self.study_prefix()}-{mode}"
                             ).repeated(repeat) for mode in self.run_modes()]


# The note's protocol: one tuning run of 20 trials per mode, 100 epochs, 5 evaluation seeds.
CLAIM = Protocol("claim", n_trials=20, epochs=TrainConfig.epochs, seeds=5)
# Five independent repetitions of it, ten seeds each (Bouthillier et al. 2021), and the
# diagnostic.
ROBUST = replace(CLAIM, name="robust", seeds=10, repeats=5, diagnose=True)
# A miniature of it for a first look (and the end-to-end tests).
QUICK = Protocol("quick", n_trials=2, epochs=3, seeds=2, experiment="lgals-quick")
PROTOCOLS = {protocol.name: protocol for protocol in (CLAIM, ROBUST, QUICK)}
