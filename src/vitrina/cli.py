"""The command line: parse, call the library, print. Results go to stdout, progress to stderr.

Exit codes: 0 success; 1 an error (message on stderr); 2 bad usage; 3 indexing finished but some
items failed (listed in the summary and in `vitrina info`); 75 (EX_TEMPFAIL) a server asked us to
stop (429) or the disk is full: run again later, it resumes; 130 interrupted (resumable).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import DiskFull, VitrinaError
from .options import click_options as search_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _stderr():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@contextmanager
def _errors():  # type: ignore[no-untyped-def]
    try:
        yield
    except VitrinaError as e:
        from rich.markup import escape

        _stderr().print(f"[bold red]Error:[/] {escape(str(e))}", markup=True, highlight=False)
        sys.exit(75 if isinstance(e, DiskFull) else 1)  # a full disk: free space and try again


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="vitrina")
def cli() -> None:
    """Search digitised heritage image collections by what they show.

    Collections live in $VITRINA_HOME (default ~/.local/share/vitrina); a COLLECTION argument
    is a name there, or a path."""


def _index_on_ray(
    coll: Any, src: str | None, address: str, *, max_decode_mb: int | None, quiet: bool, as_json: bool, **options: Any
) -> None:
    """`index --ray`: ingest here (the single writer), embed on the cluster, merge shards here."""
    try:
        from .ray_runner import index_on_ray
    except ImportError as e:
        raise click.UsageError(f"--ray needs Ray: pip install 'vitrina[ray]' ({e})") from e
    from .http import Fetcher

    # The workers fetch with this fetcher's settings, host rates set by the source included (loc.gov).
    http = Fetcher(cache_dir=coll.paths.http_cache)
    if src is not None:
        ingested = coll.ingest(src, limit=options.pop("limit"), fetcher=http)
    options.pop("limit", None)
    err = _stderr()
    if src is not None and ingested.interrupted:  # as a local run: nothing is embedded after a ban
        err.print(
            f"[yellow]Interrupted.[/] {_escape(ingested.message)} Run the same command again to carry on where it stopped."
        )
        sys.exit(75)
    with _progress(err, quiet) as (_, on_embed):
        report = index_on_ray(
            coll,
            address=address,
            progress=on_embed,
            max_decode_bytes=max_decode_mb << 20 if max_decode_mb else None,
            fetcher=http,
            **options,
        )
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, ensure_ascii=False, indent=2))
    else:
        err.print(
            f"{report.embedded} embedded, {report.failed} failed on {report.actors} Ray workers in {report.seconds:.1f} s ({report.parts} shards)"
        )
        if report.failed:
            err.print(
                f"[yellow]Failed by reason[/]: {', '.join(f'{r}: {n}' for r, n in sorted(d['failed_by_reason'].items()))}"
            )
            for f in d["failures"][:10]:
                err.print(f"  [dim]{f['reason']}[/] {_escape(f['detail'])}", markup=True, highlight=False)
        if report.interrupted:
            err.print(
                f"[yellow]Interrupted.[/] {_escape(report.message)} Run the same command again to carry on where it stopped."
            )
    if report.interrupted:
        sys.exit(75)
    if report.failed:
        sys.exit(3)


@cli.command(context_settings=CONTEXT)
@click.argument("source")
@click.option("-c", "--collection", help="Collection name or path (default: the folder's name).")
@click.option(
    "-m",
    "--model",
    help="Embedding model: hf:ORG/NAME, hf:/local/dir or mini. Default: the collection's model, else hf:openai/clip-vit-base-patch32 (downloaded on first use).",
)
@click.option(
    "--space", help="Name of the embedding space (default: from the model name). Several models can live side by side."
)
@click.option(
    "--batch-size", type=click.IntRange(1, 4096), help="Images per model call (default: 32 on a CPU, 256 on a GPU)."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Images decoded at once (default: 2 on a CPU; with a GPU, one per core but one). With --ray: decoding processes per actor (default: the cores a GPU actor can spare).",
)
@click.option(
    "--decode",
    type=click.Choice(["auto", "threads", "processes"]),
    default="auto",
    show_default=True,
    help="Decode in threads or in processes (which keep Pillow off the model's GIL); auto: processes when a GPU runs the model.",
)
@click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available).")
@click.option("--threads", type=click.IntRange(1, 256), help="PyTorch CPU threads.")
@click.option("--retry-failed", is_flag=True, help="Try again the images that failed before.")
@click.option("--reembed", is_flag=True, help="Drop this space's vectors and embed everything again.")
@click.option(
    "--compact",
    is_flag=True,
    help="Reclaim the rows of re-embedded and removed items now (done anyway once they pass a quarter of the file).",
)
@click.option(
    "--max-pixels", type=click.IntRange(1), help="Refuse images with more pixels than this (default 200M; 1G for JPEG)."
)
@click.option(
    "--max-decode-mb",
    type=click.IntRange(1),
    help="Refuse images whose decoding needs more memory than this (default 512, or $VITRINA_MAX_DECODE_MB).",
)
@click.option(
    "--limit", type=click.IntRange(1), help="Take at most this many items from a remote SOURCE (loc.gov, IIIF)."
)
@click.option(
    "--ray",
    "ray_address",
    metavar="auto|local|ADDRESS",
    help="Embed on a Ray cluster (the `ray` extra): auto = the running one, local = start one here. See docs/distributed.md.",
)
@click.option(
    "--workers-per-gpu",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="With --ray: embedder actors per GPU.",
)
@click.option(
    "--shard-dir",
    type=click.Path(file_okay=False),
    help="With --ray: where workers write shards; a folder every node can reach (default: the collection's shards/).",
)
@click.option(
    "--part-size", default=256, show_default=True, type=click.IntRange(1, 100_000), help="With --ray: items per shard."
)
@click.option(
    "--http-cache",
    type=click.Path(file_okay=False),
    help="With --ray: a download cache folder every node can reach (default: the collection's with --ray local, else none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index(source: str, collection: str | None, model: str | None, space: str | None, batch_size: int | None, workers: int | None, decode: str, device: str | None,
          threads: int | None, retry_failed: bool, reembed: bool, compact: bool, max_pixels: int | None, max_decode_mb: int | None, limit: int | None,
          ray_address: str | None, workers_per_gpu: int, shard_dir: str | None, part_size: int, http_cache: str | None, as_json: bool, quiet: bool) -> None:  # fmt: skip
    """Index SOURCE (a folder, urls:, iiif:, locgov: or alto:) into a collection, or bring an existing COLLECTION up to date.

    \b
    vitrina index ./scans --collection maps            # add the folder's images, embed them
    vitrina index ./scans --collection maps --model mini   # the offline model
    vitrina index maps                                 # embed whatever is still pending
    vitrina index ./projects/maps                      # the same, for a collection given by its path

    Re-running is cheap: unchanged files are skipped, changed ones re-embedded, removed ones
    dropped. An interrupted run resumes where it stopped."""
    from .collection import open_collection
    from .store import CollectionPaths, resolve_collection

    with _errors():
        src: str | None = source
        from .sources import SOURCES

        if collection is None and source.partition(":")[0] in SOURCES and source.partition(":")[0] != "folder":
            raise click.BadParameter("give --collection NAME for this source", param_hint="--collection")
        folder = Path(source).expanduser()
        if not source.startswith("folder:") and CollectionPaths(folder).is_collection():
            # `vitrina index ./maps`: SOURCE is a collection folder, not a folder of images.
            if collection is not None and resolve_collection(collection) != folder.resolve():
                raise click.BadParameter(f"{source!r} is a collection, not a folder of images: to bring it up to date, run "
                                         f"`vitrina index {source}`; to read its files as images anyway, give folder:{source}.", param_hint="SOURCE")  # fmt: skip
            collection, src = str(folder.resolve()), None
        elif collection is None:
            if folder.is_dir() or source.startswith("folder:"):
                collection = Path(source.removeprefix("folder:")).expanduser().resolve().name
            else:
                collection, src = source, None  # `vitrina index maps`: no new source
                if not CollectionPaths(resolve_collection(collection)).is_collection():
                    raise click.BadParameter(
                        f"{source!r} is neither a folder nor an existing collection.", param_hint="SOURCE"
                    )
        coll = open_collection(collection, create=True)
        err = _stderr()
        if ray_address:
            _index_on_ray(coll, src, ray_address, model=model, space=space, device=device, retry_failed=retry_failed, limit=limit, max_pixels=max_pixels,
                          max_decode_mb=max_decode_mb, workers_per_gpu=workers_per_gpu, shard_dir=shard_dir, part_size=part_size, http_cache=http_cache, quiet=quiet, as_json=as_json,
                          decoders=workers)  # fmt: skip
            return
        with _progress(err, quiet) as (on_scan, on_embed):
            report = coll.index(src, model=model, space=space, batch_size=batch_size, workers=workers, decode=decode, device=device, threads=threads,
                                retry_failed=retry_failed, reembed=reembed, compact=compact, max_pixels=max_pixels, progress=on_embed, on_scan=on_scan, limit=limit,
                                max_decode_bytes=max_decode_mb << 20 if max_decode_mb else None)  # fmt: skip
        if as_json:
            click.echo(json.dumps(_index_dict(report), ensure_ascii=False, indent=2))
        else:
            _print_report(err, report, _target(coll))
        if report.interrupted:
            sys.exit(75 if report.message else 130)
        if report.failed:
            sys.exit(3)


@contextmanager
def _progress(console: Any, quiet: bool):  # type: ignore[no-untyped-def]
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


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _target(coll: Any) -> str:
    """How to name ``coll`` in a command we suggest, so that copying it works from here: its name
    when that name leads to it (and is not also a folder here), else its absolute path, quoted."""
    import shlex

    from .store import resolve_collection

    try:
        by_name = resolve_collection(coll.name)
    except VitrinaError:
        by_name = None
    here = Path(coll.name)
    if by_name == coll.path and (not here.is_dir() or here.resolve() == coll.path):
        return str(coll.name)
    return shlex.quote(str(coll.path))


def _index_dict(report: Any) -> dict[str, Any]:
    """The index summary, with the problems of the source it read (symlink loops, unreadable documents)."""
    return {**report.to_dict(), "problems": list((report.ingest or {}).get("problems", []))}


def _print_report(console: Any, report: Any, target: str) -> None:
    d = _index_dict(report)
    rate = f" ({d['images_per_second']} images/s)" if d["images_per_second"] else ""
    console.print(
        f"[bold]{_escape(d['collection'])}[/] / space [bold]{_escape(d['space'])}[/] ({_escape(d['model'])}): "
        f"{d['embedded']} embedded{rate}, {d['new']} new, {d['changed']} changed, {d['updated']} with new metadata, {d['moved']} moved, {d['unchanged']} unchanged, "
        f"{d['removed']} removed, {d['failed']} failed in {d['seconds']:.1f} s"
    )
    settings, timings = d.get("settings") or {}, d.get("timings") or {}
    if d["embedded"] and settings:  # where the time went, to tune --workers / --decode / --batch-size
        crashed = (
            f", {d['decoder_crashes']} decoding processes died and were restarted" if d.get("decoder_crashes") else ""
        )
        console.print(f"[dim]{settings['device']}, batches of {settings['batch_size']}, {settings['workers']} decoding {settings['decode']}: "
                      f"decode {timings.get('decode', 0):.1f} s (all workers), model {timings.get('model', 0):.1f} s, write {timings.get('write', 0):.1f} s{crashed}[/]")  # fmt: skip
    if d["failed"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(d["failed_by_reason"].items()))
        console.print(f"[yellow]Failed by reason[/]: {reasons}")
        for f in d["failures"][:10]:
            console.print(f"  [dim]{f['reason']}[/] {_escape(f['detail'])}", markup=True, highlight=False)
        if d["failed"] > 10:
            console.print(f"  … and {d['failed'] - 10} more: vitrina info {_escape(target)} --json")
    for problem in d["problems"][:10]:
        console.print(f"  [yellow]skipped[/] {_escape(problem)}")
    if len(d["problems"]) > 10:
        console.print(f"  … and {len(d['problems']) - 10} more: add --json to see them")
    if d["interrupted"]:
        why = f" {_escape(d['message'])}" if d.get("message") else ""
        console.print(f"[yellow]Interrupted.[/]{why} Run the same command again to carry on where it stopped.")


@cli.command(context_settings=CONTEXT)
@click.argument("source")
@click.option("-c", "--collection", required=True, help="Collection name or path (created if new).")
@click.option("--limit", type=click.IntRange(1), help="Stop after this many items (loc.gov, IIIF).")
@click.option(
    "--images",
    help="alto: where the page images are: iiif:SERVICE-URL-TEMPLATE with {stem} (default: files beside the ALTO).",
)
@click.option(
    "--min-size",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="alto: smallest illustration side in pixels.",
)
@click.option(
    "--lang",
    default="en",
    show_default=True,
    help="IIIF: the language of titles and metadata given in several (en matches en-GB).",
)
@click.option("--alto", help="IIIF: cut illustrations out of each page's ALTO: 'auto' (the canvas's seeAlso/rendering links) or a URL template "
              "with {page}, {page:04d}, {canvas}, {canvas_name}, {manifest}, {manifest_name}.")  # fmt: skip
@click.option(
    "--check-type", is_flag=True, help="urls: ask each URL's content type (HEAD) and flag those that are not images."
)
@click.option(
    "--restart", is_flag=True, help="Harvest from the first page instead of resuming after the last stored one."
)
@click.option("--json", "as_json", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def ingest(source: str, collection: str, limit: int | None, images: str | None, min_size: int, lang: str, alto: str | None, check_type: bool,
           restart: bool, as_json: bool, quiet: bool) -> None:  # fmt: skip
    """Add the items of SOURCE to a collection, without embedding them yet; then `vitrina index COLLECTION`.

    \b
    vitrina ingest urls:p1_map_file_list.csv --collection maps
    vitrina ingest iiif:https://example.org/iiif/manifest.json --collection books
    vitrina ingest locgov:"https://www.loc.gov/maps/?q=sea+monster" --collection maps --limit 5000
    vitrina ingest alto:./pages --collection illustrations
    vitrina ingest iiif:https://api.nb.no/catalog/v1/iiif/ID/manifest --alto auto --collection figures
    vitrina index maps          # embeds what was ingested; re-running picks up where it stopped

    Harvesting is polite (per-host rate limits, loc.gov's stricter ones) and resumable: a run
    stopped by a kill or a 429 ban continues after the last stored page when run again."""
    from .collection import open_collection

    err = _stderr()
    with _errors():
        coll = open_collection(collection, create=True)
        with _progress(err, quiet) as (on_page, _):
            options: dict[str, Any] = {"lang": lang, "alto": alto, "check_type": check_type or None}
            report = coll.ingest(
                source, limit=limit, images=images, min_size=min_size, restart=restart, on_page=on_page, **options
            )
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, ensure_ascii=False, indent=2))
    else:
        resumed = " (resumed)" if d["resumed"] else ""
        err.print(f"[bold]{_escape(d['collection'])}[/] ← {_escape(d['source'])}{resumed}: {d['found']} items found "
                  f"({d['new']} new, {d['changed']} changed, {d['updated']} with new metadata, {d['moved']} moved, {d['unchanged']} unchanged, {d['removed']} removed) "
                  f"from {d['pages']} pages, {d['requests']} requests, in {d['seconds']:.1f} s")  # fmt: skip
        if d["skipped"]:
            err.print("  not ingested: " + ", ".join(f"{n} {_escape(kind)}" for kind, n in d["skipped"].items()))
        for problem in d["problems"][:10]:
            err.print(f"  [yellow]skipped[/] {_escape(problem)}")
        if len(d["problems"]) > 10:
            err.print(f"  … and {len(d['problems']) - 10} more: add --json to see them")
        if d["interrupted"]:
            err.print(f"[yellow]Stopped:[/] {_escape(d['message'])}")
        else:
            err.print(f"Next: vitrina index {_escape(_target(coll))}")
    if report.interrupted:
        sys.exit(75)  # EX_TEMPFAIL: try again later


@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("collection")
@click.argument("terms", nargs=-1, type=click.UNPROCESSED)
@search_options()  # -i/--image, --alpha, --where, --limit, --keywords, --keyword-weight ...: vitrina.options
@click.option(
    "--batch",
    "batch_file",
    type=click.File("r"),
    help="Run one query per line of this file (- for stdin); prints JSON lines.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the hits as JSON, with the query, the space and the model fingerprint.",
)
@click.option(
    "--csv",
    "as_csv",
    is_flag=True,
    help="Print the hits as CSV, each row with the query, the space and the model fingerprint.",
)
@click.option(
    "--exact", is_flag=True, help="Scan every vector even where an approximate index is built (see index-ann)."
)
@click.option(
    "--index",
    "index_target",
    help="Answer from a Qdrant copy made by `vitrina sync`: qdrant+http://HOST:PORT/NAME or qdrant:PATH#NAME.",
)
def search(collection: str, terms: tuple[str, ...], images: tuple[str, ...], alpha: float | None, where: tuple[str, ...], min_score: float | None,
           limit: int, offset: int, include_self: bool, space: str | None, batch_file: Any, as_json: bool, exact: bool = False, index_target: str | None = None,
           keywords: str = "", keyword_weight: float | None = None, fusion: str = "weighted", include_hidden: bool = False, as_csv: bool = False) -> None:  # fmt: skip
    """Search COLLECTION by text TERMS, by --image, by --keywords, or a mix.

    \b
    vitrina search maps "maps with sea monsters"
    vitrina search maps --image ./some-map.jpg
    vitrina search maps "more grayscale" --image ./a.jpg --alpha 0.7
    vitrina search maps "sea monster" "2:ship" "-0.5:colour"     # weights; negative pushes down
    vitrina search maps "harbour" --where "date>=1700" --where "date<1800" --min-score 0.2 --json
    vitrina search books --keywords "Bergen 1850"                # keyword ranking only (BM25)
    vitrina search books "whale" --keyword-weight 0.3             # CLIP + the same words as keywords, fused
    vitrina search books "a ship in a storm" --keywords "hval"    # CLIP for the picture, words for the OCR"""
    from .collection import open_collection
    from .query import Query

    unknown = [t for t in terms if t.startswith("--")]
    if unknown:
        raise click.UsageError(f"No such option: {unknown[0]}")
    with _errors():
        coll = open_collection(collection, index="exact" if exact else index_target or "auto")
        common: dict[str, Any] = {"alpha": alpha, "min_score": min_score, "limit": limit, "offset": offset, "include_self": include_self,
                                  "keywords": keywords, "keyword_weight": keyword_weight, "fusion": fusion, "include_hidden": include_hidden}  # fmt: skip
        if batch_file is not None:
            lines = [line.strip() for line in batch_file if line.strip()]
            queries = [Query.build(line.split("\t"), images, where=where, **common) for line in lines]
            for line, hits in zip(lines, coll.run(queries, space=space)):
                click.echo(json.dumps({"query": line, "hits": hits.to_list()}, ensure_ascii=False))
            return
        hits = coll.search(list(terms), list(images), where=where, space=space, **common)
        if as_json or as_csv:
            from .citable import hits_csv, provenance

            about = provenance(
                coll, space, {"terms": list(terms), "images": list(images), "where": list(where), **common}
            )
            if as_csv:
                click.echo(hits_csv(hits, about), nl=False)
                return
            click.echo(
                json.dumps(
                    {**about, "considered": hits.total_considered, "hits": hits.to_list()}, ensure_ascii=False, indent=2
                )
            )
            return
        if not hits:
            _stderr().print("No hits." + (" Try a lower --min-score." if min_score is not None else ""))
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False)
        columns = (("#", "right"), ("score", "right"), ("id", "left"), ("title", "left")) + (
            (("matched", "left"),) if keywords or keyword_weight else ()
        )
        for name, justify in columns:
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for hit in hits:
            row: list[str | Text] = [
                str(hit.rank),
                f"{hit.score:.3f}",
                Text(hit.id),
                Text(str(hit.metadata.get("title", ""))),
            ]
            if len(columns) > 4:
                snippet = Text()
                for part, matched in hit.snippet:
                    snippet.append(part, style="bold reverse" if matched else None)
                row.append(snippet)
            table.add_row(*row)
        _stdout().print(table)


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--check",
    is_flag=True,
    help="Also check the files for consistency (SQLite integrity, vector file lengths, no failed item with a vector, no zero or non-finite vector).",
)
@click.option("--json", "as_json", is_flag=True)
def info(collection: str, check: bool, as_json: bool) -> None:
    """Describe COLLECTION: items, failures by reason, embedding spaces, size on disk."""
    from .collection import open_collection

    with _errors():
        data = open_collection(collection).info(check=check)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    out = _stdout()
    out.print(f"[bold]{_escape(data['name'])}[/]  {_escape(data['path'])}  ({data['disk_bytes'] / 1e6:.1f} MB)")
    status = ", ".join(f"{k}: {v}" for k, v in sorted(data["by_status"].items()))
    out.print(f"items: {data['items']} ({status or 'none'})")
    for s in data["spaces"]:
        dead = f", {s['dead_rows']} superseded rows" if s["dead_rows"] else ""
        out.print(
            f"space [bold]{_escape(s['name'])}[/]: {s['vectors']} vectors, {_escape(s['model'])} ({s['dim']} dims{dead})"
        )
        out.print(f"  index: {_describe_index(s)}", highlight=False)
    if data["failed_by_reason"]:
        out.print("failed: " + ", ".join(f"{r}: {n}" for r, n in sorted(data["failed_by_reason"].items())))
        for f in data["failures"][:10]:
            out.print(f"  [dim]{f['reason']}[/] {_escape(f['detail'])}", highlight=False)
    pruned = data.get("pruned") or {}
    if pruned.get("hidden") or pruned.get("deleted"):
        out.print(
            f"pruned: {pruned['hidden']} hidden (vitrina prune --unhide), {pruned['deleted']} deleted, {pruned['bytes_saved'] / 1e6:.1f} MB saved"
        )
    if check:
        out.print("check: " + ("ok" if not data["problems"] else "; ".join(data["problems"])))
        if data["problems"]:
            sys.exit(1)


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "-w",
    "--where",
    multiple=True,
    help="Which items, e.g. 'kind=blank' (a classifier tag). Repeatable (all must hold).",
)
@click.option(
    "--hide", "action", flag_value="hide", default=True, help="Hide them from results (the default; reversible)."
)
@click.option(
    "--unhide", "action", flag_value="unhide", help="Show hidden items again (those matching --where, or all)."
)
@click.option(
    "--delete",
    "action",
    flag_value="delete",
    help="Delete them and their vectors for good (a later ingest skips them).",
)
@click.option("--json", "as_json", is_flag=True)
def prune(collection: str, where: tuple[str, ...], action: str, as_json: bool) -> None:
    """Take what is not an illustration out of COLLECTION's results.

    \b
    vitrina classify books --probe labels.csv --tag kind
    vitrina prune books --where "kind=blank"             # hidden; search --include-hidden shows them
    vitrina prune books --unhide --where "kind=blank"
    vitrina prune books --where "kind=blank" --delete    # with their vectors; space reclaimed"""
    from .collection import open_collection

    with _errors():
        out = open_collection(collection).prune(where, action=action)
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    done = {"hide": f"{out.get('changed', 0)} hidden", "unhide": f"{out.get('changed', 0)} shown again",
            "delete": f"{out.get('deleted', 0)} deleted, {out.get('bytes_saved', 0) / 1e6:.1f} MB saved"}[action]  # fmt: skip
    _stdout().print(f"{out['matched']} items matched; {done}.", highlight=False)


