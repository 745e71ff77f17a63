"""The do-nothing stand-in for tracking: a command run with ``--no-tracking`` trains through
the same call as a tracked one (:class:`lgals.tracking.seeds.Tracked`), and imports neither
MLflow nor the rest of the tracking package."""

from __future__ import annotations

from collections.abc import Sequence

from lgals.data import NoisyDataset
from lgals.interrupts import raise_if_interrupted
from lgals.model import Compute
from lgals.schema import Stage
from lgals.train import MemberResult, TrainConfig, train


class Untracked:
    """Training with no runs: the results alone, no run ids, no parent."""

    def train(self, data: NoisyDataset, configs: Sequence[TrainConfig], seeds: Sequence[int],
              *, stage: Stage, progress: bool = False, compute: Compute = Compute(),
              ) -> tuple[list[MemberResult], list[str], str | None]:
        results = train(data, list(configs), list(seeds), callback=raise_if_interrupted,
                        progress=progress, compute=compute)
        return results, [], None
