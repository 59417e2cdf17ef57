"""Scraping: image search engines, a safe downloader, a resumable manifest."""

from .download import DownloadLimits
from .engines import (
    ENGINES,
    DDGSEngine,
    EngineError,
    EngineRateLimited,
    EngineUnreachable,
    GoogleSeleniumEngine,
    UrlListEngine,
    make_engine,
)
from .run import ClassSpec, ScrapeReport, parse_class_spec, scrape_classes

__all__ = ["ENGINES", "ClassSpec", "DDGSEngine", "DownloadLimits", "EngineError", "EngineRateLimited",
           "EngineUnreachable", "GoogleSeleniumEngine", "ScrapeReport", "UrlListEngine", "make_engine",
           "parse_class_spec", "scrape_classes"]