def _describe_index(s: dict[str, Any]) -> str:
    ann = s.get("ann")
    if not ann:
        return "exact (no approximate index; build one with vitrina index-ann)"
    if ann["status"] == "stale":
        return f"exact: the approximate index is stale ({ann['problem']}); rebuild it with vitrina index-ann"
    recall = ann.get("recall_at_10") or {}
    measured = ", ".join(f"{k} {v:.3f}" for k, v in recall.items() if k != "sample")
    behind = f", {ann['behind']} newer rows scanned exactly" if ann["behind"] else ""
    return f"{s['index']} ({ann['status']}{behind}; recall@10 {measured} on {int(recall.get('sample', 0))} sampled queries; {ann['bytes'] / 1e6:.1f} MB)"


@cli.command("index-ann", context_settings=CONTEXT)
@click.argument("collection")
@click.option("--space", help="Embedding space (default: the first).")
@click.option(
    "--structure",
    type=click.Choice(["ivf", "hnsw"]),
    help="IVF (default: fast to build, steady recall for text queries) or HNSW.",
)
@click.option(
    "--codes",
    type=click.Choice(["sq8", "fp16", "flat"]),
    help="Vector codes in the index: int8 (default), float16 or float32; hits are re-ranked from float32 anyway.",
)
@click.option(
    "--nlist",
    type=click.IntRange(16, 1 << 20),
    help="IVF lists (default 4·√rows). Fewer build faster: past ~5M rows on a few cores, 4096 takes minutes where the default takes hours.",
)
@click.option(
    "--rebuild", is_flag=True, help="Build from scratch instead of adding the rows appended since the last build."
)
@click.option("--threads", type=click.IntRange(1, 256), help="Build threads (default: all cores).")
@click.option(
    "--caption-queries",
    default=200,
    show_default=True,
    type=click.IntRange(0, 10000),
    help="Also measure recall on this many items' captions (or titles) embedded as text queries (loads the model; 0: skip).",
)
@click.option("--json", "as_json", is_flag=True)
def index_ann(collection: str, space: str | None, structure: str | None, codes: str | None, nlist: int | None, rebuild: bool, threads: int | None,
              caption_queries: int, as_json: bool) -> None:  # fmt: skip
    """Build or update the approximate search index of COLLECTION (needs pip install 'vitrina[ann]').

    A derived file beside the vectors: searches use it while it is fresh, with exact re-ranking,
    and fall back to an exact scan when it is stale or missing. Stopping a build at any moment
    leaves the previous index (or none)."""
    from .collection import open_collection

    with _errors():
        report = open_collection(collection).build_ann(space, structure=structure, codes=codes, nlist=nlist, rebuild=rebuild, threads=threads,
                                                       caption_queries=caption_queries)  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    how = "built" if report.rebuilt else f"added {report.added} rows to"
    recall = ", ".join(f"{k} {v:.3f}" for k, v in report.recall.items() if k != "sample")
    _stdout().print(f"{how} the {report.kind} index of space {_escape(report.space)}: {report.rows} rows, {report.bytes / 1e6:.1f} MB, "
                    f"{report.seconds:.1f} s; recall@10 {recall}", highlight=False)  # fmt: skip


