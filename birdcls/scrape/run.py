"""Scrape images for each class into ``OUT/<label>/``, with a manifest, resumable.

For each class it keeps asking the engine for more results until the class has ``per_class`` valid,
unique images or the engine runs dry, and says which. Downloads run in a bounded thread pool; every URL
tried becomes a manifest row (kept, duplicate, rejected with its reason, or a network error).
A search that fails (no network, a rate limit) stops that class with a one-line reason; a run in which
no class got a single image raises :class:`BirdclsError` naming the problem and the fix.

Example (``make_engine`` builds the engine by its ``--engine`` name: ddg, bing, google, or urls with a file):
    >>> from birdcls.scrape import make_engine
    >>> report = scrape_classes(["cockatoo", "black-kite=black kite bird"], "data/raw", make_engine("ddg"),
    ...                         per_class=100)  # doctest: +SKIP
    >>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_path
from ..errors import BirdclsError, check_int
from .download import Downloaded, DownloadFailed, DownloadLimits, decode_image, fetch_bytes, make_session
from .engines import EngineError, ImageSearchEngine, UrlListEngine
from .manifest import MANIFEST_NAME, Manifest

__all__ = ["ClassSpec", "parse_class_spec", "scrape_classes", "ScrapeReport", "ClassResult"]


@dataclass(frozen=True)
class ClassSpec:
    label: str
    query: str


def slugify(text: str) -> str:
    """A filesystem-safe label: lower case ASCII words joined by '-'."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_class_spec(spec: str) -> ClassSpec:
    """``"label=query"`` or just ``"query"`` (the label is then a slug of the query)."""
    label, sep, query = spec.partition("=")
    if not sep:
        label, query = spec, spec
    if not label.strip() or not query.strip():
        raise BirdclsError(f"class '{spec}' has an empty label or query: write 'label=query' or just 'query'")
    label, query = slugify(label), query.strip()
    if not label:  # the label is a folder name of ASCII letters and digits: "鸟" leaves nothing
        raise BirdclsError(f"class '{spec}' gives no folder name (labels are ASCII letters, digits and '-'): write "
                           f"'label=query', e.g. 'bird={query}'")
    return ClassSpec(label, query)


@dataclass
class ClassResult:
    label: str
    query: str
    kept: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    outcome: str = ""  # "complete", "engine ran dry", "rate limited", "engine unreachable", "search failed" ...
    error: str = ""  # the engine's one-line message when a failed search stopped this class

    @property
    def problem(self) -> str:
        """Why this class has no image, or stopped early on a failed search ("" when neither)."""
        if self.error:
            return self.error
        if self.kept:
            return ""
        if self.rejected or self.duplicates:
            return f"none of the {sum(self.rejected.values()) + self.duplicates} URLs tried gave a new image " \
                   f"({_reasons(self.rejected, self.duplicates)})"
        return "the engine returned no image results"


def _reasons(rejected: Counter, duplicates: int = 0, top: int = 3) -> str:
    counts = rejected + Counter({"duplicate": duplicates})
    shown = "; ".join(f"{reason}: {n}" for reason, n in counts.most_common(top))
    return shown + ("; ..." if len(counts) > top else "")


@dataclass
class ScrapeReport:
    out: Path
    classes: list[ClassResult]
    manifest: Path | None = None  # OUT/manifest.jsonl once a URL has been tried, else None

    def table(self) -> str:
        """One row per class, the rejection reasons, then a line for each class that got nothing or stopped early."""
        width = max([len(c.label) for c in self.classes] + [5])
        lines = [f"{'class':<{width}}  {'kept':>5}  {'dups':>5}  {'rejected':>8}  outcome"]
        for c in self.classes:
            lines.append(f"{c.label:<{width}}  {c.kept:>5}  {c.duplicates:>5}  {sum(c.rejected.values()):>8}  {c.outcome}")
        reasons = Counter()
        for c in self.classes:
            reasons.update(c.rejected)
        if reasons:
            lines.append("rejected by reason: " + "; ".join(f"{r}: {n}" for r, n in reasons.most_common()))
        for c in self.classes:
            if c.problem:
                lines.append(f"{c.label}: {'NO IMAGES' if not c.kept else 'stopped early'}: {c.problem}")
        return "\n".join(lines)


# Failures worth another try on a re-run; every other outcome is final for that URL.
_TRANSIENT = ("network error", "timed out", "connection broken", "gave up after retries", "HTTP 5", "HTTP 429")
CLASS_FULL = "class already full"  # downloaded beside the wave that filled the class: usable by a larger --per-class


REMOVED_EARLIER = "removed earlier"  # the reason a download is refused whose pixels the user took out


