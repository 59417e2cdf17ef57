"""Download one image URL safely: timeouts, capped retries honouring Retry-After, a byte cap, the real
format sniffed from the bytes and fully decoded, a decompression-bomb limit, a minimum size, RGB output.

Every failure becomes a short reason string (``"HTTP 404"``, ``"HTML page, not an image"``,
``"animated image"`` ...) for the manifest; nothing here raises for a bad URL.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from dataclasses import dataclass

import requests
import urllib3
from PIL import Image, UnidentifiedImageError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..data.decode import pixel_sha256, to_8bit

__all__ = ["DownloadLimits", "Downloaded", "DownloadFailed", "make_session", "fetch_bytes", "decode_image",
           "network_problem", "short_error"]

_ALLOWED_FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO", "AVIF"}
USER_AGENT = "birdcls-scraper/0.1 (+https://pypi.org/project/birdcls)"


@dataclass(frozen=True)
class DownloadLimits:
    """How patient and how strict the downloader is."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0  # the whole body, however slowly it trickles in
    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000  # decompression-bomb limit (a 50,000 x 50,000 header is refused unread)
    min_size: int = 64  # shorter side in pixels
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 10.0  # longer Retry-After waits are cut to this


class DownloadFailed(Exception):
    """A URL that gave no usable image; ``str(exc)`` is the manifest's reason."""


STOPPED = "stopped (the scrape was interrupted)"  # never recorded: the scrape is gone by then


@dataclass
class Downloaded:
    """A decoded, validated image and the facts the manifest records about it."""

    image: Image.Image  # RGB
    sha256: str  # of the downloaded bytes
    pixel_sha256: str  # of the RGB pixels: equal for the same picture in two encodings
    format: str
    bytes: int

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


class _PoliteRetry(Retry):
    """urllib3's Retry, but a server's Retry-After never makes us wait longer than ``max_retry_after``, and a
    wait between attempts ends at once when ``stop`` is set (Ctrl-C: a scrape then stops within a moment,
    not after every download's remaining retries)."""

    max_retry_after = 10.0
    stop: threading.Event | None = None

    def get_retry_after(self, response):  # noqa: ANN001 - urllib3's signature
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.max_retry_after)

    def new(self, **kw):  # keep the cap and the stop on the copies urllib3 makes per attempt
        retry = super().new(**kw)
        retry.max_retry_after, retry.stop = self.max_retry_after, self.stop
        return retry

    def sleep(self, response=None) -> None:  # noqa: ANN001 - urllib3's signature
        seconds = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        seconds = self.get_backoff_time() if seconds is None else seconds
        if self.stop is None:
            time.sleep(max(0.0, seconds))
        elif self.stop.wait(max(0.0, seconds)):
            raise DownloadFailed(STOPPED)


def make_session(limits: DownloadLimits = DownloadLimits(), pool_size: int = 16,
                 stop: threading.Event | None = None) -> requests.Session:
    """A requests Session with capped retries (429/5xx, honouring Retry-After) and a redirect limit. Once
    ``stop`` is set, its downloads end at their next wait or chunk with :data:`STOPPED`."""
    retry = _PoliteRetry(total=limits.retries, connect=limits.retries, read=0, status=limits.retries, redirect=5,
                         backoff_factor=limits.backoff, status_forcelist=(429, 500, 502, 503, 504),
                         respect_retry_after_header=True, raise_on_status=False, allowed_methods=("GET",))
    retry.max_retry_after, retry.stop = limits.max_retry_after, stop
    session = requests.Session()
    session.birdcls_stop = stop
    session.max_redirects = 5
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def fetch_bytes(session: requests.Session, url: str, limits: DownloadLimits = DownloadLimits()) -> bytes:
    """GET ``url`` and return its body, or raise DownloadFailed with the reason."""
    if not url.lower().startswith(("http://", "https://")):  # schemes are case-insensitive
        raise DownloadFailed("not an http(s) URL")
    deadline = time.monotonic() + limits.total_timeout
    try:
        with session.get(url, timeout=(limits.connect_timeout, limits.read_timeout), stream=True) as resp:
            if resp.status_code != 200:
                raise DownloadFailed(f"HTTP {resp.status_code}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise DownloadFailed(f"too large ({int(declared)} bytes > {limits.max_bytes})")
            chunks, size = [], 0
            # read1 returns whatever one socket read brings, so a body trickling in under the read
            # timeout still meets the overall deadline.
            stop = getattr(session, "birdcls_stop", None)
            while chunk := resp.raw.read1(64 * 1024, decode_content=True):
                if stop is not None and stop.is_set():
                    raise DownloadFailed(STOPPED)
                size += len(chunk)
                if size > limits.max_bytes:
                    raise DownloadFailed(f"too large (> {limits.max_bytes} bytes)")
                if time.monotonic() > deadline:
                    raise DownloadFailed(f"timed out (body took over {limits.total_timeout:g}s)")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.TooManyRedirects:
        raise DownloadFailed("too many redirects") from None
    except requests.exceptions.RetryError as exc:
        raise DownloadFailed(f"gave up after retries ({_short(exc)})") from None
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError) as exc:
        raise DownloadFailed(f"timed out ({type(exc).__name__})") from None
    except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError) as exc:
        # the body ended before its declared length, or the connection dropped mid-body: worth another try
        raise DownloadFailed(f"connection broken ({type(exc).__name__})") from None
    except requests.exceptions.InvalidSchema as exc:
        if "no connection adapters" in str(exc).lower():  # the URL asked for was http(s): a redirect left it
            raise DownloadFailed("redirected to a URL that is not http(s) (file://, ftp://, ...)") from None
        # a socks5:// proxy without PySocks, say: the network set-up, worth another try once it is fixed
        raise DownloadFailed(f"network error ({network_problem(str(exc)) or short_error(str(exc), 80)})") from None
    except requests.RequestException as exc:
        raise DownloadFailed(f"network error ({network_problem(str(exc)) or type(exc).__name__})") from None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return "too many 429/5xx responses" if "too many" in text.lower() else type(exc).__name__


