"""Moving embeddings in and out: import (loc-beto, clip-retrieval, parquet, npy), export, enrich, sync."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from ._common import CONTEXT, echo_json, errors, escape, rows_progress, stderr, stdout

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


@click.group("import", context_settings=CONTEXT)
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
    from ..collection import open_collection
    from ..importers import import_vectors, open_reader

    err = stderr()
    with errors():
        reader = open_reader(kind, paths, **options)
        coll = open_collection(collection, create=True)
        sink = bad_rows.open("a", encoding="utf-8") if bad_rows else None
        try:

            def record(row: int, item_id: str, reason: str) -> None:
                if sink:
                    sink.write(json.dumps({"row": row, "id": item_id, "reason": reason}) + "\n")

            on_bad = record if sink else None
            with rows_progress(err, quiet or as_json, "Importing") as progress:
                report = import_vectors(coll, reader, model=model, space=space, chunk=chunk, restart=restart, load_model=not no_load_model,
                                        progress=progress, on_bad=on_bad)  # fmt: skip
        finally:
            if sink:
                sink.close()
    d = report.to_dict()
    if as_json:
        echo_json(d)
    elif d["already_done"]:
        err.print(
            f"[bold]{escape(d['collection'])}[/]: this import was already completed (space {escape(d['space'])}); --restart imports it again."
        )
    else:
        resumed = f", resumed at row {d['resumed_at']:,}" if d["resumed_at"] else ""
        err.print(f"[bold]{escape(d['collection'])}[/] / space [bold]{escape(d['space'])}[/] ({escape(d['model'])}): {d['imported']:,} vectors imported "
                  f"of {d['rows']:,} rows, {d['bad']:,} refused{resumed}, in {d['seconds']:.1f} s")  # fmt: skip
        for b in d["bad_rows"][:10]:
            err.print(f"  [yellow]row {b['row']}[/] {escape(b['id'])}: {escape(b['reason'])}")
        if d["bad"] > 10:
            err.print(f"  … and {d['bad'] - 10:,} more" + ("" if bad_rows else " (--bad-rows FILE lists them all)"))
        if not d["verified"]:
            err.print(f"[yellow]Model not loaded here:[/] {escape(d['model'])} is recorded as declared; the first query loads it, checks "
                      "its dimension and pins its revision.")  # fmt: skip
        err.print(f'Next: vitrina search {escape(collection)} "..."')
    if report.bad:
        sys.exit(3)


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


@click.command(context_settings=CONTEXT)
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
    from ..collection import open_collection
    from ..importers import export_space

    err = stderr()
    with errors():
        coll = open_collection(collection)
        with rows_progress(err, quiet or as_json, "Exporting") as progress:
            d = export_space(coll, out, format=fmt, space=space, shard_rows=shard_rows, progress=progress)
    if as_json:
        echo_json(d)
    else:
        err.print(
            f"Wrote {d['rows']:,} vectors of space {escape(d['space'])} ({escape(d['fingerprint']['spec'])}) to {escape(d['out'])} ({fmt})"
        )


@click.command(context_settings=CONTEXT)
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
    from ..collection import open_collection
    from ..enrich import enrich as run

    err = stderr()
    with errors():
        coll = open_collection(collection)
        with rows_progress(err, quiet or as_json, "Enriching") as progress:
            report = run(coll, source, limit=limit, progress=progress)
    d = report.to_dict()
    if as_json:
        echo_json(d)
    else:
        err.print(f"[bold]{escape(d['collection'])}[/] ← {source}: {d['enriched']:,} enriched, {d['already']:,} done before, {d['failed']:,} failed, "
                  f"{d['without_resource']:,} without a resource_url, {d['requests']:,} requests, in {d['seconds']:.1f} s")  # fmt: skip
        for problem in d["problems"][:10]:
            err.print(f"  [yellow]failed[/] {escape(problem)}")
        if d["interrupted"]:
            err.print(f"[yellow]Stopped:[/] {escape(d['message'])}")
    if report.interrupted:
        sys.exit(75)
    if report.failed:
        sys.exit(3)


@click.command("sync", context_settings=CONTEXT)
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
    vitrina sync maps qdrant+edge:///data/qdrant-edge#maps  # Qdrant's engine in this process, no server
    vitrina sync maps qdrant:/data/qdrant-local#maps        # the client's local mode (small collections, tests)
    vitrina search maps "sea monster" --index qdrant+http://localhost:6333/maps"""
    from ..collection import open_collection

    # qdrant-client checks the server's version in a thread and warns when it cannot: the error below says it all.
    warnings.filterwarnings("ignore", message="Failed to obtain server version", category=UserWarning)
    with errors():
        try:
            report = open_collection(collection).sync(target, space=space, shards=shards, replicas=replicas)
        except Exception as e:  # the Qdrant client's and its transport's own exceptions
            message = target_problem(e, target)
            if message is None:
                raise
            raise click.ClickException(message) from None
    if as_json:
        echo_json(report.to_dict(), ensure_ascii=True)
        return
    stdout().print(f"synced space {escape(report.space)} to Qdrant collection {escape(report.collection)}: {report.new} new, {report.changed} changed, "
                    f"{report.removed} removed, {report.unchanged} unchanged; {report.points} points", highlight=False)  # fmt: skip


def target_problem(error: Exception, target: str) -> str | None:
    """A message for a sync target that cannot be reached or is not Qdrant (None: another error)."""
    module = type(error).__module__
    if not (
        isinstance(error, (OSError, ConnectionError))
        or module.startswith(("qdrant_client", "httpx", "httpcore", "grpc"))
    ):
        return None
    status = getattr(error, "status_code", None)
    if status is not None:
        why = f"the server answered HTTP {status} ({getattr(error, 'reason_phrase', '') or 'error'}), so it is not a Qdrant server"
    else:
        why = f"it cannot be reached ({str(error).splitlines()[0][:200] if str(error) else type(error).__name__})"
    return (f"Cannot sync to {target}: {why}. Start Qdrant there (docker run -p 6333:6333 qdrant/qdrant) "
            "or check the address: qdrant+http://HOST:PORT/NAME, or qdrant:PATH#NAME for a local copy.")  # fmt: skip


COMMANDS = (import_group, export, enrich, sync_cmd)
