"""Optimizers fastai lacks, as fastai ``Optimizer`` subclasses, so that they keep its per-group
hyper-parameters, schedules and ``do_wd`` flags.

- :func:`nesterov_sgd`: SGD with Nesterov momentum and decoupled weight decay (the CIFAR-10 speed runs use
  it; fastai's ``SGD`` is heavy-ball only). The step looks ahead along the momentum:
  ``p -= lr * (grad + mom * buf)`` after ``buf = mom * buf + grad``, PyTorch's formulation. It does what
  fastai's steppers ``weight_decay``, ``average_grad`` and a Nesterov step would, but a whole parameter
  group per call (``torch._foreach_*``): fastai's ``Optimizer.step`` runs each stepper on each parameter
  from Python, a few thousand small kernel launches per step that kept a GPU waiting.
"""

from __future__ import annotations

import torch
from fastai.optimizer import Optimizer

__all__ = ["NesterovSGD", "nesterov_sgd"]


class NesterovSGD(Optimizer):
    """fastai ``Optimizer`` whose step updates each parameter group with a handful of foreach kernels."""

    @torch.no_grad()
    def step(self, closure=None) -> None:
        if closure is not None:
            raise NotImplementedError("fastai optimizers don't support closures")
        for params, hyper in zip(self.param_lists, self.hypers):
            ps = [p for p in params if p.grad is not None]
            if not ps:
                continue
            lr, mom, wd = hyper["lr"], hyper["mom"], hyper["wd"]
            decayed = [p for p in ps if self.state[p].get("do_wd", True)]
            if wd != 0 and decayed:
                torch._foreach_mul_(decayed, 1 - lr * wd)
            grads = [p.grad for p in ps]
            bufs = [self._momentum_buffer(p) for p in ps]
            torch._foreach_mul_(bufs, mom)
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(ps, grads, alpha=-lr)
            torch._foreach_add_(ps, bufs, alpha=-lr * mom)

    def zero_grad(self) -> None:
        """Drop the gradients (backward makes new ones), as PyTorch's optimizers do by default: fastai's
        ``zero_grad`` zeroes them one parameter at a time from Python, two kernel launches each a step."""
        for params in self.param_lists:
            for p in params:
                p.grad = None

    def _momentum_buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "grad_avg" not in state:
            state["grad_avg"] = torch.zeros_like(p)
        return state["grad_avg"]


def nesterov_sgd(params, lr, mom: float = 0.9, wd: float = 0.0) -> Optimizer:
    """SGD with Nesterov momentum and decoupled weight decay, as a fastai ``Optimizer``."""
    return NesterovSGD(params, [], lr=lr, mom=mom, wd=wd)
