"""lgals' public API for a method (or a dataset) that lives in your own package.

Import from here only; everything else in lgals is private and may change. A mode is a
per-sample loss ``loss(logits, labels, **hyperparameters) -> values``: ``logits [..., B, K]``,
``labels [..., B]``, each hyperparameter a tensor ``[..., 1]`` (one value per stacked member),
``values [..., B]``. The engine differentiates it with respect to the logits by autograd,
stacked like a built-in; a ``closed_form(step, hyperparameters) -> Loss`` is the optional fast
path. Register a mapping ``{name: Mode(...)}`` under the ``lgals.modes`` entry-point group of
your ``pyproject.toml``; ``lgals modes`` lists it and ``lgals check-mode NAME`` (or
:func:`assert_mode_passes` in your tests) holds it to the checks the built-ins pass. See the
README's "Bring your own method" and ``examples/lgals-apl``.

A dataset is a :class:`Dataset`, registered as a mapping ``{name: Dataset(...)}`` under
``lgals.datasets``: ``load(**generation)`` returns its clean train and test arrays.
"""

from lgals.checks import Check, assert_mode_passes, check_mode
from lgals.data import Dataset
from lgals.losses import Hyperparameter, Loss, Mode, Step

__all__ = ["Check", "Dataset", "Hyperparameter", "Loss", "Mode", "Step", "assert_mode_passes",
           "check_mode"]
