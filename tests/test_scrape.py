"""The scraper against a real local HTTP server: every failure mode, resume, and the engines."""

import json
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from birdcls.cli import app
from birdcls.errors import BirdclsError
from birdcls.scrape import (
    DDGSEngine,
    DownloadLimits,
    EngineError,
    EngineRateLimited,
    EngineUnreachable,
    GoogleSeleniumEngine,
    UrlListEngine,
    parse_class_spec,
    scrape_classes,
)
from birdcls.scrape.download import DownloadFailed, decode_image, fetch_bytes, make_session, short_error

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
    ("/to-file", "redirected to a URL that is not http\\(s\\)"),  # final: not a network error to retry
    ("/short.jpg", "connection broken"),  # a body shorter than its Content-Length: retried on a re-run
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
        scrape_classes(["heron"], tmp_path / "raw", engine, per_class=3, limits=FAST, delay=0, progress="none")


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
    report = scrape_classes(["owl", "kite"], out, engine, per_class=10, limits=FAST, delay=0, progress="none")
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
    again = scrape_classes(["owl", "kite"], out, engine, per_class=10, limits=FAST, delay=0, progress="none")
    assert server.hits == hits
    assert again.classes[0].kept == 5
    assert len((out / "manifest.jsonl").read_text().splitlines()) == len(rows)


def test_images_taken_out_of_the_dataset_do_not_come_back_under_another_url(server, tmp_path):
    """An image clean quarantined (or the user deleted) is refused when a later scrape finds its pixels at a
    new URL, as image search does; put back with undo, it counts as kept again."""
    from birdcls.clean.quarantine import Quarantine

    out = tmp_path / "raw"
    first = UrlListEngine(_url_file(tmp_path, server, [("owl", f"/good/{i}.jpg") for i in range(3)]))
    scrape_classes(["owl"], out, first, per_class=3, limits=FAST, delay=0)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    quarantined = out / next(r["file"] for r in manifest if r["url"].endswith("/good/1.jpg"))
    deleted = out / next(r["file"] for r in manifest if r["url"].endswith("/good/2.jpg"))
    quarantine = Quarantine(out)
    quarantine.quarantine(quarantined, "near duplicate")
    deleted.unlink()
    more = [("owl", "/dup/1.png"), ("owl", "/dup/2.png"), ("owl", "/good/5.jpg")]  # /dup/N: good N's pixels
    again = scrape_classes(["owl"], out, UrlListEngine(_url_file(tmp_path, server, more)), per_class=3, limits=FAST,
                           delay=0).classes[0]
    assert (again.kept, dict(again.rejected)) == (2, {"removed earlier": 2})
    assert not quarantined.exists() and not deleted.exists() and len(list((out / "owl").iterdir())) == 2
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()][len(manifest):]
    assert [r["status"] for r in rows] == ["rejected", "rejected", "kept"]
    assert rows[0]["reason"].startswith(f"removed earlier: same pixels as {quarantined.relative_to(out)}")
    quarantine.undo()  # back in the dataset: found again, it is a plain duplicate of itself
    third = [("owl", "/dup/1.png?again"), ("owl", "/good/6.jpg")]  # the server ignores the query: same pixels
    last = scrape_classes(["owl"], out, UrlListEngine(_url_file(tmp_path, server, third)), per_class=4, limits=FAST,
                          delay=0).classes[0]
    assert (last.kept, last.duplicates, dict(last.rejected)) == (4, 1, {})


def test_scrape_stops_at_per_class(server, tmp_path, capsys):
    engine = UrlListEngine(_url_file(tmp_path, server, [("jay", f"/good/{i}.jpg") for i in range(20, 40)]))
    report = scrape_classes(["jay"], tmp_path / "raw", engine, per_class=3, limits=FAST, delay=0, progress="lines")
    assert report.classes[0].kept == 3 and report.classes[0].outcome == "complete"
    shown = capsys.readouterr()
    assert shown.out == "" and shown.err.startswith("jay: 3/3 images, ")  # progress as split and predict show it
    assert len(list((tmp_path / "raw" / "jay").iterdir())) == 3
    more = scrape_classes(["jay"], tmp_path / "raw", engine, per_class=5, limits=FAST, delay=0, progress="lines")
    assert more.classes[0].kept == 5 and capsys.readouterr().err.startswith("jay: 2/2 images, ")  # the 2 missing