@cli.command("sync", context_settings=CONTEXT)
@click.argument("collection")
@click.argument("target")
@click.option("--space", help="Embedding space (default: the first).")
@click.option(
    "--shards", type=click.IntRange(1), help="Shards when creating the Qdrant collection (a cluster: about 2 per node)."
)
@click.option("--replicas", type=click.IntRange(1), help="Replication factor when creating the Qdrant collection.")
@click.option("--json", "as_json", is_flag=True)
def sync_cmd(
    collection: str, target: str, space: str | None, shards: int | None, replicas: int | None, as_json: bool
) -> None:
    """Copy COLLECTION's vectors and metadata to Qdrant TARGET, incrementally (needs pip install 'vitrina[qdrant]').

    \b
    vitrina sync maps qdrant+http://localhost:6333/maps
    vitrina sync maps qdrant:/data/qdrant-local#maps        # the client's local mode (small collections, tests)
    vitrina search maps "sea monster" --index qdrant+http://localhost:6333/maps"""
    from .collection import open_collection
    from .index.qdrant import sync

    with _errors():
        coll = open_collection(collection)
        report = sync(coll._store, coll.space(space).name, target, shards=shards, replicas=replicas)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    _stdout().print(f"synced space {_escape(report.space)} to Qdrant collection {_escape(report.collection)}: {report.new} new, {report.changed} changed, "
                    f"{report.removed} removed, {report.unchanged} unchanged; {report.points} points", highlight=False)  # fmt: skip


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 to serve a network)."
)
@click.option("-p", "--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token", envvar="VITRINA_TOKEN", help="Allow write endpoints for requests bearing this token (or VITRINA_TOKEN)."
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allow browser calls from this origin (repeatable). Off by default.",
)
@click.option("--max-upload-mb", default=10, show_default=True, type=click.IntRange(1, 500))
@click.option(
    "--allow-private-urls",
    is_flag=True,
    help="Let image-URL queries reach private and loopback addresses (trusted networks only).",
)
@click.option(
    "--exact", is_flag=True, help="Scan every vector even where an approximate index is built (see index-ann)."
)
@click.option(
    "--index",
    "index_target",
    help="Answer from a Qdrant copy made by `vitrina sync`: qdrant+http://HOST:PORT/NAME or qdrant:PATH#NAME.",
)
@click.option(
    "--get", "get_path", help="Answer one GET request for this path in-process, print it and exit (smoke tests)."
)
def serve(collection: str, host: str, port: int, token: str | None, cors_origins: tuple[str, ...], max_upload_mb: int, allow_private_urls: bool, get_path: str | None,
          exact: bool = False, index_target: str | None = None) -> None:  # fmt: skip
    """Serve COLLECTION: a JSON API (OpenAPI docs at /docs) and a web page at /.

    Needs pip install 'vitrina[server]'. Read-only unless --token is given."""
    try:
        from .service import ServiceConfig, create_app
    except ImportError as e:
        raise click.ClickException(
            f"The server needs extra packages: pip install 'vitrina[server]' ({e.name} is missing)"
        ) from e
    with _errors():
        config = ServiceConfig(collection=collection, token=token, cors_origins=cors_origins, max_upload_bytes=max_upload_mb * 1024 * 1024, allow_private_urls=allow_private_urls,
                               index="exact" if exact else index_target or "auto")  # fmt: skip
        app = create_app(config)
    if get_path is not None:
        from fastapi.testclient import TestClient

        with TestClient(app) as client:
            response = client.get(get_path)
        click.echo(response.text)
        sys.exit(0 if response.status_code < 400 else 1)
    import uvicorn

    _stderr().print(f"Serving {_escape(collection)} at http://{host}:{port}/  (API docs: /docs; Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.argument("labels", nargs=-1)
@click.option(
    "--zero-shot", "zero", is_flag=True, help="Classify by the LABELS given as arguments, through the text tower."
)
@click.option(
    "--train",
    "train_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Train a logistic-regression probe from a CSV id,label.",
)
@click.option("--apply", "apply_name", help="Apply a saved probe again (after re-indexing).")
@click.option("--name", help="Tag name, usable in --where (default: zero_shot, or required with --train).")
@click.option("--space", help="Embedding space (default: the first).")
@click.option(
    "--folds",
    default=5,
    show_default=True,
    type=click.IntRange(2, 20),
    help="--train: cross-validation folds (a rarer class sits in fewer of them).",
)
@click.option(
    "--C",
    "C",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="--train: inverse regularisation strength (smaller: simpler probe).",
)
@click.option(
    "--calibrate",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Zero-shot: a CSV id,label of a few items to fit the temperature on (calibrated scores).",
)
@click.option("--json", "as_json", is_flag=True)
def classify(collection: str, labels: tuple[str, ...], zero: bool, train_csv: Path | None, apply_name: str | None, name: str | None, space: str | None,
             folds: int, C: float, calibrate: Path | None, as_json: bool) -> None:  # fmt: skip
    """Tag every item of COLLECTION with a classifier on its embeddings; tags work as filters.

    \b
    vitrina classify maps --zero-shot "blank page" "map" "photograph" "drawing" --name kind
    vitrina classify maps --train labels.csv --name page_kind       # cross-validated F1 reported
    vitrina search maps "harbour" --where "page_kind!=blank"
    """
    from . import classify as cls
    from .collection import open_collection

    if sum(bool(x) for x in (zero, train_csv, apply_name)) != 1:
        raise click.UsageError("Give exactly one of --zero-shot LABEL..., --train LABELS.csv, --apply NAME.")
    with _errors():
        coll = open_collection(collection)
        if zero:
            report = cls.zero_shot(coll, list(labels), name=name or "zero_shot", space=space, calibrate=calibrate)
        elif train_csv:
            if not name:
                raise click.UsageError("--train needs --name (the tag to write).")
            report = cls.train_probe(coll, train_csv, name=name, space=space, folds=folds, C=C)
        else:
            report = cls.apply_probe(coll, str(apply_name))
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, ensure_ascii=False, indent=2))
        return
    out = _stdout()
    if d["f1_macro_cv"] is not None and d["folds"]:
        ci = d["f1_macro_cv_ci95"]
        out.print(f"{d['folds']}-fold cross-validated macro F1: [bold]{d['f1_macro_cv']:.3f}[/] [95% CI {ci[0]:.3f}–{ci[1]:.3f}] on {d['trained_on']} labelled items "
                  f"(chance {d['f1_chance']:.3f}; C {d['C']})")  # fmt: skip
        for label, c in d["per_class"].items():
            out.print(f"  {_escape(label)}: {c['items']} items, F1 {c['f1']:.3f}, average precision {c['average_precision']:.3f}; "
                      f"best F1 {c['best_f1']:.3f} at threshold {c['threshold']:.3f} (precision {c['precision_at_threshold']:.3f}, recall {c['recall_at_threshold']:.3f})")  # fmt: skip
        if d["threshold"] is not None:
            out.print(
                f"Tagged as {_escape(d['labels'][1])} at probability ≥ {d['threshold']:.3f} (the cross-validated best F1); curves in --json"
            )
    if d["calibration"]:
        c = d["calibration"]
        out.print(
            f"Calibrated on {c['labelled']} labelled items: temperature {c['temperature']} (NLL {c['nll']:.3f}, was {c['nll_at_100']:.3f} at 100)"
        )
    out.print(
        f"Tagged {d['tagged']} items as [bold]{_escape(d['name'])}[/]: "
        + ", ".join(f"{_escape(k)} {v}" for k, v in sorted(d["counts"].items(), key=lambda kv: -kv[1]))
    )
    for w in d["warnings"]:
        _stderr().print(f"[yellow]Warning:[/] {_escape(w)}")
    out.print(
        f'Filter with: vitrina search {_escape(collection)} "..." --where "{_escape(d["name"])}={_escape(d["labels"][0])}"'
    )


