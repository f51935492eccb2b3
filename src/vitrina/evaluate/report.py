"""Reports of an evaluation: Markdown tables, an HTML contact sheet of hits and misses, and an
SVG chart (no plotting library needed)."""

from __future__ import annotations

import io
from typing import Any

from ..collection import Collection
from ..images import read_image
from .retrieval import TOP

KINDS = ("text_to_image", "exact_image", "queries")


def _pct(value: float, ci: list[float] | None = None) -> str:
    return f"{value:.1%}" + (f" [{ci[0]:.1%}–{ci[1]:.1%}]" if ci else "")


def markdown(results: dict[str, Any]) -> str:
    """A table per evaluation kind, one row per space, with 95 % intervals and baselines; then
    paired tests, warnings and provenance."""
    lines = []
    for kind, by_space in results.items():
        if kind not in KINDS or not by_space:
            continue
        lines.append(f"### {kind}\n")
        first = next(iter(by_space.values()))
        if kind == "exact_image":
            names = [p for p in first if isinstance(first[p], dict) and "top1" in first[p] and p not in ("chance",)]
            lines.append(
                "| space | model | perturbation | top1 [95% CI] | top10 [95% CI] | random weights top1 / top10 | chance top1 / top10 | queries | candidates |"
            )
            lines.append("|---" * 9 + "|")
            for space, r in by_space.items():
                for p in names:
                    rnd = (r.get("random_weights") or {}).get(p)
                    base = f"{rnd['top1']:.1%} / {rnd['top10']:.1%}" if rnd else "n/a"
                    if rnd and rnd.get("paired"):
                        base += f" (model better: p = {rnd['paired']['p_value']:.3g})"
                    ci = r[p].get("ci95", {})
                    lines.append(f"| {space} | {r['model']} | {p} | {_pct(r[p]['top1'], ci.get('recall@1'))} | {_pct(r[p]['top10'], ci.get('recall@10'))} | {base} | "
                                 f"{r['chance']['top1']:.1%} / {r['chance']['top10']:.1%} | {r['queries']} | {r['candidates']} |")  # fmt: skip
        elif kind == "text_to_image":
            keys = [k for k, v in first.items() if isinstance(v, float)]
            lines.append(
                "| space | model | split | "
                + " | ".join(f"{k} [95% CI]" for k in keys)
                + " | queries | skipped | chance "
                + " / ".join(keys)
                + " |"
            )
            lines.append("|---" * (len(keys) + 6) + "|")
            for space, r in by_space.items():
                ci = r.get("ci95", {})
                cells = [
                    _pct(r[k], ci.get(k))
                    if k != "mrr"
                    else f"{r[k]:.3f}" + (f" [{ci['mrr'][0]:.3f}–{ci['mrr'][1]:.3f}]" if "mrr" in ci else "")
                    for k in keys
                ]
                chance_cells = " / ".join(
                    f"{r['chance'][k]:.1%}" if k != "mrr" else f"{r['chance'][k]:.3f}"
                    for k in keys
                    if k in r.get("chance", {})
                )
                lines.append(
                    f"| {space} | {r['model']} | {r.get('split', '')} | "
                    + " | ".join(cells)
                    + f" | {r['queries']} | {r.get('skipped', 0)} | {chance_cells} |"
                )
            for space, r in by_space.items():
                worst = [x["id"] for x in r.get("per_item", []) if x["best_rank"] >= 10][:3]
                if worst:
                    lines.append(
                        f"\n{space}: {r['never_found']} of {len(r['per_item'])} items never in the top 10 (e.g. {', '.join(worst)})."
                    )
            for space, r in by_space.items():
                if r.get("by"):
                    lines.append(f"\n{space}, by {r.get('by_key', 'value')}:\n")
                    lines.append("| value | recall@1 | recall@10 | mrr | queries |\n|---|---|---|---|---|")
                    for value, v in r["by"].items():
                        lines.append(
                            f"| {value} | {v['recall@1']:.1%} | {v['recall@10']:.1%} | {v['mrr']:.3f} | {v['queries']} |"
                        )
        else:
            keys = [k for k, v in first.items() if isinstance(v, float)]
            lines.append("| space | model | " + " | ".join(keys) + " | queries | skipped |")
            lines.append("|---" * (len(keys) + 4) + "|")
            for space, r in by_space.items():
                lines.append(
                    f"| {space} | {r['model']} | "
                    + " | ".join(f"{r[k]:.3f}" if k.startswith("ndcg") else f"{r[k]:.1%}" for k in keys)
                    + f" | {r['queries']} | {len(r.get('skipped_queries', []))} |"
                )
        lines.append("")
    if results.get("candidate_set"):
        c = results["candidate_set"]
        lines.append(f"All spaces evaluated on the {c['items']} items they all cover; dropped: "
                     + ", ".join(f"{n} from {s}" for s, n in c["dropped"].items()) + ".\n")  # fmt: skip
    for test in results.get("paired", []) + results.get("paired_exact_image", []):
        verdict = "significant" if test["significant"] else "not significant"
        what = f" ({test['perturbation']} copies)" if test.get("perturbation") else ""
        lines.append(f"Paired test{what}, {test['b']} vs {test['a']} on {test['queries']} queries: MRR difference {test['mrr_difference']:+.3f} "
                     f"[95% CI {test['ci95'][0]:+.3f} to {test['ci95'][1]:+.3f}], p = {test['p_value']:.3g} ({verdict} at 0.05); "
                     f"better on {test['better']}, worse on {test['worse']}.")  # fmt: skip
    for w in results.get("warnings", []):
        lines.append(f"\n**Warning:** {w}")
    prov = results.get("provenance")
    if prov:
        files = ", ".join(f"{k} {v['path']} ({v['sha256'][:19]}…)" for k, v in prov["files"].items())
        models = ", ".join(f"{s}: {m['spec']} @ {m.get('revision')}" for s, m in prov["models"].items())
        lines.append(f"\n_Collection {prov['collection']} ({prov['items']} items), {prov['date']}, vitrina {prov['vitrina']}, seed {prov['seed']}; models {models}"
                     + (f"; files {files}" if files else "") + "._")  # fmt: skip
    return "\n".join(lines)


