"""Optimizers fastai lacks, built from fastai's own stepper functions so that they keep its per-group
hyper-parameters, schedules and ``do_wd`` flags.

- :func:`nesterov_sgd`: SGD with Nesterov momentum (the CIFAR-10 speed runs use it; fastai's ``SGD`` is
  heavy-ball only). The step looks ahead along the momentum: ``p -= lr * (grad + mom * buf)`` after
  ``buf = mom * buf + grad``, PyTorch's formulation.
"""

from __future__ import annotations

from fastai.optimizer import Optimizer, average_grad, weight_decay

__all__ = ["nesterov_sgd", "nesterov_step"]


def nesterov_step(p, lr, mom, grad_avg, **kwargs) -> None:
    """Nesterov momentum step: the gradient plus the momentum buffer scaled once more by ``mom``."""
    p.data.add_(p.grad.data, alpha=-lr).add_(grad_avg, alpha=-lr * mom)


def nesterov_sgd(params, lr, mom: float = 0.9, wd: float = 0.0) -> Optimizer:
    """SGD with Nesterov momentum and decoupled weight decay, as a fastai ``Optimizer``."""
    return Optimizer(params, [weight_decay, average_grad, nesterov_step], lr=lr, mom=mom, wd=wd)
