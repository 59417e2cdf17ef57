"""Decoding JPEG batches on the model's device (nvJPEG on a GPU; here the same code on the CPU, through
libjpeg) gives what the host path gives, file by file, turned and resized alike."""

import numpy as np
import pytest
from PIL import Image
from test_decode import mean_diff, save_tagged, upright_picture

from birdcls.data.decode import load_image
from birdcls.data.device_decode import decode_batch_on, device_decoded_batches
from birdcls.errors import BirdclsError
from birdcls.predict import _decoded_batches, load_model, predict


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_exif_orientation_is_turned_as_on_the_host(tmp_path, orientation):
    picture = upright_picture(64, 48)
    path = save_tagged(picture, orientation, tmp_path / "p.jpg")
    ok, batch, bad = decode_batch_on("cpu", [path], 32)
    assert ok == [path] and not bad and batch.shape == (1, 32, 32, 3) and batch.dtype.is_floating_point is False
    host = load_image(path, 32)
    assert mean_diff(batch[0].numpy(), host) < 4
    assert mean_diff(batch[0].numpy(), np.asarray(picture.resize((32, 32), Image.BILINEAR))) < 6
    if orientation != 1:  # the check can tell a wrong turn: the picture stored as it is differs a lot
        as_stored = np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.BILINEAR))
        assert mean_diff(as_stored, host) > 20