def test_urls_downloaded_beside_a_full_class_serve_a_larger_per_class(server, tmp_path):
    """A wave downloads at least one URL a worker: the images beyond per_class were recorded as "class already
    full" and, taken as final, never tried again: 8 URLs, --per-class 2 then 6, had ended at 4."""
    engine = UrlListEngine(_url_file(tmp_path, server, [("jay", f"/good/{i}.jpg") for i in range(60, 68)]))
    first = scrape_classes(["jay"], tmp_path / "raw", engine, per_class=2, limits=FAST, delay=0, workers=8)
    assert first.classes[0].kept == 2
    more = scrape_classes(["jay"], tmp_path / "raw", engine, per_class=6, limits=FAST, delay=0, workers=8)
    assert more.classes[0].kept == 6 and more.classes[0].outcome == "complete"


def test_url_files_as_people_write_them(server, tmp_path):
    """A spreadsheet's CSV starts with a byte-order mark; a text file's label may hold spaces, or its lines may
    be CSV rows; a scheme may be upper case."""
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeffcockatoo," + server.url + "/good/1.jpg\ncockatoo," + server.url + "/good/2.jpg\n",
                   encoding="utf-8")
    assert UrlListEngine(bom).by_label == {"cockatoo": [server.url + "/good/1.jpg", server.url + "/good/2.jpg"]}
    text = tmp_path / "urls.txt"
    text.write_text(f"black kite {server.url}/good/3.jpg\nowl,{server.url}/good/4.jpg\n"
                    f"owl  {server.url.upper()}/good/5.jpg\nbarn, owl,{server.url}/good/6.jpg?size=1,2\n")
    engine = UrlListEngine(text)
    assert set(engine.by_label) == {"black kite", "owl", "barn, owl"} and len(engine.by_label["owl"]) == 2
    headed = tmp_path / "headed.txt"  # a CSV's header and rows in a text file: the header is no URL
    headed.write_text(f"label,url\njay {server.url}/r?src=a,https://elsewhere/c.jpg\n")
    assert UrlListEngine(headed).by_label == {"jay": [f"{server.url}/r?src=a,https://elsewhere/c.jpg"]}
    assert UrlListEngine(headed).unlabelled == []
    assert engine.by_label["barn, owl"] == [f"{server.url}/good/6.jpg?size=1,2"]  # a comma in the URL stays in it
    report = scrape_classes(["kite=black kite", "owl"], tmp_path / "raw", engine, per_class=2, limits=FAST, delay=0)
    assert [c.kept for c in report.classes] == [1, 2]  # HTTP://127.0.0.1:PORT/... is an http URL


def test_classes_without_urls_in_the_file_are_named_before_any_download(server, tmp_path):
    engine = UrlListEngine(_url_file(tmp_path, server, [("Black Kite", "/good/1.jpg"), ("owl", "/good/2.jpg")]))
    with pytest.raises(BirdclsError, match="has no URLs for black-kite, jay: its labels are Black Kite, owl"):
        scrape_classes(["black-kite", "jay", "owl"], tmp_path / "raw", engine, limits=FAST, delay=0)
    bare = tmp_path / "bare.txt"
    bare.write_text(f"{server.url}/good/1.jpg\n")
    with pytest.raises(BirdclsError, match="lists bare URLs, which are one class's: label each one"):
        scrape_classes(["jay", "owl"], tmp_path / "raw", UrlListEngine(bare), limits=FAST, delay=0)
    assert not (tmp_path / "raw").exists()
    (tmp_path / "folder").mkdir()
    with pytest.raises(BirdclsError, match="--urls-file .*folder is a folder"):
        UrlListEngine(tmp_path / "folder")
    with pytest.raises(BirdclsError, match="gives no folder name .*write 'label=query', e.g. 'bird=\u9e1f'"):
        parse_class_spec("\u9e1f")


