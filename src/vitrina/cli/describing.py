"""Looking at collections: info, collections."""

from __future__ import annotations

import sys
from typing import Any

import click

from ._common import CONTEXT, echo_json, errors, escape, stderr, stdout


@click.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option(
    "--check",
    is_flag=True,
    help="Also check the files for consistency (SQLite integrity, vector file lengths, no failed item with a vector, no zero or non-finite vector).",
)
@click.option("--json", "as_json", is_flag=True)
def info(collection: str, check: bool, as_json: bool) -> None:
    """Describe COLLECTION: items, failures by reason, embedding spaces, size on disk."""
    from ..collection import open_collection

    with errors():
        data = open_collection(collection).info(check=check)
    if as_json:
        echo_json(data)
        return
    out = stdout()
    out.print(f"[bold]{escape(data['name'])}[/]  {escape(data['path'])}  ({data['disk_bytes'] / 1e6:.1f} MB)")
    status = ", ".join(f"{k}: {v}" for k, v in sorted(data["by_status"].items()))
    out.print(f"items: {data['items']} ({status or 'none'})")
    for s in data["spaces"]:
        dead = f", {s['dead_rows']} superseded rows" if s["dead_rows"] else ""
        out.print(
            f"space [bold]{escape(s['name'])}[/]: {s['vectors']} vectors, {escape(s['model'])} ({s['dim']} dims{dead})"
        )
        out.print(f"  index: {_describe_index(s)}", highlight=False)
        if s.get("regions"):
            out.print(f"  regions: {s['regions']} on {s['items_with_regions']} items ({s['region_policy']}), "
                      f"{s['vectors_per_item']} vectors per item", highlight=False)  # fmt: skip
    if data["failed_by_reason"]:
        out.print("failed: " + ", ".join(f"{r}: {n}" for r, n in sorted(data["failed_by_reason"].items())))
        for f in data["failures"][:10]:
            out.print(f"  [dim]{f['reason']}[/] {escape(f['detail'])}", highlight=False)
    pruned = data.get("pruned") or {}
    if pruned.get("hidden") or pruned.get("deleted"):
        out.print(
            f"pruned: {pruned['hidden']} hidden (vitrina prune --unhide), {pruned['deleted']} deleted, {pruned['bytes_saved'] / 1e6:.1f} MB saved"
        )
    if check:
        out.print("check: " + ("ok" if not data["problems"] else "; ".join(data["problems"])))
        if data["problems"]:
            sys.exit(1)


def _describe_index(s: dict[str, Any]) -> str:
    ann = s.get("ann")
    if not ann:
        return "exact (no approximate index; build one with vitrina index-ann)"
    if ann["status"] == "stale":
        return f"exact: the approximate index is stale ({ann['problem']}); rebuild it with vitrina index-ann"
    recall = ann.get("recall_at_10") or {}
    measured = ", ".join(f"{k} {v:.3f}" for k, v in recall.items() if k != "sample")
    behind = f", {ann['behind']} newer rows scanned exactly" if ann["behind"] else ""
    tuning = "\n  " + ann["tuning"]["summary"] if ann.get("tuning") else ""  # target, settings, measured recall
    return f"{s['index']} ({ann['status']}{behind}; recall@10 {measured} on {int(recall.get('sample', 0))} sampled queries; {ann['bytes'] / 1e6:.1f} MB){tuning}"


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True)
def collections(as_json: bool) -> None:
    """List the collections in $VITRINA_HOME."""
    from ..store import CollectionPaths, default_home

    home = default_home()
    names = sorted(p.name for p in home.iterdir() if CollectionPaths(p).is_collection()) if home.is_dir() else []
    if as_json:
        echo_json({"home": str(home), "collections": names}, indent=None, ensure_ascii=True)
    else:
        for name in names:
            click.echo(name)
        if not names:
            stderr().print(f"No collections in {home} yet.")


COMMANDS = (info, collections)
