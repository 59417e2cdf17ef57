"""Image search engines behind one small interface: ``search(query, page) -> [image URLs]``.

- ``ddg`` / ``bing``: DuckDuckGo and Bing image search through the maintained ``ddgs`` package.
- ``google``: Google Images in headless Chromium driven by Selenium (the reports' method); the
  results page is parsed for the full-size image links (``imgurl=``) and plain ``<img>`` sources.
- ``urls``: the user's own lists, a CSV (``label,url``) or text file (``label url`` or bare URLs).

An engine returns ``[]`` when it has nothing more for a query ("ran dry") and raises an
:class:`EngineError` when the search itself fails, so the caller can stop that class with a one-line
reason: :class:`EngineRateLimited` when the service refuses us, :class:`EngineUnreachable` when it
cannot be reached at all (no network, DNS, a refused connection).
"""

from __future__ import annotations

import csv
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote_plus, urljoin, urlparse

from ..errors import BirdclsError
from .download import network_problem, short_error

__all__ = ["ImageSearchEngine", "EngineError", "EngineRateLimited", "EngineUnreachable", "DDGSEngine",
           "GoogleSeleniumEngine", "UrlListEngine", "make_engine", "ENGINES"]

ENGINES = ("ddg", "bing", "google", "urls")


class EngineError(Exception):
    """A search that failed; ``str(exc)`` is one complete line naming the problem and the fix.

    ``kind`` is the short outcome the scrape report shows for the class it stopped.
    """

    kind = "search failed"

    @classmethod
    def failed(cls, engine: str, text: str) -> EngineError:
        """A failure that is neither a rate limit nor the network, from the underlying error's ``text``."""
        return cls(f"{engine} search failed ({short_error(text)}): re-run later (it resumes), or try another --engine")


class EngineRateLimited(EngineError):
    """The search service refused further queries for now; the message says what to do."""

    kind = "rate limited"


class EngineUnreachable(EngineError):
    """The search service could not be reached at all: no network, a failed DNS lookup, a refused connection."""

    kind = "engine unreachable"

    def __init__(self, engine: str, problem: str):
        super().__init__(f"{engine} could not be reached ({problem}): check the network connection, or use "
                         "--engine urls --urls-file FILE with your own image URLs; re-running the same command resumes")


class ImageSearchEngine(Protocol):
    name: str

    def search(self, query: str, page: int) -> list[str]:
        """Image URLs for ``query`` on results page ``page`` (1-based); [] once there are no more."""
        ...


class DDGSEngine:
    """DuckDuckGo or Bing image search via ``ddgs`` (``client_factory`` is the seam the tests use)."""

    def __init__(self, backend: str = "duckduckgo", per_page: int = 50, client_factory: Callable[[], Any] | None = None):
        self.backend, self.per_page = backend, per_page
        self.name = "ddg" if backend == "duckduckgo" else backend
        self._client_factory = client_factory

    def _client(self):
        if self._client_factory is not None:
            return self._client_factory()
        from ddgs import DDGS

        return DDGS(timeout=15)

    def search(self, query: str, page: int) -> list[str]:
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        try:
            results = self._client().images(query, max_results=self.per_page, page=page, backend=self.backend)
        except RatelimitException:
            raise EngineRateLimited(
                f"{self.name} is rate-limiting this machine (HTTP 403/202 'Ratelimit'): wait a few minutes and "
                "re-run the same command (it resumes), lower --per-class, or try --engine bing") from None
        except TimeoutException:
            raise EngineUnreachable(self.name, "no answer in time") from None
        except DDGSException as exc:
            # ddgs keeps only the text of the underlying error (primp's or its own), so classify by it.
            text = str(exc)
            if "no results" in text.lower():
                return []
            if problem := network_problem(text):
                raise EngineUnreachable(self.name, problem) from None
            if "ratelimit" in text.lower():
                raise EngineRateLimited(f"{self.name} is rate-limiting this machine: wait a few minutes and re-run "
                                        "the same command (it resumes), or try another --engine") from None
            raise EngineError.failed(self.name, text) from None
        return [r["image"] for r in results if isinstance(r, dict) and r.get("image")]


