"""The results report, rebuilt from MLflow alone: the note's claims with a verdict each,
tables, statistics, plots, cost; and the noise sweep's report. It reads MLflow, computes,
renders and writes; it never orchestrates.

Runs come as repetitions (each its own noise draw, split and tuning) x seeds. Statistics are
stated from our numbers: mean ± sample std, a t-based 95% interval over the independent
units, and, on the runs two modes share, the paired differences' hierarchical bootstrap
interval, P(A > B) and a paired test (over seeds with one repetition, over repetition means
with more), Holm-adjusted over the report; Welch's t-test beside it. The claim's numbers
(``lgals.claim``) stand beside ours, unchanged, for comparison only.

Modules, each importing only those above it: ``collect`` (the runs, from MLflow),
``analysis`` (comparisons, the report, the claim card's verdicts), ``render`` (markdown,
CSV), ``publish`` (the files and the report run), ``sweep`` (the noise sweep's report).
"""