class _FakeDDGS:
    """Stands in for ddgs.DDGS at the seam: pages of results, then nothing, or a rate limit."""

    def __init__(self, server, pages=2, ratelimit=False, error=None):
        self.server, self.pages, self.ratelimit, self.error, self.calls = server, pages, ratelimit, error, []

    def __call__(self):
        return self

    def images(self, query, max_results, page, backend):
        from ddgs.exceptions import DDGSException, RatelimitException

        self.calls.append((query, page, backend))
        if self.ratelimit:
            raise RatelimitException("https://duckduckgo.com/i.js 403 Ratelimit")
        if self.error:
            raise DDGSException(self.error)
        if page > self.pages:
            raise DDGSException("No results found.")
        return [{"image": f"{self.server.url}/good/{300 + page * 10 + i}.jpg", "title": "x"} for i in range(3)]


def test_ddgs_adapter_pages_until_dry(server, tmp_path):
    fake = _FakeDDGS(server)
    engine = DDGSEngine("bing", client_factory=fake)
    report = scrape_classes(["cockatoo"], tmp_path / "raw", engine, per_class=50, limits=FAST, delay=0, progress="none")
    assert report.classes[0].kept == 6 and report.classes[0].outcome == "engine ran dry"
    assert fake.calls == [("cockatoo", 1, "bing"), ("cockatoo", 2, "bing"), ("cockatoo", 3, "bing")]


class _PerQueryDDGS(_FakeDDGS):
    """One page of images per query, each query its own images."""

    def images(self, query, max_results, page, backend):
        from ddgs.exceptions import DDGSException

        self.calls.append((query, page, backend))
        if page > 1:
            raise DDGSException("No results found.")
        first = 500 + 10 * len(self.calls)
        return [{"image": f"{self.server.url}/good/{first + i}.jpg", "title": query} for i in range(2)]


def test_module_docstring_example_runs(server, tmp_path, monkeypatch):
    """The example at the top of birdcls/scrape/run.py, run as written (it once left out the engine), with
    ddgs answering from the local image server instead of the internet."""
    import doctest

    import ddgs

    from birdcls.scrape import run

    fake = _PerQueryDDGS(server)
    monkeypatch.setattr(ddgs, "DDGS", lambda **kw: fake)
    monkeypatch.chdir(tmp_path)
    namespace = {"scrape_classes": run.scrape_classes}
    examples = doctest.DocTestParser().get_examples(run.__doc__)
    assert any("make_engine(" in ex.source for ex in examples)
    for example in examples:
        exec(compile(example.source, "run.__doc__", "exec"), namespace)  # noqa: S102 - our own docstring
    report = namespace["report"]
    assert [(c.label, c.kept) for c in report.classes] == [("cockatoo", 2), ("black-kite", 2)]
    assert [q for q, _, _ in fake.calls] == ["cockatoo", "cockatoo", "black kite bird", "black kite bird"]
    assert len(list((tmp_path / "data" / "raw" / "black-kite").iterdir())) == 2


def test_ddgs_rate_limit_is_a_clear_stop(server, tmp_path):
    engine = DDGSEngine("duckduckgo", client_factory=_FakeDDGS(server, ratelimit=True))
    with pytest.raises(EngineRateLimited, match="rate-limiting.*re-run"):
        engine.search("owl", 1)
    with pytest.raises(BirdclsError, match="no class got a single image: ddg is rate-limiting.*re-run"):
        scrape_classes(["owl"], tmp_path / "raw", engine, per_class=5, limits=FAST, delay=0, progress="none")
    # Beside a class that got its images, the rate-limited one is listed, and the run succeeds.
    working = DDGSEngine("bing", client_factory=_FakeDDGS(server, pages=1))
    report = scrape_classes(["kite", "owl"], tmp_path / "raw", _PerQuery({"kite": working, "owl": engine}),
                            per_class=3, limits=FAST, delay=0, progress="none")
    assert [c.outcome for c in report.classes] == ["complete", "rate limited"]
    assert report.table().splitlines()[-1].startswith("owl: NO IMAGES: ddg is rate-limiting this machine")


