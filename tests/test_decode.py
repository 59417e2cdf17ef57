"""Images are read upright (EXIF orientation) and large JPEGs decoded near the size they are wanted at,
the same way for the image store, prediction and fastai's file pipeline."""

import numpy as np
import pytest
from PIL import Image

from birdcls.data.decode import load_image, open_image

T = Image.Transpose
# orientation tag -> how a camera stores an upright picture under that tag (the inverse of what the tag asks)
STORED_AS = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90,
             7: T.TRANSVERSE, 8: T.ROTATE_270}


def upright_picture(w: int = 40, h: int = 24) -> Image.Image:
    """No two corners alike, so any wrong turn or mirror shows."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2:] = (0, 255, 0)
    a[h // 2:, : w // 2] = (0, 0, 255)
    a[h // 2:, w // 2:, :] = np.arange(w - w // 2, dtype=np.uint8)[None, :, None] * 4
    return Image.fromarray(a)


def mean_diff(a, b) -> float:
    """Mean absolute difference of two uint8 images, in levels of 255."""
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


def save_tagged(picture: Image.Image, orientation: int, path):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = picture.transpose(STORED_AS[orientation]) if orientation in STORED_AS else picture
    stored.save(path, exif=exif.tobytes())  # bytes: pillow-heif ignores an Exif object
    return path


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_exif_orientation_comes_out_upright(tmp_path, orientation):
    picture = upright_picture()
    path = save_tagged(picture, orientation, tmp_path / "p.png")
    if orientation in (5, 6, 7, 8):
        assert Image.open(path).size == (24, 40)  # stored on its side
    assert np.array_equal(np.asarray(open_image(path)), np.asarray(picture))
    assert np.array_equal(load_image(path, 16), np.asarray(picture.resize((16, 16), Image.BILINEAR)))


def test_a_tagged_jpeg_comes_out_upright_too(tmp_path):
    picture = upright_picture(64, 48)
    path = save_tagged(picture, 6, tmp_path / "p.jpg")
    assert open_image(path).size == (64, 48) and mean_diff(open_image(path), picture) < 6


def test_a_large_jpeg_is_decoded_reduced_but_never_below_the_size_asked(tmp_path):
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    path = tmp_path / "big.jpg"
    coarse.resize((1600, 1200), Image.BICUBIC).save(path, quality=92)
    assert open_image(path).size == (1600, 1200)
    assert open_image(path, 224).size == (400, 300)  # 1/4 scale: 1/8 would make the height 150 < 224
    assert open_image(path, 400).size == (800, 600)
    assert open_image(path, 1000).size == (1600, 1200)
    with Image.open(path) as im:
        full = im.convert("RGB").resize((224, 224), Image.BILINEAR)
    assert mean_diff(load_image(path, 224), full) < 1.5
    grey = load_image(path, 100, channels=1)
    assert grey.shape == (100, 100, 1)


def test_small_images_and_other_formats_are_read_as_they_are(tmp_path):
    picture = upright_picture()
    picture.save(tmp_path / "p.png")
    picture.resize((800, 480)).save(tmp_path / "big.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "p.png", 16)), np.asarray(picture))
    assert open_image(tmp_path / "big.png", 16).size == (800, 480)  # draft is for JPEG only
    Image.new("L", (10, 10), 7).save(tmp_path / "g.jpg")
    assert open_image(tmp_path / "g.jpg").mode == "RGB" and open_image(tmp_path / "g.jpg", channels=1).mode == "L"


@pytest.mark.parametrize("name", ["p.png", "big.jpg"])
def test_fastais_file_pipeline_sees_what_the_store_and_predict_see(tmp_path, name):
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.core import PILImage

    from birdcls.data.blocks import ImageFileOpener

    picture = upright_picture(640, 480) if name == "big.jpg" else upright_picture()
    path = save_tagged(picture, 8, tmp_path / name)
    opened = ImageFileOpener(32)(path)
    assert isinstance(opened, PILImage) and opened.size[0] > opened.size[1]  # landscape again
    resized = Resize(32, method=ResizeMethod.Squish)(opened, split_idx=1)
    assert np.array_equal(np.asarray(resized), load_image(path, 32))
    from_array = ImageFileOpener(32)(np.asarray(picture))  # what fastai's own create takes still works
    assert isinstance(from_array, PILImage) and np.array_equal(np.asarray(from_array), np.asarray(picture))


def test_predict_on_a_folder_skips_hidden_entries(tmp_path):
    """clean's .quarantine (its flagged photos and contact sheets) and macOS's ._ companions are not photos to
    classify; a hidden file named on its own still is."""
    from birdcls.predict import gather_images

    for rel in ("raw/cats/a.jpg", "raw/.quarantine/cats/b.jpg", "raw/.quarantine/report-1.png", "raw/cats/._a.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        upright_picture().save(tmp_path / rel, format="JPEG" if rel.endswith("jpg") else "PNG")
    assert gather_images([tmp_path / "raw"]) == [tmp_path / "raw" / "cats" / "a.jpg"]
    assert gather_images([tmp_path / "raw" / ".quarantine"]) == [tmp_path / "raw/.quarantine/cats/b.jpg",
                                                                 tmp_path / "raw/.quarantine/report-1.png"]
    assert gather_images([tmp_path / "raw" / "cats" / "._a.jpg"]) == [tmp_path / "raw" / "cats" / "._a.jpg"]


def test_avif_photos_are_found_and_read(tmp_path):
    from birdcls.predict import gather_images

    picture = upright_picture()
    picture.save(tmp_path / "p.avif")
    assert gather_images([tmp_path]) == [tmp_path / "p.avif"]
    assert mean_diff(load_image(tmp_path / "p.avif", 16), np.asarray(picture.resize((16, 16), Image.BILINEAR))) < 12


def test_heic_phone_photos_are_found_read_upright_and_checked(tmp_path):
    """iPhones store photos as HEIC: predict, split, clean and training find them and read them as they read
    a JPEG, turned upright once (pillow-heif turns the frame itself and resets the tag to 1)."""
    from birdcls.data.folders import class_files, verify_images
    from birdcls.hashing import hash_images
    from birdcls.predict import gather_images

    picture = upright_picture(64, 48)
    path = save_tagged(picture, 6, tmp_path / "IMG_0001.HEIC")
    assert Image.open(path).format == "HEIF"
    assert gather_images([tmp_path]) == [path] and class_files(tmp_path)[0] == [path]
    assert open_image(path).size == (64, 48) and mean_diff(open_image(path), picture) < 6
    assert mean_diff(load_image(path, 16), np.asarray(picture.resize((16, 16), Image.BILINEAR))) < 6
    assert not verify_images([path]).bad and hash_images([path]).errors == {}


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_16_and_32_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path, mode):
    """PIL's convert("RGB") clips 16-bit values to 255: a 16-bit greyscale photo became all white."""
    from birdcls.hashing import hash_images

    ramp8 = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (64, 1))
    Image.fromarray(ramp8).save(tmp_path / "eight.png")
    wide = {"I;16": ramp8.astype(np.uint16) * 257, "I": ramp8.astype(np.int32) * 257,
            "F": ramp8.astype(np.float32) / 255}[mode]
    path = tmp_path / ("wide.png" if mode == "I;16" else "wide.tif")
    Image.fromarray(wide).save(path)
    with Image.open(path) as im:
        assert im.mode == mode
    got, want = load_image(path, 64), load_image(tmp_path / "eight.png", 64)
    assert np.abs(got.astype(int) - want).max() <= 1 and got.min() == 0 and got.max() == 255
    hashes = hash_images([tmp_path / "eight.png", path], workers=1)
    assert hashes.phash[0] == hashes.phash[1] and hashes.phash[0] != 0  # near-duplicate checks see the picture


