"""The scraper against a real local HTTP server: every failure mode, resume, and the engines."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from birdcls.errors import BirdclsError
from birdcls.scrape import (
    DDGSEngine,
    DownloadLimits,
    EngineRateLimited,
    GoogleSeleniumEngine,
    UrlListEngine,
    parse_class_spec,
    scrape_classes,
)
from birdcls.scrape.download import DownloadFailed, decode_image, fetch_bytes, make_session

from imageserver import ImageServer

FAST = DownloadLimits(connect_timeout=2, read_timeout=2, total_timeout=2, retries=2, backoff=0.05, max_retry_after=1.5)


@pytest.fixture(scope="module")
def server():
    srv = ImageServer()
    yield srv
    srv.close()


def _get(server, path):
    session = make_session(FAST)
    return decode_image(fetch_bytes(session, server.url + path, FAST), FAST)


@pytest.mark.parametrize("path, reason", [
    ("/404.jpg", "HTTP 404"),
    ("/html.jpg", "HTML page, not an image"),
    ("/vector.svg", "SVG, not a raster image"),
    ("/truncated.jpg", "truncated or corrupt"),
    ("/bomb.png", "decompression bomb"),
    ("/anim.gif", "animated image"),
    ("/empty.jpg", "empty file"),
    ("/tiny.jpg", "too small"),
    ("/loop", "too many redirects"),
    ("/slow.jpg", "timed out"),
    ("/always-503.jpg", "HTTP 503"),  # after the capped retries, not after Retry-After: 3600
])
def test_bad_urls_are_rejected_with_their_reason(server, path, reason):
    with pytest.raises(DownloadFailed, match=reason):
        _get(server, path)


def test_byte_cap(server):
    session = make_session(FAST)
    small = DownloadLimits(**{**FAST.__dict__, "max_bytes": 1000})
    with pytest.raises(DownloadFailed, match="too large"):
        fetch_bytes(session, server.url + "/good/1.jpg", small)


def test_no_results_at_all_is_an_error(server, tmp_path):
    engine = DDGSEngine("bing", client_factory=_FakeDDGS(server, pages=0))
    with pytest.raises(BirdclsError, match="no image results for any class"):
        scrape_classes(["heron"], tmp_path / "raw", engine, per_class=3, limits=FAST, delay=0, progress=False)


def test_retries_recover_and_retry_after_is_honoured(server):
    import time

    assert _get(server, "/flaky.jpg").width == 96
    start = time.monotonic()
    assert _get(server, "/retry-after.jpg").width == 96
    assert time.monotonic() - start >= 0.9  # waited for Retry-After: 1
    assert server.hits["/retry-after.jpg"] == 2
    assert server.hits["/always-503.jpg"] == 1 + FAST.retries


def test_odd_modes_become_rgb(server):
    for path in ("/cmyk.jpg", "/16bit.png"):
        img = _get(server, path).image
        assert img.mode == "RGB" and img.size == (96, 96)
    grey = _get(server, "/16bit.png").image
    assert len(set(grey.tobytes())) > 50  # scaled to 8 bits, not clipped to white


def test_avif_is_an_image_format_like_the_others(server):
    got = _get(server, "/photo.avif")
    assert got.format == "AVIF" and got.image.mode == "RGB" and got.image.size == (96, 96)


def test_same_pixels_in_another_encoding_have_one_pixel_hash(server):
    a, b = _get(server, "/good/5.jpg"), _get(server, "/dup/5.png")
    assert a.sha256 != b.sha256 and a.format != b.format
    assert a.pixel_sha256 == b.pixel_sha256
    assert _get(server, "/good/6.jpg").pixel_sha256 != a.pixel_sha256


def _url_file(tmp_path, server, rows):
    path = tmp_path / "urls.csv"
    path.write_text("label,url\n" + "".join(f"{label},{server.url}{p}\n" for label, p in rows))
    return path


ALL_BAD = ["/404.jpg", "/html.jpg", "/vector.svg", "/truncated.jpg", "/bomb.png", "/anim.gif", "/empty.jpg",
           "/tiny.jpg", "/loop"]


def test_scrape_urls_engine_keeps_good_rejects_bad_and_resumes(server, tmp_path):
    rows = [("owl", f"/good/{i}.jpg") for i in range(4)] + [("owl", "/dup/1.png"), ("owl", "/cmyk.jpg")]
    rows += [("owl", p) for p in ALL_BAD] + [("kite", f"/good/{i}.jpg") for i in range(10, 13)]
    engine = UrlListEngine(_url_file(tmp_path, server, rows))
    out = tmp_path / "raw"
    report = scrape_classes(["owl", "kite"], out, engine, per_class=10, limits=FAST, delay=0, progress=False)
    owl, kite = report.classes
    assert (owl.kept, owl.duplicates, sum(owl.rejected.values())) == (5, 1, len(ALL_BAD))
    assert owl.outcome == "engine ran dry" and kite.kept == 3
    files = sorted(p.name for p in (out / "owl").iterdir())
    assert len(files) == 5 and all(len(Path(f).stem) == 20 for f in files)  # content-hash names
    rows_out = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows_out) == len(rows)
    kept = [r for r in rows_out if r["status"] == "kept"]
    assert all(r["phash"] and r["sha256"] and r["width"] == 96 and r["engine"] == "urls" for r in kept)
    assert {r["reason"].split(" (")[0] for r in rows_out if r["status"] == "rejected"} >= {
        "HTTP 404", "HTML page, not an image", "animated image", "too many redirects"}
    assert "rejected by reason" in report.table()
    # Re-running the same command fetches nothing again.
    hits = dict(server.hits)
    again = scrape_classes(["owl", "kite"], out, engine, per_class=10, limits=FAST, delay=0, progress=False)
    assert server.hits == hits
    assert again.classes[0].kept == 5
    assert len((out / "manifest.jsonl").read_text().splitlines()) == len(rows)


def test_scrape_stops_at_per_class(server, tmp_path):
    engine = UrlListEngine(_url_file(tmp_path, server, [("jay", f"/good/{i}.jpg") for i in range(20, 40)]))
    report = scrape_classes(["jay"], tmp_path / "raw", engine, per_class=3, limits=FAST, delay=0, progress=False)
    assert report.classes[0].kept == 3 and report.classes[0].outcome == "complete"
    assert len(list((tmp_path / "raw" / "jay").iterdir())) == 3


class _FakeDDGS:
    """Stands in for ddgs.DDGS at the seam: pages of results, then nothing, or a rate limit."""

    def __init__(self, server, pages=2, ratelimit=False):
        self.server, self.pages, self.ratelimit, self.calls = server, pages, ratelimit, []

    def __call__(self):
        return self

    def images(self, query, max_results, page, backend):
        from ddgs.exceptions import DDGSException, RatelimitException

        self.calls.append((query, page, backend))
        if self.ratelimit:
            raise RatelimitException("https://duckduckgo.com/i.js 403 Ratelimit")
        if page > self.pages:
            raise DDGSException("No results found.")
        return [{"image": f"{self.server.url}/good/{300 + page * 10 + i}.jpg", "title": "x"} for i in range(3)]


def test_ddgs_adapter_pages_until_dry(server, tmp_path):
    fake = _FakeDDGS(server)
    engine = DDGSEngine("bing", client_factory=fake)
    report = scrape_classes(["cockatoo"], tmp_path / "raw", engine, per_class=50, limits=FAST, delay=0, progress=False)
    assert report.classes[0].kept == 6 and report.classes[0].outcome == "engine ran dry"
    assert fake.calls == [("cockatoo", 1, "bing"), ("cockatoo", 2, "bing"), ("cockatoo", 3, "bing")]


def test_ddgs_rate_limit_is_a_clear_stop(server, tmp_path):
    engine = DDGSEngine("duckduckgo", client_factory=_FakeDDGS(server, ratelimit=True))
    with pytest.raises(EngineRateLimited, match="rate-limiting.*re-run"):
        engine.search("owl", 1)
    report = scrape_classes(["owl"], tmp_path / "raw", engine, per_class=5, limits=FAST, delay=0, progress=False)
    assert report.classes[0].outcome.startswith("rate limited")


needs_chromium = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                    reason="Chromium and chromedriver are absent: apt-get install chromium chromium-driver")


@needs_chromium
def test_google_engine_in_real_headless_chromium(server, tmp_path):
    engine = GoogleSeleniumEngine(search_url=server.url + "/search?q={query}", scroll_pause=0.2)
    try:
        report = scrape_classes(["black-kite=black kite bird"], tmp_path / "raw", engine, per_class=10, limits=FAST,
                                delay=0, progress=False)
    finally:
        engine.close()
    result = report.classes[0]
    assert result.label == "black-kite" and result.kept == 7  # 6 imgurl links + 1 plain <img>
    rows = [json.loads(x) for x in (tmp_path / "raw" / "manifest.jsonl").read_text().splitlines()]
    assert {r["engine"] for r in rows} == {"google"} and rows[0]["query"] == "black kite bird"


def test_class_specs():
    assert parse_class_spec("cockatoo") == parse_class_spec("cockatoo=cockatoo")
    spec = parse_class_spec("Black Kite=black kite bird")
    assert (spec.label, spec.query) == ("black-kite", "black kite bird")
    with pytest.raises(BirdclsError, match="empty label or query"):
        parse_class_spec("=x")


def test_scrape_input_errors(tmp_path, server):
    engine = UrlListEngine(_url_file(tmp_path, server, [("a", "/good/1.jpg")]))
    with pytest.raises(BirdclsError, match="share a label"):
        scrape_classes(["Owl", "owl"], tmp_path / "o", engine, progress=False)
    with pytest.raises(BirdclsError, match="per-class"):
        scrape_classes(["owl"], tmp_path / "o", engine, per_class=0, progress=False)
    with pytest.raises(BirdclsError, match="does not exist"):
        UrlListEngine(tmp_path / "nope.csv")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(BirdclsError, match="lists no URLs"):
        UrlListEngine(tmp_path / "empty.txt")
    Image.new("RGB", (4, 4)).save(tmp_path / "file.jpg")
    with pytest.raises(BirdclsError, match="is a file"):
        scrape_classes(["owl"], tmp_path / "file.jpg", engine, progress=False)