def contact_sheet(
    coll: Collection, results: dict[str, Any], *, misses: int = 20, hits: int = 8, fetcher: Any = None
) -> str:
    """An HTML page of text→image hits and misses per space: the caption, its target and what was
    found first, as small embedded thumbnails (no requests leave the page). Every string from the
    collection is escaped; ids are shown, never linked."""
    import base64
    import html

    thumbs: dict[str, str] = {}

    def thumb(item_id: str) -> str:
        if item_id not in thumbs:
            uri = ""
            try:
                item = coll.item(item_id)
                im = read_image(item.image, fetcher=fetcher).convert("RGB")
                im.thumbnail((112, 112))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=70)
                uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
            except Exception:  # an unreadable image is shown as its id alone
                pass
            thumbs[item_id] = uri
        uri = thumbs[item_id]
        img = f'<img src="{uri}" alt="">' if uri else '<span class="none">no image</span>'
        return f"<figure>{img}<figcaption>{html.escape(item_id)}</figcaption></figure>"

    parts = ["<!doctype html><html><head><meta charset=utf-8>",
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
             "<title>vitrina contact sheet</title><style>body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}td{border-top:1px solid #ccc;"
             "padding:4px;vertical-align:top}figure{display:inline-block;margin:2px;width:116px}img{max-width:112px;max-height:112px}"
             "figcaption{font-size:10px;overflow-wrap:anywhere}.target{background:#e6f2e6}.miss{color:#a00}.near{color:#a60}.none{color:#888}</style></head><body>"]  # fmt: skip
    for space, r in (results.get("text_to_image") or {}).items():
        queries = sorted(r.get("per_query", []), key=lambda q: -q["rank"])
        # The worst-ranked queries first (a miss: not in the top 10), then some found first.
        chosen = [("miss" if q["rank"] >= 10 else "near", q) for q in queries if q["rank"] > 0][:misses] + [
            ("hit", q) for q in reversed(queries) if q["rank"] == 0
        ][:hits]
        parts.append(
            f"<h2>{html.escape(space)} ({html.escape(str(r.get('model', '')))}), split {html.escape(str(r.get('split', '')))}</h2>"
        )
        parts.append(
            f"<p>{r.get('never_found', 0)} of {len(r.get('per_item', []))} items are never in the top 10; recall@10 {r.get('recall@10', 0):.1%}.</p>"
        )
        parts.append("<table><tr><th>caption</th><th>rank</th><th>target</th><th>found first</th></tr>")
        for kind, q in chosen:
            found = "".join(thumb(i) for i in q.get("top", [])[:TOP])
            parts.append(f'<tr class="{kind}"><td>{html.escape(q["caption"])}</td><td class="{kind}">{q["rank"] + 1}</td>'
                         f'<td class="target">{thumb(q["id"])}</td><td>{found}</td></tr>')  # fmt: skip
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def svg_chart(results: dict[str, dict[str, Any]], title: str = "vitrina evaluation") -> str:
    """Grouped bars: one group per metric, one bar per space (no plotting library needed)."""
    bars: list[tuple[str, str, float]] = []  # (metric, space, value)
    for kind, by_space in results.items():
        if kind not in KINDS:
            continue
        for space, r in by_space.items():
            for key, value in r.items():
                if isinstance(value, float) and key != "mrr":
                    bars.append((f"{kind}: {key}", space, value))
                elif isinstance(value, dict) and "top10" in value and key != "chance":
                    bars.append((f"{kind}: {key} top10", space, float(value["top10"])))
    metrics = list(dict.fromkeys(b[0] for b in bars))
    spaces = list(dict.fromkeys(b[1] for b in bars))
    colours = ["#8a3b12", "#1f6f8b", "#5b8c2a", "#7a4e9d", "#c08a00"]
    row_h, bar_h, left, width = 18 * max(1, len(spaces)) + 14, 16, 250, 420
    height = 50 + row_h * len(metrics) + 24 * len(spaces)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{_esc(title)}</text>']  # fmt: skip
    y = 40
    for metric in metrics:
        out.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{_esc(metric)}</text>')
        for s, space in enumerate(spaces):
            value = next((b[2] for b in bars if b[0] == metric and b[1] == space), None)
            if value is None:
                continue
            w = max(1.0, width * value)
            out.append(
                f'<rect x="{left}" y="{y + s * 18}" width="{w:.1f}" height="{bar_h}" fill="{colours[s % len(colours)]}"/>'
            )
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + s * 18 + 12}">{value:.1%}</text>')
        y += row_h
    for s, space in enumerate(spaces):
        out.append(
            f'<rect x="10" y="{y + 6 + s * 22}" width="14" height="14" fill="{colours[s % len(colours)]}"/><text x="30" y="{y + 18 + s * 22}">{_esc(space)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