@cli.command("eval", context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--pairs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Caption pairs (JSONL id,caption,split as `vitrina captions` writes, or CSV): text→image recall@k, MRR.",
)
@click.option(
    "--split",
    type=click.Choice(["held_out", "train", "all"]),
    default="held_out",
    show_default=True,
    help="Which pairs to evaluate: held_out (never trained on), train, or all. A file without a split is evaluated whole, and the report says so.",
)
@click.option(
    "--exact-image",
    is_flag=True,
    help="Hard perturbed copies (crop of part, rotation, colour, print-through, all at once) as queries: top-1 / top-10, beside the same model with random weights.",
)
@click.option(
    "--sample", default=200, show_default=True, type=click.IntRange(1), help="Items to perturb for --exact-image."
)
@click.option(
    "--candidates",
    default=1000,
    show_default=True,
    type=click.IntRange(2),
    help="--exact-image: rank among this many items (the sample plus others).",
)
@click.option("--no-baseline", is_flag=True, help="--exact-image: skip the random-weights baseline.")
@click.option(
    "--queries",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV query,id[,relevance]: nDCG@10, P@10.",
)
@click.option(
    "--modes", is_flag=True, help="With --queries: also run them CLIP only, keywords only and fused, side by side."
)
@click.option(
    "--by",
    "by_key",
    help="Also break text→image results down by this metadata key or tag (date, place, folder, a classifier's name).",
)
@click.option("--space", "spaces", multiple=True, help="Space(s) to evaluate (default: all).")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed for samples, perturbations and bootstrap intervals."
)
@click.option(
    "--report", type=click.Path(path_type=Path), help="Write REPORT.md, REPORT.json and REPORT.svg (a chart)."
)
@click.option(
    "--contact-sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write an HTML page of text→image hits and misses with thumbnails.",
)
@click.option("--json", "as_json", is_flag=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def evaluate_cmd(collection: str, pairs: Path | None, split: str, exact_image: bool, sample: int, candidates: int, no_baseline: bool, queries: Path | None,
                 by_key: str | None, spaces: tuple[str, ...], seed: int, report: Path | None, contact_sheet: Path | None, as_json: bool, quiet: bool,
                 modes: bool = False) -> None:  # fmt: skip
    """Measure search quality on COLLECTION, per embedding space, with 95 % bootstrap intervals,
    chance and random-weights baselines, and what was measured (split, files, models, seed).

    \b
    vitrina eval maps --pairs captions.jsonl              # held-out pairs only
    vitrina eval maps --exact-image
    vitrina eval maps --queries queries.csv --report quality"""
    from .collection import open_collection

    if not (pairs or exact_image or queries):
        raise click.UsageError("Give --pairs, --exact-image and/or --queries.")
    if contact_sheet and not pairs:
        raise click.UsageError("--contact-sheet shows text→image hits and misses: give --pairs as well.")
    with _errors():
        coll = open_collection(collection)
        options = _EvalOptions(
            pairs, split, exact_image, sample, candidates, not no_baseline, queries, by_key, seed, quiet
        )
        results = _evaluate(coll, list(spaces) or [s.name for s in coll.spaces()], options)
        if modes and queries:
            from .evaluate import read_queries
            from .evaluate_modes import eval_modes

            results["modes"] = {s: eval_modes(coll, read_queries(queries), space=s) for s in results["queries"]}
        _write_contact_sheet(coll, results, contact_sheet)
    _print_eval(results, report, as_json)
    if results.get("modes") and not as_json:
        from .evaluate_modes import markdown

        for space, r in results["modes"].items():
            click.echo(f"\nCLIP / keywords / fused ({space}):\n{markdown(r)}")


class _EvalOptions:
    def __init__(self, pairs: Path | None, split: str, exact_image: bool, sample: int, candidates: int, baseline: bool, queries: Path | None,
                 by_key: str | None, seed: int, quiet: bool) -> None:  # fmt: skip
        self.pairs, self.split, self.exact_image, self.sample, self.candidates, self.baseline = (
            pairs,
            split,
            exact_image,
            sample,
            candidates,
            baseline,
        )
        self.queries, self.by_key, self.seed, self.quiet = queries, by_key, seed, quiet


def _evaluate(coll: Any, spaces: list[str], o: _EvalOptions) -> dict[str, Any]:
    from . import evaluate as ev

    err = _stderr()
    results: dict[str, Any] = {"text_to_image": {}, "exact_image": {}, "queries": {}}
    pair_list, split_used = ev.select_split(ev.read_pair_rows(o.pairs), o.split) if o.pairs else (None, None)
    judged = ev.read_queries(o.queries) if o.queries else None

    def progress(label: str) -> Any:
        if o.quiet:
            return None

        def on(done: int, total: int) -> None:
            err.print(f"{label}: {done}/{total}", end="\r" if done < total else "\n")

        return on

    text_spaces = [s for s in spaces if "text" in coll.space(s).fingerprint.modalities]
    for space in spaces:
        if pair_list is not None and space in text_spaces:
            r = ev.eval_pairs(
                coll, pair_list, space=space, split=split_used, seed=o.seed, progress=progress(f"{space}: text→image")
            )
            if o.by_key:
                r["by"], r["by_key"] = ev.breakdown(coll, r["per_query"], o.by_key), o.by_key
            results["text_to_image"][space] = r
        if o.exact_image:
            results["exact_image"][space] = ev.eval_exact_image(coll, sample=o.sample, space=space, seed=o.seed, candidates=o.candidates, baseline=o.baseline,
                                                                progress=progress(f"{space}: exact image"))  # fmt: skip
        if judged is not None and space in text_spaces:
            results["queries"][space] = ev.eval_queries(
                coll, judged, space=space, progress=progress(f"{space}: judged queries")
            )
    skipped = [s for s in spaces if s not in text_spaces]
    if skipped and (pair_list is not None or judged is not None):
        results["image_only_spaces"] = skipped
    if pair_list is not None and len(results["text_to_image"]) > 1:
        results["paired"] = ev.paired_comparisons(results["text_to_image"], seed=o.seed)
    results["provenance"] = ev.provenance(coll, spaces, seed=o.seed, files={"pairs": o.pairs, "queries": o.queries})
    warnings = [w for kind in ("text_to_image", "exact_image", "queries") for space, r in results[kind].items()
                for w in ([f"{space}: {r['training_overlap']['warning']}"] if r.get("training_overlap", {}).get("warning") else []) + [f"{space}: {x}" for x in r.get("warnings", [])]]  # fmt: skip
    if split_used and not split_used.startswith("held_out"):
        warnings.insert(
            0,
            f"Evaluated on {split_used} pairs, not held-out ones: a model fine-tuned on these pairs will look better than it is.",
        )
    for space in skipped:
        warnings.append(f"{space}: image-only model, text evaluations skipped.")
    results["warnings"] = warnings
    for w in warnings:
        err.print(f"[yellow]Warning:[/] {_escape(w)}")
    return results


def _write_contact_sheet(coll: Any, results: dict[str, Any], path: Path | None) -> None:
    from . import evaluate as ev

    if path is None:
        return
    if not results.get("text_to_image"):
        raise click.UsageError("--contact-sheet shows text→image hits and misses: give --pairs as well.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ev.contact_sheet(coll, results), encoding="utf-8")
    _stderr().print(f"Wrote {_escape(str(path))}")


def _print_eval(results: dict[str, Any], report: Path | None, as_json: bool) -> None:
    from . import evaluate as ev

    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{report}.md").write_text("# Retrieval quality\n\n" + ev.markdown(results))
        Path(f"{report}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        Path(f"{report}.svg").write_text(ev.svg_chart(results))
        _stderr().print(f"Wrote {_escape(str(report))}.md, .json and .svg")
    if as_json:
        click.echo(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        click.echo(ev.markdown(results))


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--models",
    help="Comma-separated model specs to embed COLLECTION with first, e.g. mini,hf:openai/clip-vit-base-patch32,hf:google/siglip-base-patch16-224",
)
@click.option("--space", "spaces", multiple=True, help="Compare these existing spaces (with --models: as well).")
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["held_out", "train", "all"]), default="held_out", show_default=True)
@click.option("--exact-image", is_flag=True)
@click.option("--sample", default=200, show_default=True, type=click.IntRange(1))
@click.option("--candidates", default=1000, show_default=True, type=click.IntRange(2))
@click.option("--no-baseline", is_flag=True)
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", "by_key")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", help="cpu, cuda, mps (default: the best available).")
@click.option("--report", type=click.Path(path_type=Path))
@click.option(
    "--contact-sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write an HTML page of text→image hits and misses with thumbnails.",
)
@click.option("--json", "as_json", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def compare(collection: str, models: str | None, spaces: tuple[str, ...], pairs: Path | None, split: str, exact_image: bool, sample: int, candidates: int,
            no_baseline: bool, queries: Path | None, by_key: str | None, seed: int, device: str | None, report: Path | None, contact_sheet: Path | None,
            as_json: bool, quiet: bool) -> None:  # fmt: skip
    """Embed COLLECTION with each model (each in its own space, side by side) and evaluate them all,
    with a paired significance test between models: the Norwegian paper's model comparison, for
    your collection. Image-only (ViT) spaces get the image evaluation only."""
    from .collection import open_collection, space_name_for

    if not (models or spaces):
        raise click.UsageError("Give --models and/or --space.")
    if contact_sheet and not pairs:
        raise click.UsageError("--contact-sheet shows text→image hits and misses: give --pairs as well.")
    if not (pairs or exact_image or queries):
        exact_image = True  # needs no labels
    with _errors():
        coll = open_collection(collection)
        names = list(spaces)
        for spec in [m.strip() for m in (models or "").split(",") if m.strip()]:
            r = coll.index(model=spec, space=space_name_for(spec), device=device)
            _stderr().print(f"{_escape(spec)}: {r.embedded} embedded, space {_escape(r.space)}")
            names.append(r.space)
        names = list(dict.fromkeys(names))
        options = _EvalOptions(
            pairs, split, exact_image, sample, candidates, not no_baseline, queries, by_key, seed, quiet
        )
        coll = open_collection(collection)
        results = _evaluate(coll, names, options)
        _write_contact_sheet(coll, results, contact_sheet)
    _print_eval(results, report, as_json)


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option("--split", type=click.Choice(["all", "train", "held_out"]), default="all", show_default=True)
@click.option("--held-out-percent", default=20, show_default=True, type=click.IntRange(0, 100))
def captions(collection: str, split: str, held_out_percent: int) -> None:
    """Print caption pairs built from COLLECTION's metadata as JSONL (id, caption, split, group),
    the LoC paper's recipe. The split is by group (series, manifest or catalogue item, title
    without its sheet numbers), stable across runs: near-duplicates never straddle it."""
    from . import evaluate as ev
    from .collection import open_collection

    with _errors():
        rows = ev.captions(open_collection(collection), held_out_percent=held_out_percent)
    for row in rows:
        if split == "all" or row["split"] == split:
            click.echo(json.dumps(row, ensure_ascii=False))


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--pairs",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL id,caption[,split] (vitrina captions); held_out pairs are never trained on.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the fine-tuned model (then --model hf:OUT).",
)
@click.option("-m", "--model", help="Base checkpoint (default: the collection's model; must be hf: CLIP or SigLIP).")
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(2))
@click.option("--lr", default=1e-5, show_default=True, type=float)
@click.option(
    "--warmup",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of steps with a linear warm-up.",
)
@click.option(
    "--freeze",
    type=click.Choice(["none", "vision", "text", "towers"]),
    default="none",
    show_default=True,
    help="Keep these layers fixed.",
)
@click.option(
    "--patience",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="Stop after this many epochs without a better validation MRR.",
)
@click.option(
    "--val-candidates",
    default=500,
    show_default=True,
    type=click.IntRange(2),
    help="Validation captions rank this many validation images (recall@k, MRR).",
)
@click.option("--device", help="cpu, cuda, mps (default: cuda if present).")
@click.option(
    "--restart",
    is_flag=True,
    help="Start a new run in OUT, discarding its checkpoints (a resume must use the same settings).",
)
@click.option("--json", "as_json", is_flag=True)
def finetune(collection: str, pairs: Path, out: Path, model: str | None, epochs: int, batch_size: int, lr: float, warmup: float, freeze: str,
             patience: int, val_candidates: int, device: str | None, restart: bool, as_json: bool) -> None:  # fmt: skip
    """Fine-tune COLLECTION's CLIP / SigLIP model on caption pairs (contrastive loss), validated by
    retrieval on held-back pairs each epoch (the best MRR is kept), with early stopping and
    resumable checkpoints; a resume with other settings is refused.

    \b
    vitrina captions maps > pairs.jsonl
    vitrina finetune maps --pairs pairs.jsonl --epochs 8 --batch-size 32 --lr 1e-5 --out ./ft
    vitrina index maps --model hf:./ft --space ft && vitrina eval maps --pairs pairs.jsonl"""
    from .collection import open_collection
    from .finetune import FinetuneConfig, read_pairs_with_split
    from .finetune import finetune as run

    err = _stderr()
    with _errors():
        coll = open_collection(collection)
        config = FinetuneConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            freeze=freeze,
            patience=patience,
            val_candidates=val_candidates,
        )
        with _progress(err, as_json) as (_, on_step):
            report = run(
                coll,
                read_pairs_with_split(pairs),
                out,
                model=model,
                config=config,
                device=device,
                resume=not restart,
                progress=on_step,
            )
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    resumed = f" (resumed after epoch {d['resumed_from']})" if d["resumed_from"] else ""
    err.print(
        f"Fine-tuned {_escape(d['base'])} on {d['train_pairs']} pairs ({d['val_pairs']} validation, {d['held_out_excluded']} held out){resumed}"
    )
    for h in d["history"]:
        err.print(f"  epoch {h['epoch']}: train loss {h['train_loss']:.4f}"
                  + (f", validation recall@1 {h['val_recall@1']:.1%}, recall@10 {h['val_recall@10']:.1%}, MRR {h['val_mrr']:.3f}" if "val_mrr" in h else ""))  # fmt: skip
    how = (
        f"validation MRR among {d['val_candidates']} images"
        if d["selected_by"] == "val_mrr"
        else "training loss (no validation pairs)"
    )
    err.print(
        f"Best epoch {d['best_epoch']} (by {how}) saved to {_escape(d['out'])}"
        + (" (stopped early)" if d["stopped_early"] else "")
    )
    err.print(f"Next: vitrina index {_escape(collection)} --model hf:{_escape(d['out'])} --space finetuned")


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True)
def collections(as_json: bool) -> None:
    """List the collections in $VITRINA_HOME."""
    from .store import CollectionPaths, default_home

    home = default_home()
    names = sorted(p.name for p in home.iterdir() if CollectionPaths(p).is_collection()) if home.is_dir() else []
    if as_json:
        click.echo(json.dumps({"home": str(home), "collections": names}))
    else:
        for name in names:
            click.echo(name)
        if not names:
            _stderr().print(f"No collections in {home} yet.")