# How requests/urllib3, primp (under ddgs) and Chromium word a failed name lookup.
_DNS = re.compile(r"dns error|error resolving|failed to resolve|name or service not known|name resolution|"
                  r"nodename nor servname|getaddrinfo|no address associated|err_name_not_resolved", re.IGNORECASE)
_DNS_HOST = re.compile(r"""Name\("([^"]+?)\.?"\)|Failed to resolve '([^']+)'""")
# Connection-level failures after the lookup: (text fragment, lower case) -> short phrase.
_CONNECTION = (("connection refused", "connection refused"), ("err_connection_refused", "connection refused"),
               ("err_internet_disconnected", "no internet connection"), ("network is unreachable", "network unreachable"),
               ("err_address_unreachable", "host unreachable"), ("no route to host", "host unreachable"),
               ("connection reset", "connection reset"), ("err_connection_reset", "connection reset"),
               ("proxy", "proxy error"), ("certificate", "TLS certificate error"), ("ssl", "TLS error"),
               ("connecterror", "connection failed"), ("connect error", "connection failed"),
               ("failed to establish a new connection", "connection failed"), ("error sending request", "connection failed"),
               ("net::err_", "connection failed"))


def network_problem(text: str) -> str | None:
    """A short phrase for a connection-level failure described by an exception's ``text``, else None.

    Example:
        >>> network_problem("Failed to resolve 'example.invalid' ([Errno -2] Name or service not known)")
        'DNS lookup of example.invalid failed'
    """
    if _DNS.search(text):
        found = _DNS_HOST.search(text)
        host = next((g for g in found.groups() if g), None) if found else None
        return f"DNS lookup of {host} failed" if host else "DNS lookup failed"
    low = re.sub(r"https?://\S+|url: \S+", "", text).lower()  # a host or path named "proxy" or "ssl" is no clue
    return next((phrase for fragment, phrase in _CONNECTION if fragment in low), None)


def short_error(text: str, limit: int = 100) -> str:
    """An exception's text as one readable line of at most ``limit`` characters, cut between words.

    A chained message (``outer > inner > root cause``, as primp writes them) keeps its root cause.
    """
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    wrapped = re.fullmatch(r"(\w+): \1\(([\"'])(.*)\2\)", line)  # "ConnectError: ConnectError('...')"
    if wrapped:
        line = wrapped.group(3)
    line = line.rsplit(" > ", 1)[-1].strip()
    if len(line) > limit:
        line = line[:limit - 4].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return line


def _not_an_image_reason(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if b"<svg" in data[:2048].lower():
        return "SVG, not a raster image"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "HTML page, not an image"
    if head.startswith(b"<") or head.startswith(b"{"):
        return "text, not an image"
    return "unknown format, not an image"


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB for every mode a web image comes in: 16-bit grey scaled down, transparency over white."""
    im = to_8bit(im)  # 16/32-bit grey: scaled, not clipped to white
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        return background
    return im.convert("RGB")


def decode_image(data: bytes, limits: DownloadLimits = DownloadLimits()) -> Downloaded:
    """Validate and decode downloaded bytes into an RGB image, or raise DownloadFailed with the reason."""
    if not data:
        raise DownloadFailed("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DownloadFailed(_not_an_image_reason(data)) from None
    except Image.DecompressionBombError:
        raise DownloadFailed("decompression bomb (too many pixels)") from None
    except OSError as exc:
        raise DownloadFailed(f"corrupt image header ({_short(exc)})") from None
    if im.format not in _ALLOWED_FORMATS:
        raise DownloadFailed(f"unsupported format {im.format}")
    if im.width * im.height > limits.max_pixels:
        raise DownloadFailed(f"decompression bomb ({im.width}x{im.height} pixels > {limits.max_pixels})")
    if getattr(im, "is_animated", False) and getattr(im, "n_frames", 1) > 1 and im.format != "MPO":
        raise DownloadFailed("animated image")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DownloadFailed(f"truncated or corrupt ({str(exc)[:60] or type(exc).__name__})") from None
    except Image.DecompressionBombError:
        raise DownloadFailed("decompression bomb (too many pixels)") from None
    if min(im.size) < limits.min_size:
        raise DownloadFailed(f"too small ({im.width}x{im.height} < {limits.min_size} px)")
    fmt = im.format
    rgb = _to_rgb(im)
    return Downloaded(rgb, hashlib.sha256(data).hexdigest(), pixel_sha256(rgb), fmt, len(data))
