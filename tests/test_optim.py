import pytest
import torch

from birdcls.optim import NesterovSGD, nesterov_sgd


def _quadratic_steps(make_opt, steps=25):
    torch.manual_seed(0)
    a, b = torch.randn(5, requires_grad=True), torch.randn(3, requires_grad=True)
    opt = make_opt([a, b])
    for _ in range(steps):
        ((a - 1) ** 2 * torch.arange(5)).sum().add((b + 2).pow(2).sum()).backward()
        opt.step()
        opt.zero_grad()
    return torch.cat([a.detach(), b.detach()])


def test_nesterov_matches_pytorchs_sgd_with_per_group_rates():
    def ours(params):
        return nesterov_sgd([[params[0]], [params[1]]], lr=[0.05, 0.2], mom=0.85)

    def pytorch(params):
        return torch.optim.SGD([{"params": [params[0]], "lr": 0.05}, {"params": [params[1]], "lr": 0.2}],
                               momentum=0.85, nesterov=True)

    heavy_ball = _quadratic_steps(lambda p: torch.optim.SGD([{"params": [p[0]], "lr": 0.05},
                                                             {"params": [p[1]], "lr": 0.2}], momentum=0.85))
    expected = _quadratic_steps(pytorch)
    torch.testing.assert_close(_quadratic_steps(ours), expected, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(heavy_ball, expected, atol=1e-3)  # the two momentum kinds do differ here


def test_nesterov_decay_is_decoupled():
    p = torch.nn.Parameter(torch.full((4,), 2.0))
    opt = nesterov_sgd([p], lr=0.5, mom=0.9, wd=0.1)
    (p * 0).sum().backward()  # zero gradient: only the decay moves the weights
    opt.step()
    assert p.detach() == pytest.approx(torch.full((4,), 2.0 * (1 - 0.5 * 0.1)))


def test_nesterov_does_per_group_what_fastais_steppers_do_per_parameter():
    """The foreach step against fastai's own steppers run one parameter at a time: per-group lr and wd, a
    parameter excluded from decay (``do_wd``, as fastai marks BatchNorm and bias parameters), and one without a
    gradient (frozen, or the whitening bias once dropped), which must not move at all."""
    from fastai.optimizer import Optimizer, average_grad, weight_decay

    def nesterov_step(p, lr, mom, grad_avg, **kwargs):
        p.data.add_(p.grad.data, alpha=-lr).add_(grad_avg, alpha=-lr * mom)

    def run(make):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(3, 4)) for _ in range(4)]
        opt = make([[ps[0], ps[1]], [ps[2], ps[3]]])
        opt.state[ps[1]]["do_wd"] = False
        for step in range(6):
            loss = sum((p * torch.linspace(-1, 1, 4)).pow(2).sum() * (i + 1) for i, p in enumerate(ps[:3]))
            loss.backward()
            opt.set_hyper("lr", [0.1 / (step + 1), 0.3])
            opt.step()
            opt.zero_grad()
        return ps

    kw = {"lr": [0.1, 0.3], "mom": 0.85, "wd": [0.05, 0.2]}
    ours = run(lambda groups: nesterov_sgd(groups, **kw))
    theirs = run(lambda groups: Optimizer(groups, [weight_decay, average_grad, nesterov_step], **kw))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=1e-6)
    torch.manual_seed(0)
    untouched = [torch.randn(3, 4) for _ in range(4)][3]
    assert torch.equal(ours[3].detach(), untouched)  # no gradient: no decay, no momentum step
    assert isinstance(nesterov_sgd([ours[0]], lr=0.1), NesterovSGD)
    assert all(p.grad is None for p in ours)  # zero_grad drops them, as PyTorch's optimizers do
