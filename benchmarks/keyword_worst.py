#!/usr/bin/env python3
"""The worst keyword query the service allows, at 100k (or 1M) items (issue 28, item 3).

    python benchmarks/keyword_worst.py [--rows 100000] [--repeats 5] [--limit 200] [--baseline-src DIR]

With ``--baseline-src`` (the ``src`` folder of another checkout, e.g. a ``git worktree`` of
main), the same queries are timed first with that code (in a child process, same collection),
then with this one, alternating per query, and both are printed: before/after in one run.

Builds (once, in --dir) a collection whose items carry a title of 3 words and 40 words of
context drawn from a Zipf-distributed vocabulary of 30,000 made-up words (3 to 10 letters),
through the real store API (so the FTS5 table is filled by its triggers). Then times, through
``Collection.search`` (ranking, snippets and OCR word boxes, as the service does):

- the baseline: one rare word;
- one common word;
- the worst allowed query: ``MAX_WORDS`` (32) prefixes of ``MIN_PREFIX`` (3) letters, the
  prefixes that occur in the most items, at the largest page the service gives (--limit);
- the same 32 prefixes with one letter more each (each then expands to many terms).

Prints a Markdown table (p50, p95, ratio to the rare word) for docs/benchmarks.md, and writes
JSON to benchmarks/results/keyword_worst.json. A query stopped by its deadline is reported as
such (its time is then the deadline, not the work it would have taken).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 30_000
LETTERS = np.array(list("abcdefghijklmnoprstuvy"))


def vocabulary(rng: np.random.Generator) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < VOCAB:
        n = int(rng.integers(3, 11))
        words["".join(rng.choice(LETTERS, n))] = None
    return list(words)


def build(path: Path, rows: int) -> tuple[float, list[str], np.ndarray]:
    from vitrina import Item, open_collection

    rng = np.random.default_rng(0)
    vocab = vocabulary(rng)
    ranks = np.minimum(rng.zipf(1.2, (rows, 43)), VOCAB) - 1
    if (path / "collection.sqlite").exists():
        return 0.0, vocab, ranks
    coll = open_collection(path, create=True)
    t0 = time.perf_counter()
    with coll.writer():
        for start in range(0, rows, 50_000):
            coll.add_items(
                Item(id=f"it-{i:07d}", image=f"/scans/{i}.jpg", fingerprint="1", source="bench",
                     metadata={"title": " ".join(vocab[int(r)] for r in ranks[i, :3]).title()},
                     context=" ".join(vocab[int(r)] for r in ranks[i, 3:]))
                for i in range(start, min(rows, start + 50_000))
            )  # fmt: skip
    return time.perf_counter() - t0, vocab, ranks


def worst_prefixes(vocab: list[str], ranks: np.ndarray, letters: int, n: int = 32) -> list[str]:
    """The ``n`` prefixes of ``letters`` letters found in the most items (a sample of 20k items)."""
    seen: Counter[str] = Counter()
    for row in ranks[:20_000]:
        seen.update({vocab[int(r)][:letters] for r in row if len(vocab[int(r)]) >= letters})
    return [p for p, _ in seen.most_common(n)]


def timed(fn, repeats: int) -> tuple[float, float, str]:  # type: ignore[no-untyped-def]
    from vitrina.errors import QueryError

    times, outcome = [], "answered"
    for _ in range(repeats + 1):
        t = time.perf_counter()
        try:
            fn()
        except QueryError as e:  # the deadline (or the cap on expanded terms) stopped it
            outcome = f"refused: {str(e)[:60]}…"
        times.append(time.perf_counter() - t)
    times = times[1:]  # the first warms the page cache
    return float(np.median(times) * 1000), float(np.percentile(times, 95) * 1000), outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=200, help="the page size (the service's max_limit)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/vitrina-keyword-bench"))
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/, timed in the same run")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one query by name, JSON out (the baseline child)
    args = parser.parse_args()
    from vitrina import open_collection
    from vitrina.index.keyword import MAX_WORDS, MIN_PREFIX

    path = args.dir / f"c-{args.rows}"
    items_seconds, vocab, ranks = build(path, args.rows)
    coll = open_collection(path, index="exact")
    rare, common = vocab[25_000], vocab[0]
    p3 = " ".join(p + "*" for p in worst_prefixes(vocab, ranks, MIN_PREFIX, MAX_WORDS))
    p4 = " ".join(p + "*" for p in worst_prefixes(vocab, ranks, MIN_PREFIX + 1, MAX_WORDS))
    runs = {
        "one rare word (baseline)": rare,
        "one common word": common,
        f"{MAX_WORDS} most common {MIN_PREFIX}-letter prefixes (worst allowed)": p3,
        f"{MAX_WORDS} most common {MIN_PREFIX + 1}-letter prefixes": p4,
    }
    if args.only:
        print(json.dumps(timed(lambda: coll.search(keywords=runs[args.only], limit=args.limit), args.repeats)))
        return
    out: dict[str, tuple[float, float, str]] = {}
    before: dict[str, tuple[float, float, str]] = {}
    for name, k in runs.items():
        if args.baseline_src:
            env = {**os.environ, "PYTHONPATH": str(args.baseline_src.resolve())}
            cmd = [sys.executable, __file__, "--rows", str(args.rows), "--repeats", str(args.repeats),
                   "--limit", str(args.limit), "--dir", str(args.dir), "--only", name]  # fmt: skip
            before[name] = tuple(json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))  # type: ignore[assignment]  # fmt: skip
        out[name] = timed(lambda k=k: coll.search(keywords=k, limit=args.limit), args.repeats)
    base = out["one rare word (baseline)"][0]
    print(
        f"\n{args.rows} items, page of {args.limit}, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; items + FTS written in {items_seconds:.1f} s"
    )
    print("| query | p50 | p95 | ratio to rare word | outcome |\n|---|---|---|---|---|")
    for name, (p50, p95, outcome) in out.items():
        print(f"| {name} | {p50:.1f} ms | {p95:.1f} ms | {p50 / base:.1f}× | {outcome} |")
    if before:
        print(f"\nbefore ({args.baseline_src}) and after (this checkout), same run:")
        print("| query | before p50 | before p95 | after p50 | after p95 | after / before |\n|---|---|---|---|---|---|")
        for name, (p50, p95, _) in out.items():
            b50, b95, _ = before[name]
            print(f"| {name} | {b50:.1f} ms | {b95:.1f} ms | {p50:.1f} ms | {p95:.1f} ms | {p50 / b50:.2f}× |")
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"keyword_worst_{args.rows}.json").write_text(
        json.dumps({"rows": args.rows, "limit": args.limit, "ms": out, "before_ms": before, "queries": runs}, indent=2)
    )


if __name__ == "__main__":
    main()
