"""The note's claim under test (docs/claim.md), in one place: the accuracies it reports, the
protocol it measured them with, the comparisons it asserts, the correlation it quotes, and the
thresholds at which the report calls each of its claims supported.

These are the note's numbers, copied, never measured: the report states ours beside them.
"""

from __future__ import annotations

from lgals.protocols import CLAIM

# % test accuracy per mode, (mean, std) over the note's 5 seeds.
ACCURACY = {"baseline": (53.12, 0.54), "fixed_ls": (55.33, 0.65), "lgals": (57.15, 1.17)}
# The protocol those numbers come from: one repetition of 5 seeds (protocols.CLAIM).
PROTOCOL = CLAIM
# The differences it asserts, (A, B) for A − B > 0: LGALS > FixedLS > Baseline.
COMPARISONS = [("lgals", "baseline"), ("lgals", "fixed_ls"), ("fixed_ls", "baseline")]
# Pearson's r it reports between the logit-gradient and the weight-gradient alignment.
CORRELATION = 0.75

# What each claim of the card must reach to be supported.
AUROC_CHANCE = 0.5  # claim 2: 1 − s_i must find flipped labels better than chance ...
EPS_GAP_MIN = 0.0  # ... and LGALS must give them more ε than clean samples
ALIGNMENT_R_MIN = 0.5  # claim 3: Pearson's r every checkpoint must reach
COST_RATIO_MAX = 1.10  # claim 4: LGALS's time per epoch over Baseline's, "negligible"