def test_imap_ahead_keeps_order_and_a_bounded_number_of_calls_ahead():
    """Results come in the order of the items, never more than ``ahead`` calls beyond the one handed over are
    submitted (the rest of a million files is not decoded into memory at once), and closing early cancels."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from birdcls.data.decode import imap_ahead

    started, lock = [], threading.Lock()

    def slow_square(x):
        with lock:
            started.append(x)
        time.sleep(0.002 * (x % 3))  # later items can finish first
        return x * x

    with ThreadPoolExecutor(4) as pool:
        results = imap_ahead(pool, slow_square, range(40), ahead=5)
        for i, got in enumerate(results):
            assert got == i * i
            time.sleep(0.005)
            with lock:
                assert len(started) <= i + 1 + 5
            if i == 19:
                break
        results.close()
    assert len(started) <= 20 + 5  # the cancelled rest never ran


def test_a_palette_image_with_a_transparent_colour_decodes_without_a_warning(tmp_path):
    """PIL warns on stderr for every such GIF or PNG converted straight to RGB; the colours stay the same."""
    import warnings

    from birdcls.hashing import hash_images

    im = Image.fromarray((np.arange(48 * 48) % 8).astype(np.uint8).reshape(48, 48)).convert("P")
    im.putpalette([v for c in range(256) for v in (c * 30 % 256, 255 - c * 30 % 256, c * 7 % 256)])
    im.save(tmp_path / "pal.png", transparency=bytes([0, 64, 128, 255]))  # an alpha for each of 4 colours
    im.save(tmp_path / "pal.gif", transparency=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arrays = [load_image(tmp_path / name, 48) for name in ("pal.png", "pal.gif")]
        assert hash_images([tmp_path / "pal.png", tmp_path / "pal.gif"]).errors == {}
    expected = np.asarray(im.convert("RGB"))
    for array in arrays:
        np.testing.assert_array_equal(array, expected)
