"""The reports' small CNNs, exactly as their architecture tables read.

- ``cifar_large`` (CIFAR-10, 3x32x32, 5,655,498 parameters): 8 conv 3x3 with ReLU+BN, 4 max-pools
  3x3/stride 2/pad 1, FC 128-256-512-1024 with ReLU+BN, 10 out.
- ``cifar_small`` (CIFAR-10, 3x32x32, 1,816,714): 4 conv 64/128/256/512 with ReLU+BN and a max-pool
  each, FC 128 with ReLU+BN, 10 out.
- ``fmnist_cnn`` (Fashion-MNIST, 1x28x28, 1,475,338): conv 32 and 64 (3x3, BN, ReLU, max-pool 2),
  FC 600 with dropout 0.25, 120, 10 out.
- ``fmnist_mlp512`` / ``fmnist_mlp2048`` (1x28x28, 407,050 / 1,628,170): one hidden layer with ReLU.
- ``dvc_cnn`` (dogs vs. cats, 3x256x256, 1,571,586): five Conv-BN-ReLU-MaxPool blocks (32..512),
  global pool, Linear(512, 2).
- ``dvc_linear`` (3x64x64, 6,292,994): flatten, Linear(3*64*64, 512), ReLU, Linear(512, 2).
- ``dvc_resnet`` (3x256x256, 1,208,354): stem + three residual blocks (64, 128, 256), global pool,
  Linear(256, 2).

Not from the reports: ``cifar_speedrun`` (3x32x32), the shape of the public CIFAR-10 speed-run networks
(hlb-cifar10, airbench): a 2x2 convolution whose filters whiten the image patches, set once from the
training data and never trained (:class:`PatchWhitening`), then three groups of conv-pool-BN-GELU-conv-BN-GELU
(64, 256, 256 channels) with identity-initialised convolutions, a max-pool and a linear layer with its
logits scaled by 1/9.

The CIFAR-10 report's printed code shares one BatchNorm between the two convs of a stage (5,653,578
parameters), which breaks evaluation mode (one set of running statistics for two different layers);
``cifar_large`` implements the table: one BatchNorm per conv.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SMALL_MODELS", "PatchWhitening", "SmallModel", "create_small_model", "count_parameters",
           "unfitted_whitening"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _pool() -> nn.Module:
    return nn.MaxPool2d(3, stride=2, padding=1)


def _fc_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]


def cifar_large(n_out: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in ((3, 64), (64, 128), (128, 256), (256, 512)):
        layers += _conv_bn_relu(cin, cout) + _conv_bn_relu(cout, cout) + [_pool()]
    layers.append(nn.Flatten())
    for cin, cout in ((512 * 2 * 2, 128), (128, 256), (256, 512), (512, 1024)):
        layers += _fc_bn_relu(cin, cout)
    layers.append(nn.Linear(1024, n_out))
    return nn.Sequential(*layers)


def cifar_small(n_out: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in ((3, 64), (64, 128), (128, 256), (256, 512)):
        layers += _conv_bn_relu(cin, cout) + [_pool()]
    layers += [nn.Flatten(), *_fc_bn_relu(512 * 2 * 2, 128), nn.Linear(128, n_out)]
    return nn.Sequential(*layers)


def fmnist_cnn(n_out: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 28 -> 14
        nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 14 -> 12 -> 6
        nn.Flatten(), nn.Linear(64 * 6 * 6, 600), nn.Dropout(0.25), nn.Linear(600, 120), nn.Linear(120, n_out),
    )


def fmnist_mlp(hidden: int) -> Callable[[int], nn.Sequential]:
    def build(n_out: int = 10) -> nn.Sequential:
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_out))

    return build


def dvc_cnn(n_out: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in ((3, 32), (32, 64), (64, 128), (128, 256), (256, 512)):
        layers += _conv_bn_relu(cin, cout) + [nn.MaxPool2d(2)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_out)]
    return nn.Sequential(*layers)


def dvc_linear(n_out: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 512), nn.ReLU(inplace=True), nn.Linear(512, n_out))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (strided 1x1 conv + BN) shortcut, then ReLU; halves the resolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


def dvc_resnet(n_out: int = 2) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        ResidualBlock(32, 64), ResidualBlock(64, 128), ResidualBlock(128, 256),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, n_out),
    )


class PatchWhitening(nn.Module):
    """A 2x2 convolution whose filters decorrelate the input's 2x2 patches (each eigenvector of their
    covariance, scaled by 1/sqrt(eigenvalue), and its negative): the first layer the speed-run networks
    start from, because it saves the epochs a trained first layer would spend getting there.

    The filters are a buffer, set by :meth:`fit` from a batch of training images before training and
    saved with the weights; only the bias trains.
    """

    def __init__(self, in_chans: int = 3, eps: float = 5e-4):
        super().__init__()
        k = in_chans * 4
        self.eps = eps
        self.register_buffer("weight", torch.zeros(2 * k, in_chans, 2, 2))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.bias = nn.Parameter(torch.zeros(2 * k))

    @property
    def out_chans(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from ``images`` (N, C, H, W), normalised as the network will see them."""
        c = images.shape[1]
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H-1, W-1, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)
        # float64 on the CPU: a 12x12 problem, and MPS has neither float64 nor eigh
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(patches.T.cpu().double()))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.eps)[:, None]).float()
        filters = filters.reshape(-1, c, 2, 2).to(self.weight.device)
        self.weight.copy_(torch.cat([filters, -filters]))
        self.fitted.fill_(True)


