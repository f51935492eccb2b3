"""Filling and looking after collections: index, ingest, prune, index-ann."""

from __future__ import annotations

import sys
from typing import Any

import click

from ._common import (
    CONTEXT,
    echo_json,
    embed_progress,
    errors,
    escape,
    index_dict,
    moved_text,
    print_failures,
    print_report,
    progress_bars,
    stderr,
    stdout,
    target_of,
)


@click.command(context_settings=CONTEXT)
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
    "--regions",
    type=click.Choice(["auto", "off", "grid"]),
    help="Also embed parts of large images (auto: images whose shorter side has 896+ pixels; grid: every image; off: drop them). "
    "Recorded for the space; default: as last time (off for a new one). See docs/regions.md.",
)
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
@click.option("--ocr", "ocr_mode", type=click.Choice(["auto", "off"]), default="off", show_default=True,
              help="auto: then read the words on the images (vitrina ocr) with the default engine, when installed.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index(source: str, collection: str | None, model: str | None, space: str | None, batch_size: int | None, workers: int | None, decode: str, device: str | None,
          threads: int | None, retry_failed: bool, reembed: bool, compact: bool, max_pixels: int | None, max_decode_mb: int | None, limit: int | None,
          ray_address: str | None, workers_per_gpu: int, shard_dir: str | None, part_size: int, http_cache: str | None, as_json: bool, quiet: bool,
          regions: str | None = None, ocr_mode: str = "off") -> None:  # fmt: skip
    """Index SOURCE (a folder, urls:, iiif:, locgov: or alto:) into a collection, or bring an existing COLLECTION up to date.

    \b
    vitrina index ./scans --collection maps            # add the folder's images, embed them
    vitrina index ./scans --collection maps --model mini   # the offline model
    vitrina index maps                                 # embed whatever is still pending
    vitrina index ./projects/maps                      # the same, for a collection given by its path
    vitrina index maps --regions auto                  # also embed parts of large scans (details)

    Re-running is cheap: unchanged files are skipped, changed ones re-embedded, removed ones
    dropped. An interrupted run resumes where it stopped."""
    from ..collection import open_collection
    from ..runs import BadArgument, IndexTarget

    with errors():
        try:
            target = IndexTarget.resolve(source, collection)
        except BadArgument as e:
            raise click.BadParameter(str(e), param_hint=e.argument) from e
        coll = open_collection(target.collection, create=True)
        err = stderr()
        if ray_address:
            _index_on_ray(coll, target.source, ray_address, model=model, space=space, device=device, retry_failed=retry_failed, limit=limit, max_pixels=max_pixels,
                          max_decode_bytes=max_decode_mb << 20 if max_decode_mb else None, workers_per_gpu=workers_per_gpu, shard_dir=shard_dir, part_size=part_size,
                          http_cache=http_cache, decoders=workers, quiet=quiet, as_json=as_json)  # fmt: skip
            return
        with progress_bars(err, quiet) as (on_scan, on_embed):
            report = coll.index(target.source, model=model, space=space, batch_size=batch_size, workers=workers, decode=decode, device=device, threads=threads,
                                retry_failed=retry_failed, reembed=reembed, compact=compact, max_pixels=max_pixels, progress=on_embed, on_scan=on_scan, limit=limit,
                                max_decode_bytes=max_decode_mb << 20 if max_decode_mb else None, regions=regions)  # fmt: skip
        if as_json and ocr_mode == "off":
            echo_json(index_dict(report))
        elif not as_json:
            print_report(err, report, target_of(coll))
        if report.interrupted:
            sys.exit(75 if report.message else 130)
        if ocr_mode == "auto":
            from .ocr import index_step

            index_step(coll, index_dict(report) if as_json else None, quiet=quiet, failed=bool(report.failed))
        if report.failed:
            sys.exit(3)


def _index_on_ray(coll: Any, source: str | None, address: str, *, quiet: bool, as_json: bool, **options: Any) -> None:
    """`index --ray`: ingest here (the single writer), embed on the cluster, merge shards here."""
    try:
        from ..ray_runner import index_source_on_ray, require_ray

        require_ray()
    except ImportError as e:
        raise click.UsageError(f"--ray needs Ray: pip install 'vitrina[ray]' ({e})") from e
    err = stderr()
    with embed_progress(err, quiet) as on_embed:
        report = index_source_on_ray(coll, source, address=address, progress=on_embed, **options)
    if report.ingest_interrupted:  # as a local run: nothing is embedded after a ban
        err.print(
            f"[yellow]Interrupted.[/] {escape(report.message)} Run the same command again to carry on where it stopped."
        )
        sys.exit(75)
    d = report.to_dict()
    if as_json:
        echo_json(d)
    else:
        err.print(
            f"{report.embedded} embedded, {report.failed} failed on {report.actors} Ray workers in {report.seconds:.1f} s ({report.parts} shards)"
        )
        if report.failed:
            print_failures(err, d)
        if report.interrupted:
            err.print(
                f"[yellow]Interrupted.[/] {escape(report.message)} Run the same command again to carry on where it stopped."
            )
    if report.interrupted:
        sys.exit(75)
    if report.failed:
        sys.exit(3)


