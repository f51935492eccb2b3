"""Asking a collection: search, serve, and the demo that builds one and searches it."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click

from ..options import click_options as search_options
from ._common import CONTEXT, errors, escape, print_report, progress_bars, stderr, stdout, target_of

NEGATIVE_TERM = re.compile(r"-(\d+\.?\d*|\.\d+):")  # "-0.5:colour", "-2:whale", "-.5:hat"


class WeightedTerms(click.Command):
    """``vitrina search`` with negative weighted terms read as terms, not as bundles of short
    options: click read "-0.5:a tree" as -a (--alpha) " tree", "-0.5:whale" as -w (--where)
    "hale", "-0.5:hat" as -h (help), "-0.5:kid" as -k (--keywords) "id". Each such argument is
    swapped for a placeholder while click parses, then put back wherever it landed."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        held: dict[str, str] = {}
        shielded = []
        for arg in args:
            if NEGATIVE_TERM.match(arg):
                key = f"\x00term{len(held)}\x00"
                held[key] = arg
                arg = key
            shielded.append(arg)
        rest = super().parse_args(ctx, shielded)
        if held:

            def restore(value: Any) -> Any:
                if isinstance(value, str):
                    return held.get(value, value)
                if isinstance(value, tuple):
                    return tuple(restore(v) for v in value)
                return value

            ctx.params = {k: restore(v) for k, v in ctx.params.items()}
            rest = [held.get(a, a) for a in rest]
        return rest


@click.command(cls=WeightedTerms, context_settings={**CONTEXT, "ignore_unknown_options": True})
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
    help="Answer from a Qdrant copy made by `vitrina sync`: qdrant+http://HOST:PORT/NAME, qdrant+edge:///FOLDER#NAME or qdrant:PATH#NAME.",
)
@click.option(
    "--no-daemon",
    is_flag=True,
    help="Answer in this process; by default a text or image query goes to a local query service that keeps the model loaded (VITRINA_NO_DAEMON=1 to turn it off).",
)
def search(collection: str, terms: tuple[str, ...], images: tuple[str, ...], alpha: float | None, where: tuple[str, ...], min_score: float | None,
           limit: int, offset: int, include_self: bool, space: str | None, batch_file: Any, as_json: bool, exact: bool = False, index_target: str | None = None,
           keywords: str = "", keyword_weight: float | None = None, fusion: str = "weighted", include_hidden: bool = False, as_csv: bool = False,
           no_daemon: bool = False) -> None:  # fmt: skip
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
    unknown = [t for t in terms if t.startswith("--")]
    if unknown:
        raise click.UsageError(f"No such option: {unknown[0]}")
    common: dict[str, Any] = {"alpha": alpha, "min_score": min_score, "limit": limit, "offset": offset, "include_self": include_self,
                              "keywords": keywords, "keyword_weight": keyword_weight, "fusion": fusion, "include_hidden": include_hidden}  # fmt: skip
    index = "exact" if exact else index_target or "auto"
    with errors():
        if batch_file is not None:
            from ..collection import open_collection
            from ..query import Query

            coll = open_collection(collection, index=index)
            lines = [line.strip() for line in batch_file if line.strip()]
            queries = [Query.build(line.split("\t"), images, where=where, **common) for line in lines]
            for line, hits in zip(lines, coll.run(queries, space=space)):
                click.echo(json.dumps({"query": line, "hits": hits.to_list()}, ensure_ascii=False))
            return
        req = {"collection": collection, "index": index, "terms": list(terms), "images": list(images), "where": list(where),
               "space": space, "common": common, "about": as_json or as_csv, "model": _needs_model(terms, images)}  # fmt: skip
        payload = _ask_service(req, no_daemon) if req["model"] else None
        if payload is None:
            from ..collection import open_collection
            from ..query_service import answer

            payload = answer(open_collection(collection, index=index), req)
        elif "error" in payload:
            stderr().print(f"[bold red]Error:[/] {escape(payload['error'])}", markup=True, highlight=False)
            sys.exit(payload["exit"])
    _print_hits(payload, as_json, as_csv, min_score, bool(keywords or keyword_weight))


def _needs_model(terms: tuple[str, ...], images: tuple[str, ...]) -> bool:
    """Text, or an image file or URL, is embedded by the model; item ids and keywords are not (and
    answer quickly in-process)."""
    return bool(terms) or any(i.startswith(("http://", "https://")) or os.path.exists(i) for i in images)