class GoogleSeleniumEngine:
    """Google Images in headless Chromium; each page scrolls the results further down.

    ``search_url`` must contain ``{query}``; tests point it at a local results page.
    """

    name = "google"

    def __init__(self, search_url: str = "https://www.google.com/search?tbm=isch&q={query}",
                 chromium: str | None = None, chromedriver: str | None = None, scroll_pause: float = 1.0):
        self.search_url, self.scroll_pause = search_url, scroll_pause
        self.chromium = chromium or shutil.which("chromium") or "/usr/bin/chromium"
        self.chromedriver = chromedriver or shutil.which("chromedriver") or "/usr/bin/chromedriver"
        self._driver = None
        self._query: str | None = None
        self._seen: list[str] = []

    def _start(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        if not Path(self.chromium).exists() or not Path(self.chromedriver).exists():
            raise BirdclsError("the google engine needs Chromium and its driver: apt-get install chromium "
                               "chromium-driver (or use --engine ddg/bing/urls)")
        options = webdriver.ChromeOptions()
        options.binary_location = self.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,2000"):
            options.add_argument(flag)
        return webdriver.Chrome(service=Service(self.chromedriver), options=options)

    def close(self) -> None:
        if self._driver is not None:
            self._driver.quit()
            self._driver = None

    def _collect(self) -> list[str]:
        from selenium.webdriver.common.by import By

        found: list[str] = []
        base = self._driver.current_url
        for a in self._driver.find_elements(By.CSS_SELECTOR, "a[href*='imgurl=']"):
            href = a.get_attribute("href") or ""
            target = parse_qs(urlparse(href).query).get("imgurl", [""])[0]
            if target:
                found.append(urljoin(base, target))
        for img in self._driver.find_elements(By.CSS_SELECTOR, "img"):
            src = img.get_attribute("data-iurl") or img.get_attribute("src") or ""
            if src.startswith(("http://", "https://")) and not re.search(r"/(logo|favicon|sprite)", src):
                found.append(src)
        return list(dict.fromkeys(found))

    def _open(self, url: str) -> None:
        from selenium.common.exceptions import WebDriverException

        try:
            self._driver.get(url)
        except WebDriverException as exc:  # Chromium reports a failed navigation as "net::ERR_..."
            text = exc.msg or str(exc)
            if "net::err_" in text.lower():
                problem = network_problem(text) or short_error(text)
                if problem == "DNS lookup failed":
                    problem = f"DNS lookup of {urlparse(url).hostname} failed"
                raise EngineUnreachable(self.name, problem) from None
            raise EngineError.failed(self.name, text) from None

    def search(self, query: str, page: int) -> list[str]:
        if self._driver is None:
            self._driver = self._start()
        if query != self._query or page == 1:
            self._open(self.search_url.format(query=quote_plus(query)))
            self._query, self._seen = query, []
            time.sleep(self.scroll_pause / 4)
        else:
            self._driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
            time.sleep(self.scroll_pause)
        urls = [u for u in self._collect() if u not in self._seen]
        self._seen += urls
        return urls


class UrlListEngine:
    """The user's own URL lists: ``label,url`` CSV rows, ``label url`` text lines, or bare URLs (one class)."""

    name = "urls"

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise BirdclsError(f"--urls-file {path} does not exist: pass a CSV of label,url rows or a text file")
        if not path.is_file():
            raise BirdclsError(f"--urls-file {path} is {'a folder' if path.is_dir() else 'not a regular file'}: pass "
                               "a CSV of label,url rows or a text file")
        self.path = path
        self.by_label: dict[str, list[str]] = {}
        self.unlabelled: list[str] = []
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # -sig: a byte-order mark is not in the label
        lines = text.splitlines()
        rows = csv.reader(lines) if path.suffix.lower() == ".csv" else (_text_row(ln) for ln in lines)
        for row in rows:
            row = [c.strip() for c in row if c.strip()]
            if not row or row[0].startswith("#") or [c.lower() for c in row] in (["label", "url"], ["label,url"]):
                continue  # blank, a comment, or the header
            if len(row) == 1:
                self.unlabelled.append(row[0])
            else:
                self.by_label.setdefault(row[0], []).append(row[-1])
        if not self.by_label and not self.unlabelled:
            raise BirdclsError(f"--urls-file {path} lists no URLs: one 'label,url' row (CSV) or 'label url' line each")

    def check_labels(self, specs: list) -> None:
        """Before any download: every class must find its URLs. A labelled file is matched by label (or query);
        bare URLs are one class's."""
        if not self.by_label:
            if len(specs) > 1:
                raise BirdclsError(f"--urls-file {self.path} lists bare URLs, which are one class's: label each one "
                                   f"('label,url' rows) for {len(specs)} classes, or name one class")
            return
        missing = [s.label for s in specs if s.label not in self.by_label and s.query not in self.by_label]
        if missing and not self.unlabelled:
            known = ", ".join(list(self.by_label)[:8]) + (", ..." if len(self.by_label) > 8 else "")
            raise BirdclsError(f"--urls-file {self.path} has no URLs for {', '.join(missing)}: its labels are {known}; "
                               "name classes by those labels, or add rows for them")

    def urls_for(self, label: str, query: str) -> list[str]:
        return self.by_label.get(label) or self.by_label.get(query) or self.unlabelled

    def search(self, query: str, page: int) -> list[str]:
        # The list is complete on page 1; the scraper asks with the label (see scrape_classes).
        return self.urls_for(query, query) if page == 1 else []


def _text_row(line: str) -> list[str]:
    """A text file's line: ``label url`` (the label may hold spaces: the URL is the last word), a bare URL,
    or a ``label,url`` row as in a CSV."""
    line = line.strip()
    words = line.rsplit(None, 1)
    if len(words) == 2 and words[1].lower().startswith(("http://", "https://")):
        return words
    row = _LABEL_COMMA_URL.match(line)  # at the first comma before the URL: the URL may hold commas
    return [row[1], row[2]] if row else words


_LABEL_COMMA_URL = re.compile(r"^(.*?)\s*,\s*(https?://\S+)$", re.IGNORECASE)


def make_engine(name: str, urls_file: str | Path | None = None, **kwargs: Any) -> ImageSearchEngine:
    if name not in ENGINES:
        raise BirdclsError(f"unknown engine '{name}': use one of {', '.join(ENGINES)}")
    if name == "urls":
        if urls_file is None:
            raise BirdclsError("--engine urls needs --urls-file F (CSV of label,url rows or a text file)")
        return UrlListEngine(urls_file)
    if name == "google":
        return GoogleSeleniumEngine(**kwargs)
    return DDGSEngine(backend="duckduckgo" if name == "ddg" else "bing", **kwargs)
