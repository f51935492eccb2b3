"""Running an evaluation over a collection's spaces, as ``vitrina eval`` and ``vitrina compare`` do.

``EvalOptions`` says what to measure (caption pairs, exact image, judged queries, the modes side
by side); ``run_eval`` measures it for each space, with the paired comparison between spaces, the
provenance and the warnings a reader of the figures needs; ``compare_models`` first embeds the
collection with each model in a space of its own. ``write_report`` and ``write_contact_sheet``
write the files. The measuring itself is ``vitrina.evaluate``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import evaluate as ev
from .collection import Collection, open_collection, space_name_for
from .indexer import IndexReport

__all__ = ["EvalOptions", "compare_models", "run_eval", "write_contact_sheet", "write_report"]

# (what is being measured, done, total): e.g. ("clip: text→image", 256, 1000)
LabelledProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvalOptions:
    pairs: Path | None = None  # caption pairs: text→image recall@k, MRR
    split: str = "held_out"  # which pairs: held_out, train or all
    exact_image: bool = False  # perturbed copies as queries
    sample: int = 200  # items perturbed
    candidates: int = 1000  # items they are ranked among
    baseline: bool = True  # the same model with random weights beside it
    queries: Path | None = None  # judged queries: nDCG@10, P@10
    by_key: str | None = None  # text→image broken down by this metadata key or tag
    seed: int = 0
    modes: bool = False  # with queries: also CLIP only, keywords only and fused, side by side


def run_eval(
    coll: Collection,
    spaces: Sequence[str] | None,
    options: EvalOptions,
    *,
    progress: LabelledProgress | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """{"text_to_image", "exact_image", "queries": {space: figures}, "paired", "provenance",
    "warnings"[, "image_only_spaces"][, "modes"]} for ``spaces`` (None: all). Text evaluations
    skip image-only spaces. ``on_warning`` hears each warning as soon as the figures are in
    (before the modes run); they are in the result as well."""
    o = options
    spaces = list(spaces) if spaces is not None else [s.name for s in coll.spaces()]
    results: dict[str, Any] = {"text_to_image": {}, "exact_image": {}, "queries": {}}
    pair_list, split_used = ev.select_split(ev.read_pair_rows(o.pairs), o.split) if o.pairs else (None, None)
    judged = ev.read_queries(o.queries) if o.queries else None

    def labelled(label: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(label, done, total)

    text_spaces = [s for s in spaces if "text" in coll.space(s).fingerprint.modalities]
    # Spaces that cover different items would rank among different candidates: compare them all on
    # the items every one of them covers, and say what was dropped.
    common, candidate_set = ev.common_candidates(coll, spaces) if len(spaces) > 1 else (None, None)
    if candidate_set:
        results["candidate_set"] = candidate_set
    for space in spaces:
        if pair_list is not None and space in text_spaces:
            r = ev.eval_pairs(coll, pair_list, space=space, split=split_used, seed=o.seed, progress=labelled(f"{space}: text→image"),
                              candidates=common)  # fmt: skip
            if o.by_key:
                r["by"], r["by_key"] = ev.breakdown(coll, r["per_query"], o.by_key), o.by_key
            results["text_to_image"][space] = r
        if o.exact_image:
            results["exact_image"][space] = ev.eval_exact_image(coll, sample=o.sample, space=space, seed=o.seed, candidates=o.candidates, baseline=o.baseline,
                                                                progress=labelled(f"{space}: exact image"), restrict=common)  # fmt: skip
        if judged is not None and space in text_spaces:
            results["queries"][space] = ev.eval_queries(
                coll, judged, space=space, progress=labelled(f"{space}: judged queries"), candidates=common
            )
    skipped = [s for s in spaces if s not in text_spaces]
    if skipped and (pair_list is not None or judged is not None):
        results["image_only_spaces"] = skipped
    if pair_list is not None and len(results["text_to_image"]) > 1:
        results["paired"] = ev.paired_comparisons(results["text_to_image"], seed=o.seed)
    if len(results["exact_image"]) > 1:
        results["paired_exact_image"] = ev.paired_exact_image(results["exact_image"], seed=o.seed)
    results["provenance"] = ev.provenance(coll, spaces, seed=o.seed, files={"pairs": o.pairs, "queries": o.queries})
    results["warnings"] = _warnings(results, split_used, skipped)
    if candidate_set:
        covered = ", ".join(f"{s} {n}" for s, n in candidate_set["covered"].items())
        dropped = ", ".join(f"{n} from {s}" for s, n in candidate_set["dropped"].items() if n)
        results["warnings"].insert(0, f"The spaces cover different items ({covered}): every space was evaluated on the {candidate_set['items']} "
                                      f"items they all cover ({dropped} dropped), so their figures compare.")  # fmt: skip
    for test in results.get("paired", []) + results.get("paired_exact_image", []):
        if test.get("warning"):
            results["warnings"].append(
                f"paired test {test['b']} vs {test['a']}{' (' + test['perturbation'] + ')' if test.get('perturbation') else ''}: {test['warning']}"
            )
    for w in results["warnings"]:
        if on_warning:
            on_warning(w)
    if o.modes and judged is not None:
        from .evaluate_modes import eval_modes

        results["modes"] = {s: eval_modes(coll, judged, space=s) for s in results["queries"]}
    return results


def _warnings(results: dict[str, Any], split_used: str | None, image_only: list[str]) -> list[str]:
    """What a reader of the figures must know: training overlap, each evaluation's own warnings,
    pairs that were not held out, spaces whose model has no text side."""
    warnings = [w for kind in ("text_to_image", "exact_image", "queries") for space, r in results[kind].items()
                for w in ([f"{space}: {r['training_overlap']['warning']}"] if r.get("training_overlap", {}).get("warning") else []) + [f"{space}: {x}" for x in r.get("warnings", [])]]  # fmt: skip
    if split_used and not split_used.startswith("held_out"):
        warnings.insert(
            0,
            f"Evaluated on {split_used} pairs, not held-out ones: a model fine-tuned on these pairs will look better than it is.",
        )
    for space in image_only:
        warnings.append(f"{space}: image-only model, text evaluations skipped.")
    return warnings


def compare_models(
    collection: str,
    models: Sequence[str],
    spaces: Sequence[str],
    options: EvalOptions,
    *,
    device: str | None = None,
    on_indexed: Callable[[str, IndexReport], None] | None = None,
    progress: LabelledProgress | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[Collection, dict[str, Any]]:
    """Embed ``collection`` with each of ``models`` (each in the space named after it; ``on_indexed``
    hears each run), then evaluate those spaces and ``spaces`` (``run_eval``). Returns the
    collection, opened afresh after indexing, and the results."""
    coll = open_collection(collection)
    names = list(spaces)
    for spec in models:
        r = coll.index(model=spec, space=space_name_for(spec), device=device)
        if on_indexed:
            on_indexed(spec, r)
        names.append(r.space)
    coll = open_collection(collection)
    return coll, run_eval(coll, list(dict.fromkeys(names)), options, progress=progress, on_warning=on_warning)


def write_report(results: dict[str, Any], report: Path) -> list[Path]:
    """REPORT.md, REPORT.json and REPORT.svg (a chart) beside each other; returns their paths."""
    report.parent.mkdir(parents=True, exist_ok=True)
    md, js, svg = Path(f"{report}.md"), Path(f"{report}.json"), Path(f"{report}.svg")
    md.write_text("# Retrieval quality\n\n" + ev.markdown(results))
    js.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    svg.write_text(ev.svg_chart(results))
    return [md, js, svg]


def write_contact_sheet(coll: Collection, results: dict[str, Any], path: Path) -> Path:
    """An HTML page of the text→image hits and misses in ``results`` (see ``evaluate.contact_sheet``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ev.contact_sheet(coll, results), encoding="utf-8")
    return path