# --- No network: the engine or the image hosts cannot be reached -------------------------------------------

runner = CliRunner()
NETWORK_FIX = "check the network connection, or use --engine urls --urls-file FILE"


@pytest.fixture
def dead_port():
    """A port on 127.0.0.1 that refuses connections: bound (so nothing else takes it) but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _assert_one_complete_line(message, *fragments):
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "rate" not in message.lower(), message
    # Not the raw library text (cut off inside a URL in the bug report), nor a half sentence.
    assert "error sending request" not in message and "(url" not in message, message
    assert message.count("(") == message.count(")"), message


@pytest.mark.parametrize("proxy, problem", [
    (None, "connection refused"),
    ("http://nonexistent.invalid:3128", "DNS lookup of nonexistent.invalid failed"),
])
def test_unreachable_engine_is_a_network_error_and_scrapes_nothing(tmp_path, monkeypatch, dead_port, proxy, problem):
    # The real ddgs client, its traffic sent to a proxy that cannot be reached: the internet is never touched.
    monkeypatch.setenv("DDGS_PROXY", proxy or f"http://127.0.0.1:{dead_port}")
    engine = DDGSEngine("duckduckgo")
    with pytest.raises(EngineUnreachable) as info:
        engine.search("cockatoo", 1)
    _assert_one_complete_line(str(info.value), f"ddg could not be reached ({problem})", NETWORK_FIX, "resumes")
    out = tmp_path / "scr1"
    with pytest.raises(BirdclsError) as info:
        scrape_classes(["cockatoo", "kite"], out, engine, per_class=3, limits=FAST, delay=0, progress="none")
    _assert_one_complete_line(str(info.value), "no class got a single image", f"ddg could not be reached ({problem})",
                              NETWORK_FIX)
    assert not out.exists()  # nothing was tried: no empty folder, no manifest


def test_cli_without_network_says_so_on_one_line_with_exit_2(tmp_path, monkeypatch, dead_port):
    """The bug report's command: exit 2, one complete error line, no table, no claim of a manifest."""
    monkeypatch.setenv("DDGS_PROXY", f"http://127.0.0.1:{dead_port}")
    out = tmp_path / "data" / "raw"  # the README's layout: data/ is made for it, and removed with it
    result = runner.invoke(app, ["scrape", "cockatoo", "--per-class", "3", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    errors = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    _assert_one_complete_line(errors[0], "ddg could not be reached (connection refused)", NETWORK_FIX)
    assert not out.exists() and not out.parent.exists() and tmp_path.is_dir()


def test_cli_urls_engine_with_every_download_failing_is_exit_2(tmp_path, dead_port):
    urls = tmp_path / "urls.txt"
    urls.write_text(f"owl http://127.0.0.1:{dead_port}/a.jpg\nowl http://127.0.0.1:{dead_port}/b.jpg\n")
    out = tmp_path / "raw"
    result = runner.invoke(app, ["scrape", "owl", "--engine", "urls", "--urls-file", str(urls), "--out", str(out),
                                 "--delay", "0"])
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    errors = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    _assert_one_complete_line(errors[0], "no class got a single image", "none of the 2 image URLs tried",
                              "(network error: 2)", "check the network connection",
                              f"{out / 'manifest.jsonl'} has each URL's reason")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rows] == ["network error (connection refused)"] * 2  # kept for the re-run


def test_urls_engine_with_only_bad_images_is_an_error(server, tmp_path):
    engine = UrlListEngine(_url_file(tmp_path, server, [("owl", p) for p in ALL_BAD[:3]]))
    with pytest.raises(BirdclsError, match=r"none of the 3 image URLs tried gave a new image \(HTTP 404: 1; .*"
                                           r"check the URLs in --urls-file"):
        scrape_classes(["owl"], tmp_path / "raw", engine, per_class=3, limits=FAST, delay=0, progress="none")
    assert len((tmp_path / "raw" / "manifest.jsonl").read_text().splitlines()) == 3


def test_cli_partial_success_exits_0_and_lists_the_class_that_failed(server, tmp_path, dead_port):
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"owl {server.url}/good/{i}.jpg\n" for i in range(60, 63))
                    + f"kite http://127.0.0.1:{dead_port}/k.jpg\n")
    out = tmp_path / "raw"
    result = runner.invoke(app, ["scrape", "owl", "kite", "--engine", "urls", "--urls-file", str(urls), "--out",
                                 str(out), "--per-class", "3", "--delay", "0"])
    assert result.exit_code == 0, result.output
    assert "kite: NO IMAGES: none of the 1 URLs tried gave a new image (network error: 1)" in result.stdout
    assert "owl: " not in result.stdout  # the class that filled up is not listed as a failure
    assert "manifest.jsonl" in result.stdout and (out / "manifest.jsonl").is_file()
    assert len(list((out / "owl").iterdir())) == 3 and not (out / "kite").exists()