def test_large_photos_resize_like_the_host_path(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((1600, 1200), Image.BICUBIC).save(path)
    _, batch, _ = decode_batch_on("cpu", [path], 224)
    assert mean_diff(batch[0].numpy(), load_image(path, 224)) < 1.5


def test_a_mixed_batch_gives_the_host_paths_files_and_reasons(tmp_path):
    rng = np.random.default_rng(1)
    files = []  # the JPEGs are under 2 x 24 px, so the host path decodes them whole too (no draft)
    for name, save in [("a.jpg", lambda p: upright_picture().save(p)),
                       ("b.png", lambda p: upright_picture().save(p)),
                       ("grey.jpg", lambda p: Image.new("L", (40, 30), 90).save(p)),
                       ("cmyk.jpg", lambda p: upright_picture().convert("CMYK").save(p)),
                       ("text.jpg", lambda p: p.write_text("not an image")),
                       ("empty.jpg", lambda p: p.write_bytes(b"")),
                       ("cut.jpg", lambda p: p.write_bytes((tmp_path / "a.jpg").read_bytes()[:60])),
                       ("noise.jpg", lambda p: Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(p))]:
        save(tmp_path / name)
        files.append(tmp_path / name)
    ok, batch, bad = decode_batch_on("cpu", files, 24)
    host_ok, host_batch, host_bad = next(_decoded_batches(files, 24, len(files), 2))
    assert ok == host_ok and bad == host_bad
    assert {p.name for p in ok} == {"a.jpg", "b.png", "grey.jpg", "cmyk.jpg", "noise.jpg"}
    for i in range(len(ok)):
        assert mean_diff(batch[i].numpy(), host_batch[i]) < 4, ok[i].name
    grey_ok, grey_batch, _ = decode_batch_on("cpu", [tmp_path / "a.jpg", tmp_path / "b.png"], 24, channels=1)
    assert grey_batch.shape == (2, 24, 24, 1)
    assert mean_diff(grey_batch[1].numpy(), load_image(tmp_path / "b.png", 24, channels=1)) == 0  # PNG: host path


def test_batches_come_in_order_with_the_next_batch_read_ahead(tmp_path):
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.jpg")
        Image.new("RGB", (20, 20), (i * 30, 0, 0)).save(paths[-1])
    got = list(device_decoded_batches(paths, 8, 3, "cpu", workers=2))
    assert [len(ok) for ok, _, _ in got] == [3, 3, 1]
    assert [p for ok, _, _ in got for p in ok] == paths
    reds = [int(b[j, 4, 4, 0]) for _, b, _ in got for j in range(len(b))]
    assert all(abs(r - i * 30) <= 2 for i, r in enumerate(reds))


def test_predict_decoding_on_the_device_agrees_with_the_host(trained_run, tiny_data):
    model = load_model(trained_run.run_dir, backend="torch")
    host = predict(model, [tiny_data / "test"], bs=5)
    device = predict(model, [tiny_data / "test"], bs=5, decode_on_device=True)
    assert [r["path"] for r in device.rows] == [r["path"] for r in host.rows]
    assert [r["label"] for r in device.rows] == [r["label"] for r in host.rows]
    np.testing.assert_allclose(device.probs, host.probs, atol=0.05)
    with pytest.raises(BirdclsError, match="needs a torch model"):
        predict(load_model(trained_run.run_dir / "model.onnx"), [tiny_data / "test"], decode_on_device=True)


def test_a_device_other_than_cuda_gets_every_image_on_it(tmp_path):
    """torchvision decodes on the CPU for any device but CUDA (MPS, say): those images must move too, or a
    batch mixing JPEGs with host-decoded files cannot be stacked. The meta device stands in for MPS."""
    import torch

    upright_picture().save(tmp_path / "a.jpg")
    upright_picture().save(tmp_path / "b.png")
    ok, batch, bad = decode_batch_on(torch.device("meta"), [tmp_path / "a.jpg", tmp_path / "b.png"], 16)
    assert len(ok) == 2 and not bad and batch.device.type == "meta" and batch.shape == (2, 16, 16, 3)


def test_an_orientation_value_outside_1_to_8_is_read_as_upright_on_both_paths(tmp_path):
    picture = upright_picture(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 9
    picture.save(tmp_path / "odd.jpg", exif=exif)
    _, batch, _ = decode_batch_on("cpu", [tmp_path / "odd.jpg"], 32)
    stored = np.asarray(picture.resize((32, 32), Image.BILINEAR))
    assert mean_diff(load_image(tmp_path / "odd.jpg", 32), stored) < 6
    assert mean_diff(batch[0].numpy(), stored) < 6


def test_big_batches_are_decoded_in_calls_within_a_pixel_budget(tmp_path):
    from birdcls.data.device_decode import _calls

    reads = [(b"x", 1, n) for n in (100, 100, 300, 50, 150)]
    assert _calls([0, 1, 2, 3, 4], reads, 200) == [[0, 1], [2], [3, 4]]  # an image over the budget goes alone
    assert _calls([], reads, 200) == []
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        upright_picture(40 + 8 * i, 30).save(paths[-1])
    one_by_one = decode_batch_on("cpu", paths, 16, budget=1)
    together = decode_batch_on("cpu", paths, 16)
    assert one_by_one[0] == together[0] and bool((one_by_one[1] == together[1]).all())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not _cuda(), reason="needs a CUDA GPU (nvJPEG)"))])
def test_nvjpeg_on_a_gpu_gives_the_host_paths_images(tmp_path, device):
    """On a GPU machine: nvJPEG's decode, the turn and the float resize on CUDA, against the host path
    (drafted JPEGs included); on the CPU the same through libjpeg, which checks the test itself."""
    rng = np.random.default_rng(2)
    files = []
    for i, orientation in enumerate((1, 3, 6, 8)):
        picture = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((64 * (i + 1), 48 * (i + 1)))
        files.append(save_tagged(picture, orientation, tmp_path / f"{i}.jpg"))
    upright_picture().convert("CMYK").save(tmp_path / "cmyk.jpg")
    (tmp_path / "cut.jpg").write_bytes(files[0].read_bytes()[:80])
    files += [tmp_path / "cmyk.jpg", tmp_path / "cut.jpg"]
    ok, batch, bad = decode_batch_on(device, files, 24)
    host_ok, host_batch, host_bad = next(_decoded_batches(files, 24, len(files), 2))
    assert batch.device.type == device and ok == host_ok and bad == host_bad
    for i in range(len(ok)):  # the host path may start from a drafted JPEG: close, not equal
        assert mean_diff(batch[i].cpu().numpy(), host_batch[i]) < 10, ok[i].name  # a wrong turn: ~57
