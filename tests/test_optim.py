import pytest
import torch

from birdcls.optim import nesterov_sgd


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