class _PerQuery:
    """One engine per query (the same run meeting a working and an unreachable search)."""

    name = "mixed"

    def __init__(self, engines):
        self.engines = engines

    def search(self, query, page):
        return self.engines[query].search(query, page)


def test_partial_success_when_the_engine_fails_for_some_classes(server, tmp_path, monkeypatch, dead_port):
    monkeypatch.setenv("DDGS_PROXY", f"http://127.0.0.1:{dead_port}")
    working = DDGSEngine("bing", client_factory=_FakeDDGS(server, pages=1))
    engine = _PerQuery({"owl": working, "heron": DDGSEngine("duckduckgo")})
    report = scrape_classes(["owl", "heron"], tmp_path / "raw", engine, per_class=3, limits=FAST, delay=0,
                            progress="none")
    owl, heron = report.classes
    assert (owl.kept, owl.outcome, owl.problem) == (3, "complete", "")
    assert (heron.kept, heron.outcome) == (0, "engine unreachable")
    assert report.manifest == tmp_path / "raw" / "manifest.jsonl"
    last = report.table().splitlines()[-1]
    assert last.startswith("heron: NO IMAGES: ddg could not be reached (connection refused)")
    _assert_one_complete_line(last, NETWORK_FIX)


def test_other_search_failures_are_short_complete_and_not_called_rate_limits(server):
    text = ("ValueError: ValueError('error decoding response body for url (https://duckduckgo.com/i.js?l=us-en&o=json"
            "&q=owl&vqd=4-1234567890&f=,,,,,&p=1) > expected value at line 1 column 1')")
    engine = DDGSEngine("duckduckgo", client_factory=_FakeDDGS(server, error=text))
    with pytest.raises(EngineError) as info:
        engine.search("owl", 1)
    assert type(info.value) is EngineError and info.value.kind == "search failed"
    _assert_one_complete_line(str(info.value), "ddg search failed (expected value at line 1 column 1): re-run later")
    long = short_error("first line " + "word " * 40 + "\nsecond line")
    assert len(long) <= 100 and long.endswith("word ...") and "second" not in long


needs_chromium = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                    reason="Chromium and chromedriver are absent: apt-get install chromium chromium-driver")