class _State:
    """What the manifest already holds: URLs tried, pixel hashes kept, kept count per label, and the pixel
    hashes of images kept once and gone since (quarantined by clean, deleted, moved by split --move): the
    same image found again, under another URL, must not come back."""

    def __init__(self, manifest: Manifest, out: Path):
        self.tried: set[str] = set()
        self.pixels: dict[str, str] = {}
        self.removed: dict[str, str] = {}
        self.kept: Counter = Counter()
        for row in manifest.rows():
            reason = str(row.get("reason") or "")
            if not reason.startswith(_TRANSIENT) and reason != CLASS_FULL:
                self.tried.add(row.get("url"))
            if row.get("status") != "kept" or not row.get("file"):
                continue
            if (out / row["file"]).is_file():
                self.pixels[row["pixel_sha256"]] = row["file"]
                self.kept[row["label"]] += 1
            else:
                self.removed[row["pixel_sha256"]] = row["file"]
        for pixel in self.pixels:  # put back (clean --undo) after being removed: kept, not refused
            self.removed.pop(pixel, None)


def _fetch_one(session, url: str, limits: DownloadLimits):
    try:
        return decode_image(fetch_bytes(session, url, limits), limits)
    except DownloadFailed as exc:
        return str(exc)


def _save(img, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        img.save(tmp, format="JPEG", quality=95)


def scrape_classes(classes: list[str | ClassSpec], out: str | os.PathLike, engine: ImageSearchEngine,
                   per_class: int = 100, limits: DownloadLimits = DownloadLimits(), workers: int = 8,
                   delay: float = 1.0, max_pages: int = 20, progress: str | bool = "none") -> ScrapeReport:
    """Fill ``out/<label>/`` with up to ``per_class`` valid, unique images per class; resumable. ``progress``:
    ``auto``, ``bars``, ``lines`` or ``none``, one bar (or line) per class on stderr."""
    import sys

    from .._terminal import progress_mode, with_progress

    if isinstance(progress, bool):  # the earlier API's on/off
        progress = "auto" if progress else "none"
    mode = progress_mode(progress, sys.stderr)
    check_int(per_class, "per_class (--per-class)", 1)
    check_int(workers, "workers (--workers)", 1)
    check_int(max_pages, "max_pages", 1)
    check_int(limits.min_size, "min_size (--min-size)", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
        raise BirdclsError(f"delay (--delay) must be 0 or more seconds, got {delay!r}")
    specs = [c if isinstance(c, ClassSpec) else parse_class_spec(c) for c in classes]
    if not specs:
        raise BirdclsError("name at least one class, e.g. birdcls scrape \"cockatoo\" \"black-kite=black kite bird\"")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise BirdclsError(f"two classes share a label ({', '.join(sorted({x for x in labels if labels.count(x) > 1}))}): "
                           "give them distinct labels with label=query")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BirdclsError(f"--out {out} is a file: choose a folder")
    inside = next((p for p in out.resolve().parents if _is_scrape_manifest(p / MANIFEST_NAME)), None)
    if inside is not None:
        raise BirdclsError(f"--out {out} is inside {inside}, another scrape's output (it has {MANIFEST_NAME}): its "
                           "folders are classes; choose a folder outside it")
    if isinstance(engine, UrlListEngine):
        engine.check_labels(specs)
    created = [p for p in (out, *out.parents) if not p.exists()]  # out first, then the parents it needed
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out / MANIFEST_NAME)
    state = _State(manifest, out)
    stop = threading.Event()
    session = make_session(limits, pool_size=workers, stop=stop)
    results = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                job = _Job(out, engine, per_class, limits, pool, workers, session, manifest, state, delay, max_pages)
                for spec in specs:
                    result = ClassResult(spec.label, spec.query, kept=state.kept[spec.label])
                    results.append(result)
                    waves = _scrape_class(spec, job, result)
                    for _ in with_progress(waves, per_class - result.kept, mode, spec.label, "images", count=int):
                        pass
            except KeyboardInterrupt:  # downloads waiting to retry, or reading a body, end now: the pool's exit
                stop.set()             # does not wait out their Retry-After sleeps
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    except KeyboardInterrupt:
        _remove_empty(created)
        raise
    finally:
        close = getattr(engine, "close", None)
        if close:
            close()
    report = ScrapeReport(out, results, manifest.path if manifest.path.is_file() else None)
    if not any(r.kept for r in results):
        _remove_empty(created)
        raise BirdclsError(_nothing_kept(report, engine))
    return report


def _is_scrape_manifest(path: Path) -> bool:
    """Whether ``path`` is a scrape's manifest (its first row a URL tried for a label), not another tool's
    manifest.jsonl (speech and video datasets use the name)."""
    try:
        with path.open(encoding="utf-8") as fh:
            row = json.loads(fh.readline())
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and {"url", "label", "status"} <= row.keys()


def _remove_empty(created: list[Path]) -> None:
    """Leave no empty folder behind that looks like a result, nor the new parents made for it (``created``:
    the output folder first, then its parents); one that holds anything stays, and so do those above it."""
    for folder in created:
        if not folder.is_dir() or any(folder.iterdir()):
            break
        folder.rmdir()


def _nothing_kept(report: ScrapeReport, engine: ImageSearchEngine) -> str:
    """The one-line error for a run in which no class got a single image: what went wrong and the fix."""
    results = report.classes
    errors = list(dict.fromkeys(r.error for r in results if r.error))
    rejected = sum((r.rejected for r in results), Counter())
    duplicates = sum(r.duplicates for r in results)
    if not errors and not rejected and not duplicates:
        return (f"{engine.name} returned no image results for any class: check the queries and the network, "
                "or try another --engine")
    parts = []
    if errors:
        others = f" (and {len(errors) - 1} other search error(s))" if len(errors) > 1 else ""
        parts.append(errors[0] + others)
    if rejected or duplicates:
        tried = sum(rejected.values()) + duplicates
        where = f"; {report.manifest} has each URL's reason" if report.manifest else ""
        if rejected and all(reason.startswith(("network error", "timed out", "connection broken")) for reason in rejected):
            fix = "check the network connection, then re-run the same command (it retries those URLs)"
        elif rejected and all(reason.startswith(_TRANSIENT) for reason in rejected):
            fix = "the servers failed or refused: re-run the same command later (it retries those URLs)"
        elif isinstance(engine, UrlListEngine):
            fix = "check the URLs in --urls-file"
        else:
            fix = "try other queries or another --engine"
        parts.append(f"none of the {tried} image URLs tried gave a new image ({_reasons(rejected, duplicates)}): "
                     f"{fix}{where}")
    return "no class got a single image: " + "; ".join(parts)


@dataclass
class _Job:
    """What every class of one scrape shares: where to, from which engine, the limits and the download pool."""

    out: Path
    engine: ImageSearchEngine
    per_class: int
    limits: DownloadLimits
    pool: ThreadPoolExecutor
    workers: int
    session: Any
    manifest: Manifest
    state: _State
    delay: float
    max_pages: int


def _scrape_class(spec: ClassSpec, job: _Job, result: ClassResult) -> Iterator[int]:
    """Fill one class into ``result``, page by page; yields the images each wave of downloads kept (what the
    progress bar counts)."""
    engine, state, per_class = job.engine, job.state, job.per_class
    query = spec.label if isinstance(engine, UrlListEngine) and spec.label in engine.by_label else spec.query
    page = 0
    while result.kept < per_class:
        page += 1
        if page > job.max_pages:
            result.outcome = f"stopped after {job.max_pages} result pages"
            return
        if page > 1 and job.delay:
            time.sleep(job.delay)  # polite between search calls
        try:
            urls = engine.search(query, page)
        except EngineError as exc:
            result.outcome, result.error = exc.kind, str(exc)
            return
        fresh = [u for u in dict.fromkeys(urls) if u not in state.tried]
        if not fresh:
            result.outcome = "engine ran dry"
            return
        for url in fresh:
            state.tried.add(url)
        # Fetch in waves sized to what is still missing, so a class stops near per_class.
        while fresh and result.kept < per_class:
            size = max(job.workers, per_class - result.kept)
            wave, fresh = fresh[:size], fresh[size:]
            before = result.kept
            for url, got in zip(wave, job.pool.map(lambda u: _fetch_one(job.session, u, job.limits), wave)):
                _record(url, got, spec, job, result)
            yield result.kept - before
    result.outcome = "complete"


def _record(url: str, got: Downloaded | str, spec: ClassSpec, job: _Job, result: ClassResult) -> None:
    import imagehash

    engine, manifest, state, per_class = job.engine, job.manifest, job.state, job.per_class
    row = {"url": url, "query": spec.query, "engine": engine.name, "label": spec.label, "time": time.time()}
    if isinstance(got, str):
        result.rejected[got.split(" (")[0]] += 1
        manifest.append({**row, "status": "rejected", "reason": got})
        return
    facts = {"sha256": got.sha256, "pixel_sha256": got.pixel_sha256, "phash": str(imagehash.phash(got.image)),
             "width": got.width, "height": got.height, "bytes": got.bytes}
    if got.pixel_sha256 in state.pixels:
        result.duplicates += 1
        manifest.append({**row, **facts, "status": "duplicate", "reason": f"same pixels as {state.pixels[got.pixel_sha256]}"})
        return
    if got.pixel_sha256 in state.removed:
        result.rejected[REMOVED_EARLIER] += 1
        manifest.append({**row, **facts, "status": "rejected",
                         "reason": f"{REMOVED_EARLIER}: same pixels as {state.removed[got.pixel_sha256]}, no longer in "
                                   "the dataset (clean, or deleted)"})
        return
    if result.kept >= per_class:
        manifest.append({**row, **facts, "status": "rejected", "reason": CLASS_FULL})
        return
    rel = f"{spec.label}/{got.pixel_sha256[:20]}.jpg"
    _save(got.image, job.out / rel)
    state.pixels[got.pixel_sha256] = rel
    result.kept += 1
    manifest.append({**row, **facts, "file": rel, "status": "kept", "reason": ""})
