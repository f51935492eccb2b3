"""What every command module shares: the context settings, the two consoles (results on stdout,
progress and messages on stderr), the error-to-exit-code mapping, progress bars and the report
printers used by more than one command.

Exit codes: 0 success; 1 an error (message on stderr); 2 bad usage; 3 finished but some items
failed; 75 (EX_TEMPFAIL) a server asked us to stop (429) or the disk is full: run again later, it
resumes; 130 interrupted (resumable).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from ..errors import DiskFull, VitrinaError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

ProgressCallback = Callable[[int, int], None]


def stderr():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@contextmanager
def errors() -> Iterator[None]:
    """VitrinaError → its message on stderr and exit 1 (75 for a full disk); other errors propagate."""
    try:
        yield
    except VitrinaError as e:
        stderr().print(f"[bold red]Error:[/] {escape(str(e))}", markup=True, highlight=False)
        sys.exit(75 if isinstance(e, DiskFull) else 1)  # a full disk: free space and try again


def escape(text: str) -> str:
    """``text`` shown as is in rich markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def echo_json(data: Any, *, indent: int | None = 2, ensure_ascii: bool = False) -> None:
    """``data`` as JSON on stdout (each command keeps the ``indent`` / ``ensure_ascii`` it always had)."""
    click.echo(json.dumps(data, ensure_ascii=ensure_ascii, indent=indent))


@contextmanager
def progress_bars(console: Any, quiet: bool):  # type: ignore[no-untyped-def]
    """Two bars, items found and embedded: yields (on_scan, on_embed), or (None, None) when quiet."""
    if quiet:
        yield None, None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            speed = task.finished_speed or task.speed
            return super().render(task) if speed is None else __import__("rich.text").text.Text(f"{speed:,.1f} img/s")

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        Rate(""),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        state: dict[str, Any] = {}

        def on_scan(done: int, total: int) -> None:
            if "scan" not in state:
                state["scan"] = progress.add_task("Items found", total=None)
            progress.update(state["scan"], completed=done)

        def on_embed(done: int, total: int) -> None:
            if "scan" in state:
                progress.update(state["scan"], total=progress.tasks[0].completed)
            if "embed" not in state:
                state["embed"] = progress.add_task("Embedding", total=total)
            progress.update(state["embed"], completed=done, total=total)

        yield on_scan, on_embed


@contextmanager
def embed_progress(console: Any, quiet: bool) -> Iterator[ProgressCallback | None]:
    """The embedding bar of ``progress_bars``, shown only once embedding starts: a run that stops
    before (an ingest cut short by a ban) prints its message without an empty bar above it."""
    if quiet:
        yield None
        return
    with ExitStack() as stack:
        bar: list[Any] = []

        def on_embed(done: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress_bars(console, quiet))[1])
            bar[0](done, total)

        yield on_embed


@contextmanager
def rows_progress(console: Any, quiet: bool, label: str) -> Iterator[ProgressCallback | None]:
    """One bar of rows done: yields its callback, or None when quiet."""
    if quiet:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def target_of(coll: Any) -> str:
    """How to name ``coll`` in a command we suggest, so that copying it works from here: its name
    when that name leads to it (and is not also a folder here), else its absolute path, quoted."""
    import shlex

    from ..store import resolve_collection

    try:
        by_name = resolve_collection(coll.name)
    except VitrinaError:
        by_name = None
    here = Path(coll.name)
    if by_name == coll.path and (not here.is_dir() or here.resolve() == coll.path):
        return str(coll.name)
    return shlex.quote(str(coll.path))


def index_dict(report: Any) -> dict[str, Any]:
    """The index summary, with the problems of the source it read (symlink loops, unreadable documents)."""
    return {**report.to_dict(), "problems": list((report.ingest or {}).get("problems", []))}


def print_failures(console: Any, d: dict[str, Any]) -> None:
    """Failures by reason, then the first ten with their details."""
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(d["failed_by_reason"].items()))
    console.print(f"[yellow]Failed by reason[/]: {reasons}")
    for f in d["failures"][:10]:
        console.print(f"  [dim]{f['reason']}[/] {escape(f['detail'])}", markup=True, highlight=False)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def moved_text(d: dict[str, Any]) -> str:
    """ "N moved", with how many of them were recognised by their content (a renamed file)."""
    by_content = d.get("moved_by_content") or 0
    return f"{d['moved']} moved" + (f" ({by_content} recognised by content)" if by_content else "")


def print_report(console: Any, report: Any, target: str) -> None:
    d = index_dict(report)
    rate = f" ({d['images_per_second']} images/s)" if d["images_per_second"] else ""
    console.print(
        f"[bold]{escape(d['collection'])}[/] / space [bold]{escape(d['space'])}[/] ({escape(d['model'])}): "
        f"{d['embedded']} embedded{rate}, {d['new']} new, {d['changed']} changed, {d['updated']} with new metadata, {moved_text(d)}, {d['unchanged']} unchanged, "
        f"{d['removed']} removed, {d['failed']} failed in {d['seconds']:.1f} s"
    )
    settings, timings = d.get("settings") or {}, d.get("timings") or {}
    if d["embedded"] and settings:  # where the time went, to tune --workers / --decode / --batch-size
        crashed = (
            f", {d['decoder_crashes']} decoding processes died and were restarted" if d.get("decoder_crashes") else ""
        )
        console.print(f"[dim]{settings['device']}, batches of {settings['batch_size']}, {settings['workers']} decoding {settings['decode']}: "
                      f"decode {timings.get('decode', 0):.1f} s (all workers), model {timings.get('model', 0):.1f} s, write {timings.get('write', 0):.1f} s{crashed}[/]")  # fmt: skip
    compacted = d.get("compacted") or {}
    if compacted.get("rows"):
        freed = (
            f"{_size(compacted['bytes'])} freed on disk" if compacted["bytes"] else "the file keeps its allocated size"
        )
        console.print(f"compacted the vector file: {compacted['rows']} dead rows reclaimed, {freed}")
    elif compacted.get("asked"):
        console.print("compacted the vector file: nothing to reclaim (no re-embedded or removed rows)")
    if d["failed"]:
        print_failures(console, d)
        if d["failed"] > 10:
            console.print(f"  … and {d['failed'] - 10} more: vitrina info {escape(target)} --json")
    for problem in d["problems"][:10]:
        console.print(f"  [yellow]skipped[/] {escape(problem)}")
    if len(d["problems"]) > 10:
        console.print(f"  … and {len(d['problems']) - 10} more: add --json to see them")
    if d["interrupted"]:
        why = f" {escape(d['message'])}" if d.get("message") else ""
        console.print(f"[yellow]Interrupted.[/]{why} Run the same command again to carry on where it stopped.")