@needs_chromium
def test_google_engine_in_real_headless_chromium(server, tmp_path):
    engine = GoogleSeleniumEngine(search_url=server.url + "/search?q={query}", scroll_pause=0.2)
    try:
        report = scrape_classes(["black-kite=black kite bird"], tmp_path / "raw", engine, per_class=10, limits=FAST,
                                delay=0, progress="none")
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
        scrape_classes(["Owl", "owl"], tmp_path / "o", engine, progress="none")
    with pytest.raises(BirdclsError, match="per-class"):
        scrape_classes(["owl"], tmp_path / "o", engine, per_class=0, progress="none")
    for bad, match in (({"per_class": "10"}, r"per_class \(--per-class\) must be a whole number 1 or more, got '10'"),
                       ({"workers": 0}, "workers"), ({"delay": -1}, r"delay \(--delay\) must be 0 or more"),
                       ({"limits": DownloadLimits(min_size=-5)}, r"min_size \(--min-size\) must be a whole number 0")):
        with pytest.raises(BirdclsError, match=match):
            scrape_classes(["owl"], tmp_path / "o", engine, progress="none", **bad)
    assert not (tmp_path / "o").exists()
    with pytest.raises(BirdclsError, match="does not exist"):
        UrlListEngine(tmp_path / "nope.csv")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(BirdclsError, match="lists no URLs"):
        UrlListEngine(tmp_path / "empty.txt")
    done = scrape_classes(["a"], tmp_path / "raw", engine, per_class=1, limits=FAST, delay=0).out
    with pytest.raises(BirdclsError, match=f"--out .* is inside {done}, another scrape's output"):
        scrape_classes(["a"], done / "a" / "more", engine, progress="none")
    assert not (done / "a" / "more").exists()
    (tmp_path / "speech").mkdir()  # another tool's manifest.jsonl (NeMo's audio datasets use the name)
    (tmp_path / "speech" / "manifest.jsonl").write_text('{"audio_filepath": "a.wav", "duration": 1.0}\n')
    assert scrape_classes(["a"], tmp_path / "speech" / "raw", engine, per_class=1, limits=FAST, delay=0).classes
    Image.new("RGB", (4, 4)).save(tmp_path / "file.jpg")
    with pytest.raises(BirdclsError, match="is a file"):
        scrape_classes(["owl"], tmp_path / "file.jpg", engine, progress="none")


@needs_chromium
def test_google_engine_unreachable_is_a_network_error(tmp_path, dead_port):
    engine = GoogleSeleniumEngine(search_url=f"http://127.0.0.1:{dead_port}/search?q={{query}}", scroll_pause=0.2)
    with pytest.raises(BirdclsError) as info:
        scrape_classes(["owl"], tmp_path / "raw", engine, per_class=3, limits=FAST, delay=0, progress="none")
    _assert_one_complete_line(str(info.value), "google could not be reached (connection refused)", NETWORK_FIX)


def test_ctrl_c_before_any_image_leaves_no_empty_output_folder(tmp_path):
    """An empty --out (and the parents made for it) looks like a result: Ctrl-C in the first search left one."""

    class Interrupted:
        name = "fake"

        def search(self, query, page):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scrape_classes(["owl"], tmp_path / "new" / "raw", Interrupted(), limits=FAST, delay=0)
    assert not (tmp_path / "new").exists()


def test_a_socks_proxy_without_its_library_is_a_network_error_retried_later(monkeypatch):
    """requests says InvalidSchema for it, as for a redirect to file://; only the redirect is final."""
    import sys

    monkeypatch.setitem(sys.modules, "socks", None)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "socks5://127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(DownloadFailed, match="^network error") as caught:
        fetch_bytes(make_session(FAST), "http://example.invalid/a.jpg", FAST)
    assert "redirected" not in str(caught.value)


def test_a_stopped_download_ends_at_its_next_retry_wait(server):
    """Ctrl-C during a scrape sets the session's stop: a download answered 503 with Retry-After ends there
    instead of sleeping through its remaining retries (a scrape had taken about 30 s to stop)."""
    import threading

    limits = DownloadLimits(connect_timeout=2, read_timeout=2, total_timeout=2, retries=3, backoff=0.05,
                            max_retry_after=10)
    stop = threading.Event()
    stop.set()
    before = server.hits.get("/always-503.jpg", 0)
    with pytest.raises(DownloadFailed, match="stopped"):
        fetch_bytes(make_session(limits, stop=stop), server.url + "/always-503.jpg", limits)
    assert server.hits["/always-503.jpg"] - before == 1  # the first answer, then no retry
