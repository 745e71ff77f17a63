"""A deliberately wrong mode, for ``lgals check-mode`` to catch: Poly-1 (Leng et al. 2022),
``CE + poly_eps (1 - p_y)``, whose gradient is ``(1 + poly_eps p_y) g``, with a closed form
that forgets the ``p_y`` (``(1 + poly_eps) g``): right at p_y = 1, wrong everywhere else."""

from lgals.plugin import Hyperparameter, Loss, Mode


def poly1(logits, labels, poly_eps):
    log_p = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return -log_p + poly_eps * (1.0 - log_p.exp())


def wrong_closed_form(step, hp):
    p_y = step.observed(step.probs)
    values = -step.observed(step.log_probs) + hp["poly_eps"] * (1.0 - p_y)
    return Loss(values, (1.0 + hp["poly_eps"]).unsqueeze(-1) * step.gradients)


MODES = {"wrong_poly1": Mode(poly1, {"poly_eps": Hyperparameter(1.0, -1.0, search=(-1.0, 5.0))},
                             "Poly-1 (wrong gradient)", closed_form=wrong_closed_form)}
