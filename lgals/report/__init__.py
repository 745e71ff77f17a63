"""The results report, rebuilt from MLflow alone: a claim's claims with a verdict each,
tables, statistics, plots, cost; and the noise sweep's report. It reads MLflow, computes,
renders and writes; it never orchestrates.

Runs come as repetitions (each its own noise draw, split and tuning) x seeds. Statistics are
stated from our numbers: mean ± sample std, a t-based 95% interval over the independent
units, and, on the runs two modes share, the paired differences' t interval, P(A > B) and a
paired test (over seeds with one repetition, over repetition means with more: the interval
is the test's), Holm-adjusted over the report; Welch's t-test beside it. The claim's numbers
(a :class:`~lgals.claim.Claim`, the note's by default) stand beside ours, unchanged, for
comparison only.

Modules, each importing only those above it: ``collect`` (the runs, from MLflow),
``analysis`` (comparisons, the report, the claim card's verdicts), ``render`` (markdown,
CSV), ``publish`` (the files and the report run), ``sweep`` (the noise sweep's report).
"""