@cli.command(context_settings=CONTEXT)
@click.option("-c", "--collection", default="demo", show_default=True, help="Collection to build.")
@click.option("--json", "as_json", is_flag=True, help="Print the example results as JSON.")
@click.option(
    "--serve",
    "serve_port",
    type=click.IntRange(0, 65535),
    is_flag=False,
    flag_value=8000,
    default=None,
    help="Then serve the web page on 127.0.0.1 (port 8000, or the one given).",
)
@click.pass_context
def demo(ctx: click.Context, collection: str, as_json: bool, serve_port: int | None) -> None:
    """Build a demo collection from images shipped with vitrina, offline, and search it.

    Uses the offline `mini` model (pip install 'vitrina[mini]'): no network, no downloads."""
    from .collection import open_collection
    from .demo import EXAMPLE_QUERIES, IMAGES

    err = _stderr()
    with _errors():
        coll = open_collection(collection, create=True)
        with _progress(err, False) as (on_scan, on_embed):
            report = coll.index(str(IMAGES), model="mini", progress=on_embed, on_scan=on_scan)
        if not as_json:
            _print_report(err, report, _target(coll))
        results = {" ".join(repr(t) for t in terms): coll.search(terms, limit=3) for terms in EXAMPLE_QUERIES}
        car = results["'a car'"]
        if car:
            results[f"--image {car[0].id}"] = coll.search(image=car[0].id, limit=3)
    if as_json:
        click.echo(json.dumps({q: h.to_list() for q, h in results.items()}, ensure_ascii=False, indent=2))
        return
    out = _stdout()
    for query, hits in results.items():
        shown = ", ".join(f"{h.id} ({h.score:.2f})" for h in hits)
        out.print(f"[bold]vitrina search {_escape(coll.name)} {_escape(query)}[/] → {_escape(shown)}")
    out.print(f'\nTry your own: vitrina search {coll.name} "a bicycle"   ·   vitrina info {coll.name}')
    out.print("Index your own folder offline: vitrina index ./scans --collection mine --model mini")
    if serve_port is not None:
        ctx.invoke(serve, collection=collection, port=serve_port)