@click.command(context_settings=CONTEXT)
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
    from ..collection import open_collection

    err = stderr()
    with errors():
        coll = open_collection(collection, create=True)
        with progress_bars(err, quiet) as (on_page, _):
            options: dict[str, Any] = {"lang": lang, "alto": alto, "check_type": check_type or None}
            report = coll.ingest(
                source, limit=limit, images=images, min_size=min_size, restart=restart, on_page=on_page, **options
            )
    d = report.to_dict()
    if as_json:
        echo_json(d)
    else:
        resumed = " (resumed)" if d["resumed"] else ""
        err.print(f"[bold]{escape(d['collection'])}[/] ← {escape(d['source'])}{resumed}: {d['found']} items found "
                  f"({d['new']} new, {d['changed']} changed, {d['updated']} with new metadata, {moved_text(d)}, {d['unchanged']} unchanged, {d['removed']} removed) "
                  f"from {d['pages']} pages, {d['requests']} requests, in {d['seconds']:.1f} s")  # fmt: skip
        if d["skipped"]:
            err.print("  not ingested: " + ", ".join(f"{n} {escape(kind)}" for kind, n in d["skipped"].items()))
        for problem in d["problems"][:10]:
            err.print(f"  [yellow]skipped[/] {escape(problem)}")
        if len(d["problems"]) > 10:
            err.print(f"  … and {len(d['problems']) - 10} more: add --json to see them")
        if d["interrupted"]:
            err.print(f"[yellow]Stopped:[/] {escape(d['message'])}")
        else:
            err.print(f"Next: vitrina index {escape(target_of(coll))}")
    if report.interrupted:
        sys.exit(75)  # EX_TEMPFAIL: try again later


@click.command(context_settings=CONTEXT)
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
    from ..collection import open_collection

    with errors():
        out = open_collection(collection).prune(where, action=action)
    if as_json:
        echo_json(out)
        return
    done = {"hide": f"{out.get('changed', 0)} hidden", "unhide": f"{out.get('changed', 0)} shown again",
            "delete": f"{out.get('deleted', 0)} deleted, {out.get('bytes_saved', 0) / 1e6:.1f} MB saved"}[action]  # fmt: skip
    stdout().print(f"{out['matched']} items matched; {done}.", highlight=False)


@click.command("index-ann", context_settings=CONTEXT)
@click.argument("collection")
@click.option("--space", help="Embedding space (default: the first).")
@click.option(
    "--structure",
    type=click.Choice(["ivf", "hnsw"]),
    help="IVF (default: fast to build, steady recall for text queries) or HNSW.",
)
@click.option(
    "--codes",
    type=click.Choice(["pq4", "sq8", "fp16", "flat"]),
    help="Vector codes in the index: 4-bit PQ fast scan (default on IVF: 0.25 byte a dimension), int8 (default on HNSW), float16 or float32; hits are re-ranked from float32 anyway.",
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
@click.option("--target-recall", default=0.98, show_default=True, type=click.FloatRange(0, 1), help="Tune the search settings until recall@10 against exact search meets this on probe queries (captions, else shifted images); searches exactly where the index cannot beat a scan at it. 0: fixed settings.")  # fmt: skip
@click.option("--max-latency-ms", type=click.FloatRange(0, min_open=True), help="Warn (and say what to change) when meeting the target takes longer than this per query.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
def index_ann(collection: str, space: str | None, structure: str | None, codes: str | None, nlist: int | None, rebuild: bool, threads: int | None,
              caption_queries: int, target_recall: float, max_latency_ms: float | None, as_json: bool) -> None:  # fmt: skip
    """Build or update the approximate search index of COLLECTION (needs pip install 'vitrina[ann]').

    A derived file beside the vectors: searches use it while it is fresh, with exact re-ranking,
    and fall back to an exact scan when it is stale or missing. Stopping a build at any moment
    leaves the previous index (or none)."""
    from ..collection import open_collection

    with errors():
        report = open_collection(collection).build_ann(space, structure=structure, codes=codes, nlist=nlist, rebuild=rebuild, threads=threads,
                                                       caption_queries=caption_queries, target_recall=target_recall or None, max_latency_ms=max_latency_ms)  # fmt: skip
    if as_json:
        echo_json(report.to_dict(), ensure_ascii=True)
        return
    how = "built" if report.rebuilt else f"added {report.added} rows to"
    recall = ", ".join(f"{k} {v:.3f}" for k, v in report.recall.items() if k != "sample")
    stdout().print(f"{how} the {report.kind} index of space {escape(report.space)}: {report.rows} rows, {report.bytes / 1e6:.1f} MB, "
                    f"{report.seconds:.1f} s; recall@10 {recall}" + (f"\n{report.tuning['summary']}" if report.tuning else ""), highlight=False)  # fmt: skip


COMMANDS = (index, ingest, prune, index_ann)