def unfitted_whitening(model: nn.Module) -> list[PatchWhitening]:
    """The :class:`PatchWhitening` layers of ``model`` still waiting for :meth:`PatchWhitening.fit`."""
    return [m for m in model.modules() if isinstance(m, PatchWhitening) and not bool(m.fitted)]


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _dirac_conv(cin: int, cout: int) -> nn.Conv2d:
    """3x3 conv whose first ``cin`` filters start as the identity (the rest at PyTorch's default init)."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(cin, cout)])
    return conv


def _speedrun_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm as the speed runs set it: running statistics that follow the last few batches (a run is only
    a few hundred steps long), and a scale fixed at 1 (only the shift trains)."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


def _speedrun_group(cin: int, cout: int) -> list[nn.Module]:
    return [_dirac_conv(cin, cout), nn.MaxPool2d(2), _speedrun_norm(cout), nn.GELU(),
            _dirac_conv(cout, cout), _speedrun_norm(cout), nn.GELU()]


def cifar_speedrun(n_out: int = 10, widths: tuple[int, int, int] = (64, 256, 256)) -> nn.Sequential:
    """``widths``: the three conv groups' channels (the benchmarks' loop-overhead case narrows them)."""
    whiten = PatchWhitening(3)
    layers: list[nn.Module] = [whiten, nn.GELU()]
    for cin, cout in zip((whiten.out_chans, *widths[:-1]), widths):
        layers += _speedrun_group(cin, cout)
    layers += [nn.MaxPool2d(3), nn.Flatten(), nn.Linear(widths[-1], n_out, bias=False), _Scale(1 / 9)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class SmallModel:
    build: Callable[[int], nn.Module]
    in_chans: int
    size: int
    n_out: int
    report: str
    fixed_size: bool = True  # fully-connected layers fix the input size; global pooling does not


SMALL_MODELS: dict[str, SmallModel] = {
    "cifar_large": SmallModel(cifar_large, 3, 32, 10, "CIFAR-10 report, large network"),
    "cifar_small": SmallModel(cifar_small, 3, 32, 10, "CIFAR-10 report, small network"),
    "fmnist_cnn": SmallModel(fmnist_cnn, 1, 28, 10, "Fashion-MNIST report, CNN"),
    "fmnist_mlp512": SmallModel(fmnist_mlp(512), 1, 28, 10, "Fashion-MNIST report, MLP n=512"),
    "fmnist_mlp2048": SmallModel(fmnist_mlp(2048), 1, 28, 10, "Fashion-MNIST report, MLP n=2048"),
    "dvc_cnn": SmallModel(dvc_cnn, 3, 256, 2, "dogs-vs-cats reports, Conv-BN-ReLU-MaxPool stack", fixed_size=False),
    "dvc_linear": SmallModel(dvc_linear, 3, 64, 2, "dogs-vs-cats reports, linear+ReLU model"),
    "dvc_resnet": SmallModel(dvc_resnet, 3, 256, 2, "dogs-vs-cats reports, residual-block model", fixed_size=False),
    "cifar_speedrun": SmallModel(cifar_speedrun, 3, 32, 10, "CIFAR-10 speed-run network (whitened 2x2 patches)"),
}


def create_small_model(name: str, n_out: int | None = None) -> nn.Module:
    spec = SMALL_MODELS[name]
    return spec.build(n_out or spec.n_out)
