"""``birdcls clean DATA --auto``: run the checks, quarantine what they flag, log it, report it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import Interrupted, interrupt_exit_code
from .checks import CheckReport, CleanConfig, _quiet_large_images, find_issues
from .quarantine import Quarantine

__all__ = ["clean_auto", "undo_clean", "AutoCleanResult"]


@dataclass
class AutoCleanResult:
    """What ``clean_auto`` did: ``moved`` files quarantined (with ``dry_run``: that would have been) and
    ``reported`` flags that move nothing (labelling questions)."""

    check: CheckReport
    moved: int
    reported: int
    run: str
    report_png: Path | None = None
    report_html: Path | None = None
    dry_run: bool = False

    def table(self) -> str:
        qdir = self.check.data / ".quarantine"
        files = f"{self.moved} file{'s' if self.moved != 1 else ''}"
        if self.dry_run:
            done = f"would move {files} to {qdir} (dry run: nothing moved)"
        elif self.moved:
            done = f"moved {files} to {qdir} (run {self.run}; `birdcls clean {self.check.data} --undo` puts them back)"
        else:
            done = "nothing to quarantine"
        lines = [self.check.table(), f"{done}; {self.reported} reported only"]
        if self.report_png:
            lines.append(f"contact sheet: {self.report_png}; list: {self.report_html}")
        return "\n".join(lines)


def _write_report(result: AutoCleanResult, data: Path) -> None:
    import html

    from .._io import write_text_atomic
    from .._plots import contact_sheet

    qdir = data / ".quarantine"
    cells = []
    for f in result.check.flags[:48]:
        shown = f.path if f.path.exists() else qdir / f.path.relative_to(data)
        cells.append((shown, f"{f.path.parent.name}/{f.path.name}"[-30:] + f"\n{f.reason}", f.move))
    with _quiet_large_images():
        result.report_png = contact_sheet(cells, qdir / f"report-{result.run}.png",
                                          f"flagged by birdcls clean ({len(result.check.flags)})", empty="nothing flagged")
    moved = "to quarantine (dry run)" if result.dry_run else "quarantined"
    rows = "".join(f"<tr><td>{html.escape(str(f.path.relative_to(data)))}</td><td>{html.escape(f.reason)}</td>"
                   f"<td>{html.escape(f.detail)}</td><td>{moved if f.move else 'reported'}</td></tr>"
                   for f in result.check.flags)
    page = (f"<!doctype html><meta charset=utf-8><title>birdcls clean {result.run}</title>"
            f"<h1>birdcls clean: {len(result.check.flags)} of {result.check.n_images} images flagged</h1>"
            f"<p><img src='report-{result.run}.png' style='max-width:100%'></p>"
            f"<table border=1 cellpadding=4><tr><th>file</th><th>reason</th><th>detail</th><th>action</th></tr>{rows}</table>")
    result.report_html = write_text_atomic(qdir / f"report-{result.run}.html", page)


def clean_auto(data: str | os.PathLike, config: CleanConfig = CleanConfig(), report: bool = False,
               dry_run: bool = False, progress: str = "none") -> AutoCleanResult:
    """Quarantine every file the checks flag (never delete); log each move; optionally write a report.
    ``progress`` (``auto``, ``bars``, ``lines`` or ``none``, on stderr) shows the checks' hashing.

    With ``dry_run`` nothing moves and ``moved`` counts what would have (the report is still written).
    """
    data = Path(data)
    check = find_issues(data, config, progress=progress)
    quarantine = Quarantine(data, source="auto")
    to_move = [flag for flag in check.flags if flag.move and flag.path.is_file()]
    for flag in to_move:  # a file that cannot be logged is refused before any moves, not half-way
        quarantine.relative(flag.path)
    moved = 0
    try:
        for flag in to_move:
            if not dry_run:
                quarantine.quarantine(flag.path, f"{flag.reason} ({flag.detail})")
            moved += 1
    except KeyboardInterrupt as exc:
        if dry_run or not moved:
            raise
        flagged = sum(1 for f in check.flags if f.move)
        raise Interrupted(f"interrupted after quarantining {moved} of {flagged} flagged files, each move logged: "
                          f"`birdcls clean {data} --undo` moves them back; `--auto` again finishes the job",
                          interrupt_exit_code(exc)) from None
    result = AutoCleanResult(check, moved, sum(1 for f in check.flags if not f.move), quarantine.run, dry_run=dry_run)
    if report:
        _write_report(result, data)
    return result


def undo_clean(data: str | os.PathLike, scope: str = "run") -> int:
    """Move back what the last run (or ``all`` runs) quarantined; return how many decisions were undone."""
    return len(Quarantine(data).undo(scope))
