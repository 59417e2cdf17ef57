import imagehash
import numpy as np
import pytest
from PIL import Image

from birdcls.hashing import hamming, hash_images, near_pairs, phash_hex

from fixtures import make_class_folders


def test_batched_phash_equals_imagehash(tmp_path):
    root = make_class_folders(tmp_path / "raw", per_class=15, size=64)
    paths = sorted(root.rglob("*.jpg"))
    result = hash_images(paths, workers=2, chunk=10)
    assert [phash_hex(h) for h in result.phash] == [str(imagehash.phash(Image.open(p))) for p in paths]


def test_unreadable_files_are_marked(tmp_path):
    good = tmp_path / "a.png"
    Image.new("RGB", (40, 40), "red").save(good)
    (tmp_path / "b.png").write_bytes(b"nope")
    result = hash_images([good, tmp_path / "b.png"], workers=1)
    assert list(result.errors) == [1] and result.ok.tolist() == [True, False]
    assert result.pixel[0] and not result.pixel[1]



def test_exact_groups_hold_same_pixels_in_the_order_asked(tmp_path):
    """Same pixels in another format are one group; an unreadable file and a lone image are in none."""
    Image.new("RGB", (40, 40), "red").save(tmp_path / "a.png")
    Image.new("RGB", (40, 40), "blue").save(tmp_path / "b.png")
    Image.new("RGB", (40, 40), "red").save(tmp_path / "c.bmp")
    (tmp_path / "d.png").write_bytes(b"nope")
    (tmp_path / "e.png").write_bytes(b"nope")
    result = hash_images([tmp_path / n for n in ("a.png", "b.png", "c.bmp", "d.png", "e.png")], workers=1)
    assert result.exact_groups() == [[0, 2]]
    assert result.exact_groups([4, 3, 2, 1, 0]) == [[2, 0]]
    assert result.exact_groups([0, 1, 3]) == []


@pytest.mark.parametrize("max_distance", [0, 3, 6])
def test_near_pairs_matches_brute_force(max_distance):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=60, dtype=np.uint64)
    # plant near copies: flip a few bits of some hashes
    flips = [np.uint64(1) << np.uint64(b) for b in rng.integers(0, 64, size=60)]
    copies = np.array([h ^ f ^ (f << np.uint64(1) if i % 2 else np.uint64(0)) for i, (h, f) in enumerate(zip(base, flips))],
                      dtype=np.uint64)
    hashes = np.concatenate([base, copies])
    groups = np.r_[np.zeros(60, int), np.ones(60, int)]
    got = {(a, b) for a, b, _ in near_pairs(hashes, max_distance, groups=groups)}
    expected = {(i, j) for i in range(120) for j in range(i + 1, 120)
                if groups[i] != groups[j] and hamming(hashes[i:i + 1], hashes[j:j + 1])[0] <= max_distance}
    assert got == expected
    if max_distance >= 2:
        assert len(got) >= 60
