"""Reading the words printed on the images: ocr."""

from __future__ import annotations

import sys
from typing import Any

import click

from ._common import CONTEXT, echo_json, errors, escape, rows_progress, stderr

ENGINE_HELP = "rapidocr (PP-OCR, reads text at any angle; the default) or tesseract (with --lang language packs)."
LANG_HELP = "Tesseract languages, e.g. nor+deu (+frk for Fraktur); each an apt package tesseract-ocr-LANG."


@click.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option("--engine", type=click.Choice(["rapidocr", "tesseract"]), help=ENGINE_HELP)
@click.option("--lang", help=LANG_HELP)
@click.option("--retry-failed", is_flag=True, help="Try again the images that failed before.")
@click.option("--reread", is_flag=True, help="Read every image again, even those read by this engine already.")
@click.option("--max-pixels", type=click.IntRange(1), help="Refuse images with more pixels than this (as index).")
@click.option(
    "--max-decode-mb", type=click.IntRange(1), help="Refuse images whose decoding needs more memory than this."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def ocr(collection: str, engine: str | None, lang: str | None, retry_failed: bool, reread: bool, max_pixels: int | None,
        max_decode_mb: int | None, as_json: bool, quiet: bool) -> None:  # fmt: skip
    """Read the words printed on every item's image (OCR), so that --keywords finds them.

    \b
    vitrina ocr maps                          # RapidOCR: names on maps, captions, labels
    vitrina ocr maps --engine tesseract --lang nor+deu
    vitrina search maps --keywords Trondhjem  # finds the map with that name printed on it

    Words are stored with their boxes, apart from the catalogue metadata. Re-running reads only
    new and changed images; an interrupted run resumes where it stopped. See docs/ocr.md."""
    from ..collection import open_collection
    from ..ocr.run import ocr_collection

    with errors():
        coll = open_collection(collection)
        err = stderr()
        with rows_progress(err, quiet, "Reading words") as on_read:
            report = ocr_collection(coll.path, engine=engine, lang=lang, retry_failed=retry_failed, reread=reread, max_pixels=max_pixels,
                              max_decode_bytes=max_decode_mb << 20 if max_decode_mb else None, progress=on_read)  # fmt: skip
        finish(report, coll.name, as_json)


def finish(report: Any, name: str, as_json: bool) -> None:
    """Print an OCR report (JSON or a summary) and exit as index does: 3 when some failed."""
    d = report.to_dict()
    if as_json:
        echo_json(d)
    else:
        err = stderr()
        rate = f", {report.seconds / report.megapixels:.2f} s per megapixel" if report.megapixels else ""
        err.print(f"[bold]{escape(name)}[/] ({escape(d['engine'])}): {d['read']} read, {d['words']} words, "
                  f"{d['unchanged']} unchanged, {d['failed']} failed in {d['seconds']:.1f} s{rate}")  # fmt: skip
        for f in d["failures"][:10]:
            err.print(f"  [dim]{f['reason']}[/] {escape(f['detail'])}", markup=True, highlight=False)
        if report.interrupted:
            err.print(f"[yellow]Interrupted.[/] {escape(report.message)} Run the same command again to carry on.")
    if report.interrupted:
        sys.exit(75 if report.message else 130)
    if report.failed:
        sys.exit(3)


def index_step(coll: Any, index_summary: dict[str, Any] | None, *, quiet: bool, failed: bool) -> None:
    """`index --ocr auto`: read the words after embedding, when an engine is installed
    (``index_summary``: the index's JSON summary, printed with the OCR's under "ocr")."""
    from ..errors import ConfigError
    from ..ocr import get_engine
    from ..ocr.run import ocr_collection

    err = stderr()
    try:
        engine = get_engine()
    except ConfigError as e:
        if index_summary is not None:
            echo_json({**index_summary, "ocr": {"skipped": str(e)}})
        else:
            err.print(f"[yellow]No OCR:[/] {escape(str(e))}")
        return
    with rows_progress(err, quiet, "Reading words") as on_read:
        report = ocr_collection(coll.path, engine=engine, progress=on_read)
    if index_summary is not None:
        echo_json({**index_summary, "ocr": report.to_dict()})
        d = report.to_dict()
        if report.interrupted or report.failed or failed:
            sys.exit(130 if report.interrupted and not d["message"] else 75 if report.interrupted else 3)
        return
    finish(report, coll.name, False)


COMMANDS = [ocr]