def _ask_service(req: dict[str, Any], no_daemon: bool) -> dict[str, Any] | None:
    """The query service's answer (see vitrina.query_service), or None to answer in-process."""
    from .. import query_service

    if no_daemon or query_service.disabled():
        return None
    return query_service.ask(req)


def _print_hits(payload: dict[str, Any], as_json: bool, as_csv: bool, min_score: float | None, keyworded: bool) -> None:
    """Print a search payload (``query_service.answer``) as a table, JSON or CSV."""
    hits = payload["hits"]
    if as_json or as_csv:
        about = payload["about"]
        if as_csv:
            from ..citable import hits_csv
            from ..query import Hits
            from ..records import Hit

            rows = Hits([Hit(id=h["id"], score=s, image=h["image"], metadata=h["metadata"], rank=h["rank"]) for h, s in zip(hits, payload["scores"])])  # fmt: skip
            click.echo(hits_csv(rows, about), nl=False)
            return
        click.echo(
            json.dumps({**about, "considered": payload["considered"], "hits": hits,
                        **({"keyword_capped": True} if payload.get("keyword_capped") else {})}, ensure_ascii=False, indent=2)
        )  # fmt: skip
        return
    if payload.get("keyword_capped"):
        stderr().print("Very broad keywords: ranked by the rarest of them only (see docs/keyword-search.md).")
    if not hits:
        stderr().print("No hits." + (" Try a lower --min-score." if min_score is not None else ""))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    columns = (("#", "right"), ("score", "right"), ("id", "left"), ("title", "left")) + (
        (("matched", "left"),) if keyworded else ()
    )
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for hit, score in zip(hits, payload["scores"]):
        row: list[str | Text] = [
            str(hit["rank"]),
            f"{score:.3f}",
            Text(hit["id"]),
            Text(str(hit["metadata"].get("title", ""))),
        ]
        if len(columns) > 4:
            snippet = Text()
            for part in hit.get("snippet", ()):
                snippet.append(part["text"], style="bold reverse" if part["match"] else None)
            row.append(snippet)
        table.add_row(*row)
    stdout().print(table)


