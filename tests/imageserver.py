"""A real HTTP server on 127.0.0.1 for the scraper tests: good images and every bad case."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def good_image(i: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8))


def _bomb_png() -> bytes:
    """A real small PNG whose IHDR claims 50,000 x 50,000 pixels (CRC fixed so it parses)."""
    data = bytearray(_encode(Image.new("RGB", (8, 8), "red"), "PNG"))
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", 50_000, 50_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (80, 80), c) for c in ("red", "blue")]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


class ImageServer:
    """Routes: /good/N.jpg, /dup/N.png (same pixels as good N), and one route per failure mode."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        full = _encode(good_image(999), "JPEG")
        sixteen = Image.fromarray(np.arange(96 * 96, dtype=np.uint16).reshape(96, 96) * 7)  # a 16-bit grey PNG
        self.static = {
            "/html.jpg": (200, "image/jpeg", b"<!DOCTYPE html><html><body>404 not found</body></html>"),
            "/vector.svg": (200, "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>'),
            "/truncated.jpg": (200, "image/jpeg", full[: len(full) // 2]),
            "/bomb.png": (200, "image/png", _bomb_png()),
            "/anim.gif": (200, "image/gif", _animated_gif()),
            "/cmyk.jpg": (200, "image/jpeg", _encode(good_image(7).convert("CMYK"), "JPEG")),
            "/16bit.png": (200, "image/png", _encode(sixteen, "PNG")),
            "/photo.avif": (200, "image/avif", _encode(good_image(8), "AVIF")),
            "/empty.jpg": (200, "image/jpeg", b""),
            "/tiny.jpg": (200, "image/jpeg", _encode(good_image(3, size=16), "JPEG")),
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _send(self, h, status: int, ctype: str, body: bytes, headers: dict | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h) -> None:
        parsed = urlparse(h.path)
        path = parsed.path
        self.hits[path] = self.hits.get(path, 0) + 1
        n = self.hits[path]
        if path.startswith("/good/"):
            i = int(path.split("/")[-1].split(".")[0])
            return self._send(h, 200, "image/jpeg", _encode(good_image(i), "JPEG", quality=92))
        if path.startswith("/dup/"):  # the very pixels of /good/N.jpg, re-encoded as PNG
            i = int(path.split("/")[-1].split(".")[0])
            decoded = Image.open(io.BytesIO(_encode(good_image(i), "JPEG", quality=92))).convert("RGB")
            return self._send(h, 200, "image/png", _encode(decoded, "PNG"))
        if path in self.static:
            return self._send(h, *self.static[path])
        if path == "/404.jpg":
            return self._send(h, 404, "text/html", b"not found")
        if path == "/flaky.jpg":  # 500 once, then the image
            if n == 1:
                return self._send(h, 500, "text/plain", b"oops")
            return self._send(h, 200, "image/jpeg", _encode(good_image(500), "JPEG"))
        if path == "/retry-after.jpg":  # 429 with Retry-After once, then the image
            if n == 1:
                return self._send(h, 429, "text/plain", b"slow down", {"Retry-After": "1"})
            return self._send(h, 200, "image/jpeg", _encode(good_image(429), "JPEG"))
        if path == "/always-503.jpg":
            return self._send(h, 503, "text/plain", b"busy", {"Retry-After": "3600"})
        if path == "/loop":
            h.send_response(302)
            h.send_header("Location", "/loop")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if path == "/to-file":  # a redirect out of http(s)
            return self._send(h, 302, "text/plain", b"", {"Location": "file:///etc/passwd"})
        if path == "/short.jpg":  # declares more bytes than it sends, then closes the connection
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", "5000")
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(_encode(good_image(7), "JPEG")[:100])
            h.close_connection = True
            return None
        if path == "/slow.jpg":  # headers at once, then a byte every 0.3 s for far longer than the timeout
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            try:
                for _ in range(60):
                    h.wfile.write(b"\xff")
                    h.wfile.flush()
                    time.sleep(0.3)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        if path == "/search":  # a results page in the shape the Google engine parses
            q = parse_qs(parsed.query).get("q", [""])[0]
            links = "".join(
                f'<a href="/imgres?imgurl={self.url}/good/{100 + i}.jpg&amp;q={q}"><img src="data:image/gif;base64,R0lGOD"></a>'
                for i in range(6))
            more = f'<div style="height:3000px"></div><img src="{self.url}/good/200.jpg">'
            body = f"<html><body><h1>{q}</h1>{links}{more}</body></html>".encode()
            return self._send(h, 200, "text/html; charset=utf-8", body)
        return self._send(h, 404, "text/plain", b"no route")