# -- bring your embeddings: import, export, enrich ----------------------------------------------


def _import_options(f: Any) -> Any:
    options = [
        click.option("-c", "--collection", required=True, help="Collection name or path (created if new)."),
        click.option("-m", "--model", help="The model that made the vectors, e.g. hf:openai/clip-vit-base-patch32: queries are embedded with it. "
                     "Optional for a vitrina export (its fingerprint is in the file)."),
        click.option("--space", help="Embedding space to import into (default: from the model name)."),
        click.option("--chunk", default=20_000, show_default=True, type=click.IntRange(1, 1_000_000), help="Rows read and committed at a time."),
        click.option("--restart", is_flag=True, help="Import from the first row instead of resuming after the last committed chunk."),
        click.option("--no-load-model", is_flag=True, help="Do not load the model to check it now; it is checked (and pinned) at the first query."),
        click.option("--bad-rows", type=click.Path(dir_okay=False, path_type=Path), help="Append every refused row (row, id, reason) to this JSONL file."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


@cli.group("import", context_settings=CONTEXT)
def import_group() -> None:
    """Import precomputed embeddings (and their items) into a collection, to search them at once.

    \b
    vitrina import loc-beto ./beto.pt ./beto_idx.pt --csv p1_map_file_list.csv -c locmaps -m hf:openai/clip-vit-base-patch32
    vitrina import clip-retrieval ./embeddings_folder -c laion-sample -m hf:openai/clip-vit-base-patch32
    vitrina import parquet ./data.parquet --vector-column embedding --id-column id -c c -m hf:...
    vitrina import npy ./vectors.npy --ids ./ids.csv -c c -m hf:...

    Large files stream in chunks; a killed import resumes after the last committed chunk when
    run again. Bad rows (NaN, zero, wrong length, duplicate id) are reported and skipped; exit 3."""


def _run_import(kind: str, paths: list[str], collection: str, model: str | None, space: str | None, chunk: int, restart: bool,
                no_load_model: bool, bad_rows: Path | None, as_json: bool, quiet: bool, **options: Any) -> None:  # fmt: skip
    from .collection import open_collection
    from .importers import import_vectors, open_reader

    err = _stderr()
    with _errors():
        reader = open_reader(kind, paths, **options)
        coll = open_collection(collection, create=True)
        sink = bad_rows.open("a", encoding="utf-8") if bad_rows else None
        try:

            def record(row: int, item_id: str, reason: str) -> None:
                if sink:
                    sink.write(json.dumps({"row": row, "id": item_id, "reason": reason}) + "\n")

            on_bad = record if sink else None
            with _rows_progress(err, quiet or as_json, "Importing") as progress:
                report = import_vectors(coll, reader, model=model, space=space, chunk=chunk, restart=restart, load_model=not no_load_model,
                                        progress=progress, on_bad=on_bad)  # fmt: skip
        finally:
            if sink:
                sink.close()
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, ensure_ascii=False, indent=2))
    elif d["already_done"]:
        err.print(
            f"[bold]{_escape(d['collection'])}[/]: this import was already completed (space {_escape(d['space'])}); --restart imports it again."
        )
    else:
        resumed = f", resumed at row {d['resumed_at']:,}" if d["resumed_at"] else ""
        err.print(f"[bold]{_escape(d['collection'])}[/] / space [bold]{_escape(d['space'])}[/] ({_escape(d['model'])}): {d['imported']:,} vectors imported "
                  f"of {d['rows']:,} rows, {d['bad']:,} refused{resumed}, in {d['seconds']:.1f} s")  # fmt: skip
        for b in d["bad_rows"][:10]:
            err.print(f"  [yellow]row {b['row']}[/] {_escape(b['id'])}: {_escape(b['reason'])}")
        if d["bad"] > 10:
            err.print(f"  … and {d['bad'] - 10:,} more" + ("" if bad_rows else " (--bad-rows FILE lists them all)"))
        if not d["verified"]:
            err.print(f"[yellow]Model not loaded here:[/] {_escape(d['model'])} is recorded as declared; the first query loads it, checks "
                      "its dimension and pins its revision.")  # fmt: skip
        err.print(f'Next: vitrina search {_escape(collection)} "..."')
    if report.bad:
        sys.exit(3)