@click.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 to serve a network)."
)
@click.option("-p", "--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token", envvar="VITRINA_TOKEN", help="Allow write endpoints for requests bearing this token (or VITRINA_TOKEN)."
)
@click.option(
    "--tokens", "named_tokens", envvar="VITRINA_TOKENS",
    help="Named write tokens, so the server records who wrote: 'alice:TOKEN1,bob:TOKEN2' or @FILE (one name:token a line); or VITRINA_TOKENS.",
)  # fmt: skip
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allow browser calls from this origin (repeatable). Off by default.",
)
@click.option("--max-upload-mb", default=10, show_default=True, type=click.IntRange(1, 500))
@click.option(
    "--image-cache-mb",
    type=click.IntRange(0, None),
    help="Disk kept for thumbnails, and as much for deep-zoom tiles, oldest dropped first "
    "[default: 1024, or a quarter of the free disk if less; 0 keeps none].",
)
@click.option(
    "--allow-private-urls",
    is_flag=True,
    envvar="VITRINA_ALLOW_PRIVATE_URLS",
    help="Let image-URL queries reach private and loopback addresses (trusted networks only; or VITRINA_ALLOW_PRIVATE_URLS=1).",
)
@click.option(
    "--exact", is_flag=True, help="Scan every vector even where an approximate index is built (see index-ann)."
)
@click.option(
    "--index",
    "index_target",
    help="Answer from a Qdrant copy made by `vitrina sync`: qdrant+http://HOST:PORT/NAME, qdrant+edge:///FOLDER#NAME or qdrant:PATH#NAME.",
)
@click.option(
    "--get", "get_path", help="Answer one GET request for this path in-process, print it and exit (smoke tests)."
)
def serve(collection: str, host: str, port: int, token: str | None, cors_origins: tuple[str, ...], max_upload_mb: int, allow_private_urls: bool, get_path: str | None,
          exact: bool = False, index_target: str | None = None, named_tokens: str | None = None,
          image_cache_mb: int | None = None) -> None:  # fmt: skip
    """Serve COLLECTION: a JSON API (OpenAPI docs at /docs) and a web page at /.

    Needs pip install 'vitrina[server]'. Read-only unless --token (or --tokens) is given."""
    try:
        from ..service import ServiceConfig, create_app
    except ImportError as e:
        raise click.ClickException(
            f"The server needs extra packages: pip install 'vitrina[server]' ({e.name} is missing)"
        ) from e
    with errors():
        from ..service.identity import parse_tokens

        config = ServiceConfig(collection=collection, token=token, named_tokens=parse_tokens(named_tokens), cors_origins=cors_origins, max_upload_bytes=max_upload_mb * 1024 * 1024, allow_private_urls=allow_private_urls,
                               index="exact" if exact else index_target or "auto",
                               image_cache_bytes=None if image_cache_mb is None else image_cache_mb << 20)  # fmt: skip
        app = create_app(config)
        app.state.service.start()  # load the model now: a space it cannot answer is a message, not a traceback
    if get_path is not None:
        from fastapi.testclient import TestClient

        with TestClient(app) as client:
            response = client.get(get_path)
        click.echo(response.text)
        sys.exit(0 if response.status_code < 400 else 1)
    import uvicorn

    stderr().print(f"Serving {escape(collection)} at http://{host}:{port}/  (API docs: /docs; Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@click.command(context_settings=CONTEXT)
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
    from ..collection import open_collection
    from ..demo import EXAMPLE_QUERIES, IMAGES

    err = stderr()
    with errors():
        coll = open_collection(collection, create=True)
        with progress_bars(err, False) as (on_scan, on_embed):
            report = coll.index(str(IMAGES), model="mini", progress=on_embed, on_scan=on_scan)
        if not as_json:
            print_report(err, report, target_of(coll))
        results = {" ".join(repr(t) for t in terms): coll.search(terms, limit=3) for terms in EXAMPLE_QUERIES}
        car = results["'a car'"]
        if car:
            results[f"--image {car[0].id}"] = coll.search(image=car[0].id, limit=3)
    if as_json:
        click.echo(json.dumps({q: h.to_list() for q, h in results.items()}, ensure_ascii=False, indent=2))
        return
    out = stdout()
    for query, hits in results.items():
        shown = ", ".join(f"{h.id} ({h.score:.2f})" for h in hits)
        out.print(f"[bold]vitrina search {escape(coll.name)} {escape(query)}[/] → {escape(shown)}")
    out.print(f'\nTry your own: vitrina search {coll.name} "a bicycle"   ·   vitrina info {coll.name}')
    out.print("Index your own folder offline: vitrina index ./scans --collection mine --model mini")
    if serve_port is not None:
        ctx.invoke(serve, collection=collection, port=serve_port)


@click.command("query-services", context_settings=CONTEXT)
@click.option("--stop", is_flag=True, help="Stop every running query service (they restart on the next search).")
@click.option("--json", "as_json", is_flag=True, help="Print the services as JSON.")
def query_services(stop: bool, as_json: bool) -> None:
    """List the local query services that keep a collection's model loaded between searches, or stop them.

    `vitrina search` starts one per collection on its first text or image query and it stops by
    itself after $VITRINA_DAEMON_IDLE seconds (600) without a query: see docs/query-service.md.
    """
    import time

    from .. import query_service

    out = stdout()
    services = query_service.describe()
    stopped = query_service.stop_all() if stop else 0
    if as_json:
        click.echo(json.dumps({"services": services, "stopped": stopped}, indent=2, ensure_ascii=False))
        return
    if not services:
        out.print(
            "No query service is running"
            + (f" (runtime folder {query_service.runtime_dir()})." if query_service.runtime_dir() else ".")
        )
        return
    now = time.time()
    for svc in services:
        if not svc.get("answering"):
            out.print(f"{escape(svc['socket'])}: busy (loading a model or answering), or from another vitrina version")
            continue
        held = ", ".join(
            c["collection"] + (f" ({c['index']})" if c["index"] not in ("", "auto") else "") for c in svc["collections"]
        )
        idle = now - svc["last_query"]
        left = max(0.0, svc["stops_after_idle_s"] - idle)
        out.print(
            f"pid {svc['pid']}: {escape(held or 'no collection open yet')}; {svc['queries']} queries, "
            f"last {idle:.0f} s ago, stops in {left:.0f} s unless asked again"
        )
    if stop:
        out.print(f"Stopped {stopped} query service{'s' if stopped != 1 else ''}.")


COMMANDS = (search, serve, demo, query_services)
