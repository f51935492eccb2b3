"""Measuring search quality: eval (one collection's spaces) and compare (several models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import CONTEXT, echo_json, errors, escape, stderr

SHEET_NEEDS_PAIRS = "--contact-sheet shows text→image hits and misses: give --pairs as well."


@click.command("eval", context_settings=CONTEXT)
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
    from ..collection import open_collection
    from ..eval_run import EvalOptions, run_eval

    if not (pairs or exact_image or queries):
        raise click.UsageError("Give --pairs, --exact-image and/or --queries.")
    if contact_sheet and not pairs:
        raise click.UsageError(SHEET_NEEDS_PAIRS)
    options = EvalOptions(pairs=pairs, split=split, exact_image=exact_image, sample=sample, candidates=candidates, baseline=not no_baseline,
                          queries=queries, by_key=by_key, seed=seed, modes=bool(modes and queries))  # fmt: skip
    with errors():
        coll = open_collection(collection)
        lines = _Lines(quiet)
        results = run_eval(coll, list(spaces) or None, options, progress=lines.progress, on_warning=lines.warn)
        lines.end()
        _write_contact_sheet(coll, results, contact_sheet)
    _print_eval(results, report, as_json)
    if results.get("modes") and not as_json:
        from ..evaluate_modes import markdown

        for space, r in results["modes"].items():
            click.echo(f"\nCLIP / keywords / fused ({space}):\n{markdown(r)}")


@click.command(context_settings=CONTEXT)
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
    from ..eval_run import EvalOptions, compare_models

    if not (models or spaces):
        raise click.UsageError("Give --models and/or --space.")
    if contact_sheet and not pairs:
        raise click.UsageError(SHEET_NEEDS_PAIRS)
    if not (pairs or exact_image or queries):
        exact_image = True  # needs no labels
    options = EvalOptions(pairs=pairs, split=split, exact_image=exact_image, sample=sample, candidates=candidates, baseline=not no_baseline,
                          queries=queries, by_key=by_key, seed=seed)  # fmt: skip

    lines = _Lines(quiet)

    def indexed(spec: str, r: Any) -> None:
        lines.end()
        lines.err.print(f"{escape(spec)}: {r.embedded} embedded, space {escape(r.space)}")

    with errors():
        specs = [m.strip() for m in (models or "").split(",") if m.strip()]
        coll, results = compare_models(collection, specs, spaces, options, device=device, on_indexed=indexed, progress=lines.progress,
                                       on_warning=lines.warn)  # fmt: skip
        lines.end()
        _write_contact_sheet(coll, results, contact_sheet)
    _print_eval(results, report, as_json)


class _Lines:
    """Progress of the evaluation's steps, each message on its own line: on a terminal a step's
    line is rewritten in place and ended before another step or a warning prints; in a log (not a
    terminal) only a step's last message is written, so no carriage returns run messages together."""

    def __init__(self, quiet: bool):
        self.err = stderr()
        self.progress = None if quiet else self.on
        self.open = ""  # the step whose line is still being rewritten

    def on(self, label: str, done: int, total: int) -> None:
        if self.open and self.open != label:
            self.end()
        if not self.err.is_terminal:
            if done >= total:
                self.err.print(f"{label}: {done}/{total}")
            return
        self.err.print(f"{label}: {done}/{total}", end="\r" if done < total else "\n")
        self.open = label if done < total else ""

    def end(self) -> None:
        if self.open:
            self.err.print()
            self.open = ""

    def warn(self, warning: str) -> None:
        self.end()
        self.err.print(f"[yellow]Warning:[/] {escape(warning)}")


def _write_contact_sheet(coll: Any, results: dict[str, Any], path: Path | None) -> None:
    from ..eval_run import write_contact_sheet

    if path is None:
        return
    if not results.get("text_to_image"):
        raise click.UsageError(SHEET_NEEDS_PAIRS)
    write_contact_sheet(coll, results, path)
    stderr().print(f"Wrote {escape(str(path))}")


def _print_eval(results: dict[str, Any], report: Path | None, as_json: bool) -> None:
    from .. import evaluate as ev
    from ..eval_run import write_report

    if report is not None:
        write_report(results, report)
        stderr().print(f"Wrote {escape(str(report))}.md, .json and .svg")
    if as_json:
        echo_json(results)
    else:
        click.echo(ev.markdown(results))


COMMANDS = (evaluate_cmd, compare)
