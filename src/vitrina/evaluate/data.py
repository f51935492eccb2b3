"""The inputs of an evaluation and what makes it reproducible: caption pairs and their split,
judged queries, captions built from a collection's metadata, and the provenance of a report."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..collection import Collection
from ..errors import ConfigError, QueryError

SPLITS = ("held_out", "train", "all")


def read_pair_rows(path: Path) -> list[dict[str, Any]]:
    """Rows {"id", "caption", "split"} from JSONL (as `vitrina captions` writes) or a CSV
    id,caption[,split]; ``split`` is None where the file does not say."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            source: list[dict[str, Any]] = list(csv.DictReader(f))
    else:
        source = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in source:
        if row.get("id") and row.get("caption"):
            rows.append({"id": str(row["id"]), "caption": str(row["caption"]), "split": row.get("split") or None})
    return rows


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """JSONL lines {"id": ..., "caption": ...} (as `vitrina captions` writes) or a CSV id,caption."""
    return [(r["id"], r["caption"]) for r in read_pair_rows(path)]


def select_split(rows: Sequence[dict[str, Any]], split: str = "held_out") -> tuple[list[tuple[str, str]], str]:
    """The pairs of one split, and what to call it in a report. A file without a split column
    is evaluated whole and said to be so: nothing then shows that the model never saw them."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if not any(r.get("split") for r in rows):
        return [(r["id"], r["caption"]) for r in rows], "all (the pairs file has no split)"
    if split == "all":
        return [(r["id"], r["caption"]) for r in rows], "all (train and held-out)"
    chosen = [(r["id"], r["caption"]) for r in rows if (r.get("split") or "train") == split]
    if not chosen:
        raise QueryError(
            f"The pairs file has no {split!r} pairs; write them with `vitrina captions`, or evaluate --split all (and say so)."
        )
    return chosen, split


def file_sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_queries(path: Path) -> list[tuple[str, dict[str, float]]]:
    """CSV rows query,id[,relevance] (one row per judged item; relevance defaults to 1)."""
    judged: dict[str, dict[str, float]] = {}
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"query", "id"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: needs the columns query,id and optionally relevance.")
        for line, row in enumerate(reader, start=2):
            if row.get("query") and row.get("id"):
                try:
                    grade = float(row.get("relevance") or 1)
                except ValueError:
                    raise ConfigError(f"{path}, line {line}: relevance {row.get('relevance')!r} is not a number; "
                                      "give 0 (not relevant), 1 (relevant) or a higher grade.") from None  # fmt: skip
                judged.setdefault(row["query"], {})[row["id"]] = grade
    return list(judged.items())


def provenance(coll: Collection, spaces: Sequence[str], *, seed: int, files: dict[str, Path | None]) -> dict[str, Any]:
    """What a figure needs to be reproduced: collection, date, vitrina version, the models'
    fingerprints, the seed and the hashes of the input files."""
    import datetime

    from .. import __version__

    return {"collection": str(coll.path), "items": len(coll), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "vitrina": __version__, "seed": seed,
            "models": {s: json.loads(coll.space(s).fingerprint.to_json()) for s in spaces},
            "files": {name: {"path": str(path), "sha256": file_sha256(path)} for name, path in files.items() if path is not None}}  # fmt: skip


def captions(coll: Collection, *, held_out_percent: int = 20, file_names: bool = True) -> list[dict[str, Any]]:
    """Caption pairs from item metadata (the LoC recipe), split by group: items that share a
    series, a manifest or catalogue item, or a title stem (sheets of one map, items of one series)
    are joined into one group, and the group's hash picks its side, so near-duplicates never
    straddle train and held-out. Each row carries its ``group`` and ``caption_from`` ("caption",
    "title" or "file name": a folder collection's titles are its file names, see
    ``file_name_warning``); ``file_names=False`` leaves those out."""
    from ..captions import build_caption, caption_source, group_keys

    rows: list[dict[str, Any]] = []
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for item in coll.iter_items(exclude_status="failed"):
        caption = item.metadata.get("caption") or build_caption(item.metadata)
        source = caption_source(item.id, item.metadata)
        if caption and (file_names or source != "file name"):
            keys = group_keys(item.id, item.metadata)
            for other in keys[1:]:
                a, b = find(keys[0]), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            rows.append({"id": item.id, "caption": caption, "caption_from": source, "_key": keys[0]})
    for row in rows:
        group = find(row.pop("_key"))
        bucket = int(hashlib.md5(group.encode()).hexdigest(), 16) % 100
        row.update({"split": "held_out" if bucket < held_out_percent else "train", "group": group})
    return rows


def file_name_warning(rows: list[dict[str, Any]]) -> str | None:
    """A warning when captions were built from file names (a folder collection without a catalogue)."""
    named = [r for r in rows if r.get("caption_from") == "file name"]
    if not named:
        return None
    return (f"{len(named)} of {len(rows)} captions were built from file names (e.g. {named[0]['caption']!r}), not catalogue metadata: "
            "figures on them measure how the files were named, not search. Import metadata (vitrina import / enrich) for real "
            "captions, or leave them out with --skip-file-names (rows say caption_from).")  # fmt: skip
