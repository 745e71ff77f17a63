"""lgals: Logit-Gradient Alignment Label Smoothing put to an honest, tracked test.

Layers, read top to bottom: ``data`` -> ``losses`` -> ``model``/``train`` (the engine) ->
``tracking`` (MLflow) -> ``tuning`` / ``evaluation`` -> ``report`` -> ``pipeline`` -> ``cli``.
"""

from importlib.metadata import version

__version__ = version("lgals")
