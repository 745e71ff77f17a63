"""Active Passive Loss NCE+RCE (Ma et al., ICML 2020, "Normalized Loss Functions for Deep
Learning with Noisy Labels") as an lgals mode: ``alpha * NCE + beta * RCE``, where the
normalised cross-entropy ``NCE = log p_y / sum_k log p_k`` is the active term and the reverse
cross-entropy ``RCE = -A (1 - p_y)`` with ``log 0`` clamped to ``A = -4`` the passive one.
lgals differentiates it by autograd; there is no closed form here."""

import torch

from lgals.plugin import Hyperparameter, Mode


def nce_rce(logits, labels, apl_alpha, apl_beta):
    log_p = torch.log_softmax(logits, dim=-1)
    log_p_y = log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    nce = log_p_y / log_p.sum(dim=-1)
    rce = 4.0 * (1.0 - log_p_y.exp())
    return apl_alpha * nce + apl_beta * rce


MODES = {
    "nce_rce": Mode(nce_rce, label="NCE+RCE", hyperparameters={
        "apl_alpha": Hyperparameter(1.0, 0.0, search=(0.1, 10.0), log=True,
                                    help="nce_rce weight of the normalised cross-entropy."),
        "apl_beta": Hyperparameter(1.0, 0.0, search=(0.1, 10.0), log=True,
                                   help="nce_rce weight of the reverse cross-entropy.")}),
}