@contextmanager
def _rows_progress(console: Any, quiet: bool, label: str):  # type: ignore[no-untyped-def]
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


@import_group.command("loc-beto", context_settings=CONTEXT)
@click.argument("beto", type=click.Path(exists=True, dir_okay=False))
@click.argument("beto_idx", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False),
    help="p1_map_file_list.csv: item ids, resource URLs and segments (for `vitrina enrich`).",
)
@_import_options
def import_loc_beto(beto: str, beto_idx: str, csv_path: str | None, **kw: Any) -> None:
    """The LoC maps paper's BETO tensor [N, 512] and BETO_IDX list of N image URLs (torch.save;
    loaded with weights_only=True, never unpickled)."""
    _run_import("loc-beto", [beto, beto_idx], csv_path=csv_path, **kw)


@import_group.command("clip-retrieval", context_settings=CONTEXT)
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@_import_options
def import_clip_retrieval(folder: str, **kw: Any) -> None:
    """clip-retrieval's FOLDER: img_emb/img_emb_K.npy + metadata/metadata_K.parquet (row order paired; float16 accepted)."""
    _run_import("clip-retrieval", [folder], **kw)


@import_group.command("parquet", context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--vector-column",
    help="The list / fixed-size-list column of floats (default: the only one, or one named vector/embedding).",
)
@click.option("--id-column", help="The id column (default: id, key or item_id; else the image URL).")
@click.option(
    "--image-column", help="The image URL / path column (default: image, url, image_url, file_url, image_path)."
)
@_import_options
def import_parquet(
    file: str, vector_column: str | None, id_column: str | None, image_column: str | None, **kw: Any
) -> None:
    """A parquet FILE with a vector column; the other columns become metadata."""
    _run_import("parquet", [file], vector_column=vector_column, id_column=id_column, image_column=image_column, **kw)


@import_group.command("npy", context_settings=CONTEXT)
@click.argument("vectors", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--ids",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="One id per row: .txt lines, or .csv / .jsonl / .parquet with id, image and metadata columns.",
)
@click.option("--id-column", help="The id column of a table ids file.")
@click.option("--image-column", help="The image URL / path column of a table ids file.")
@_import_options
def import_npy(vectors: str, ids: str, id_column: str | None, image_column: str | None, **kw: Any) -> None:
    """A [N, D] float .npy file (never unpickled) and an --ids file of N rows."""
    _run_import("npy", [vectors, ids], id_column=id_column, image_column=image_column, **kw)


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "-f", "--format", "fmt", type=click.Choice(["clip-retrieval", "parquet"]), default="parquet", show_default=True
)
@click.option("--space", help="Which embedding space (default: the first).")
@click.option(
    "--shard-rows", default=1_000_000, show_default=True, type=click.IntRange(1), help="clip-retrieval: rows per shard."
)
@click.option("--json", "as_json", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def export(
    collection: str, out: Path, fmt: str, space: str | None, shard_rows: int, as_json: bool, quiet: bool
) -> None:
    """Write COLLECTION's vectors with ids, image URLs, metadata and the model fingerprint to OUT.

    \b
    vitrina export locmaps ./out --format clip-retrieval    # img_emb/*.npy + metadata/*.parquet
    vitrina export locmaps ./locmaps.parquet                # one parquet file with a vector column
    vitrina import parquet ./locmaps.parquet -c copy        # back again (the model comes with it)"""
    from .collection import open_collection
    from .importers import export_space

    err = _stderr()
    with _errors():
        coll = open_collection(collection)
        with _rows_progress(err, quiet or as_json, "Exporting") as progress:
            d = export_space(coll, out, format=fmt, space=space, shard_rows=shard_rows, progress=progress)
    if as_json:
        click.echo(json.dumps(d, ensure_ascii=False, indent=2))
    else:
        err.print(
            f"Wrote {d['rows']:,} vectors of space {_escape(d['space'])} ({_escape(d['fingerprint']['spec'])}) to {_escape(d['out'])} ({fmt})"
        )


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.argument("source", type=click.Choice(["locgov"]))
@click.option("--limit", type=click.IntRange(1), help="Enrich at most this many items this run.")
@click.option("--json", "as_json", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def enrich(collection: str, source: str, limit: int | None, as_json: bool, quiet: bool) -> None:
    """Fetch catalogue metadata for imported items: titles, dates, places, subjects, notes and a caption.

    \b
    vitrina import loc-beto beto.pt beto_idx.pt --csv p1_map_file_list.csv -c locmaps -m hf:openai/clip-vit-base-patch32
    vitrina enrich locmaps locgov --limit 1000     # one request per second; stops at the first 429, resumes"""
    from .collection import open_collection
    from .enrich import enrich as run

    err = _stderr()
    with _errors():
        coll = open_collection(collection)
        with _rows_progress(err, quiet or as_json, "Enriching") as progress:
            report = run(coll, source, limit=limit, progress=progress)
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, ensure_ascii=False, indent=2))
    else:
        err.print(f"[bold]{_escape(d['collection'])}[/] ← {source}: {d['enriched']:,} enriched, {d['already']:,} done before, {d['failed']:,} failed, "
                  f"{d['without_resource']:,} without a resource_url, {d['requests']:,} requests, in {d['seconds']:.1f} s")  # fmt: skip
        for problem in d["problems"][:10]:
            err.print(f"  [yellow]failed[/] {_escape(problem)}")
        if d["interrupted"]:
            err.print(f"[yellow]Stopped:[/] {_escape(d['message'])}")
    if report.interrupted:
        sys.exit(75)
    if report.failed:
        sys.exit(3)


# -- explore: duplicates, map ---------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--threshold",
    type=float,
    default=0.95,
    show_default=True,
    help="Cosine at or above which two items are the same image.",
)
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="Neighbours looked at per item.")
@click.option("--space", help="Embedding space (default: the first).")
@click.option("--exact", is_flag=True, help="Ignore the approximate index (slower on large collections).")
@click.option("--no-tag", is_flag=True, help="Do not store the groups as the duplicate_of tag.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Groups with members, scores, pairs, the model fingerprint and the parameters.",
)
@click.option("--csv", "as_csv", is_flag=True, help="One row per member: group, item, best match, score, parameters.")
@click.option("-q", "--quiet", is_flag=True)
def duplicates(
    collection: str,
    threshold: float,
    k: int,
    space: str | None,
    exact: bool,
    no_tag: bool,
    as_json: bool,
    as_csv: bool,
    quiet: bool,
) -> None:
    """Find groups of near-identical images (the same scan twice, rescaled, recompressed, cropped).

    \b
    vitrina duplicates maps --threshold 0.95 --csv > duplicates.csv
    vitrina search maps --where duplicate_of=ITEM_ID "..."    # the groups are stored as a tag

    Uses the approximate index when fresh (vitrina index-ann), exact blocks otherwise. A group is a
    connected component of the pairs at or above the threshold; its weakest pair is reported."""
    from .collection import open_collection
    from .duplicates import find_duplicates

    if as_json and as_csv:
        raise click.UsageError("Choose one of --json and --csv.")
    err = _stderr()
    with _errors():
        coll = open_collection(collection, index="exact" if exact else "auto")
        with _rows_progress(err, quiet or as_json or as_csv, "neighbours") as progress:
            result = find_duplicates(coll, space=space, threshold=threshold, k=k, tag=not no_tag, progress=progress)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    if as_csv:
        click.echo(result.to_csv(), nl=False)
        return
    out = _stdout()
    for g in result.groups:
        out.print(f"[bold]{_escape(g.id)}[/] ({len(g.members)} items, weakest pair {g.min_score:.3f})")
        for m in g.members:
            match, score = g.best[m]
            out.print(f"  {_escape(m)}  {score:.3f} ~ {_escape(match)}")
    err.print(
        f"{len(result.groups)} groups, {sum(len(g.members) for g in result.groups)} items, of {result.items} scanned "
        f"in {result.seconds:.1f} s ({result.index} index, threshold {threshold}, k {k})."
    )


@cli.command("map", context_settings=CONTEXT)
@click.argument("collection")
@click.option("--space", help="Embedding space (default: the first).")
@click.option(
    "--method",
    type=click.Choice(["auto", "pca", "umap"]),
    default="auto",
    show_default=True,
    help="umap needs pip install 'vitrina[map]'; auto = umap when installed, else pca.",
)
@click.option("--json", "as_json", is_flag=True)
def map_cmd(collection: str, space: str | None, method: str, as_json: bool) -> None:
    """Compute the 2-D map of a space for the page's Map view (stored beside the vectors).

    \b
    vitrina map maps && vitrina serve maps     # the page gains a "Map" view"""
    from .collection import open_collection
    from .layout import build_map, map_path

    with _errors():
        coll = open_collection(collection)
        stamp = build_map(coll, space, method=method)
    if as_json:
        click.echo(json.dumps(stamp, indent=2))
        return
    _stderr().print(
        f"Mapped {stamp['points']} items of space {stamp['space']!r} by {stamp['method']} in {stamp['seconds']:.1f} s → {map_path(coll, stamp['space'])}"
    )


def main() -> None:
    cli(prog_name="vitrina")
