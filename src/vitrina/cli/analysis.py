"""Working on a collection's embeddings: classify, duplicates, map, captions, finetune."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import CONTEXT, echo_json, errors, escape, progress_bars, rows_progress, stderr, stdout


@click.command(context_settings=CONTEXT)
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
    "--positive",
    help="--train with two classes: the class to detect (tagged where its probability reaches the tuned threshold; default: the second label in sorted order).",
)
@click.option(
    "--calibrate",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Zero-shot: a CSV id,label of a few items to fit the temperature on (calibrated scores).",
)
@click.option("--json", "as_json", is_flag=True)
def classify(collection: str, labels: tuple[str, ...], zero: bool, train_csv: Path | None, apply_name: str | None, name: str | None, space: str | None,
             folds: int, C: float, positive: str | None, calibrate: Path | None, as_json: bool) -> None:  # fmt: skip
    """Tag every item of COLLECTION with a classifier on its embeddings; tags work as filters.

    \b
    vitrina classify maps --zero-shot "blank page" "map" "photograph" "drawing" --name kind
    vitrina classify maps --train labels.csv --name page_kind       # cross-validated F1 reported
    vitrina classify maps --train blank.csv --name blank --positive blank
    vitrina search maps "harbour" --where "page_kind!=blank"
    """
    from .. import classify as cls
    from ..collection import open_collection

    if sum(bool(x) for x in (zero, train_csv, apply_name)) != 1:
        raise click.UsageError("Give exactly one of --zero-shot LABEL..., --train LABELS.csv, --apply NAME.")
    if positive and not train_csv:
        raise click.UsageError("--positive goes with --train (a saved probe keeps the class it was trained for).")
    with errors():
        coll = open_collection(collection)
        if zero:
            report = cls.zero_shot(coll, list(labels), name=name or "zero_shot", space=space, calibrate=calibrate)
        elif train_csv:
            if not name:
                raise click.UsageError("--train needs --name (the tag to write).")
            report = cls.train_probe(coll, train_csv, name=name, space=space, folds=folds, C=C, positive=positive)
        else:
            report = cls.apply_probe(coll, str(apply_name))
    d = report.to_dict()
    if as_json:
        echo_json(d)
        return
    out = stdout()
    if d["f1_macro_cv"] is not None and d["folds"]:
        ci = d["f1_macro_cv_ci95"]
        nested = " (nested: each fold's threshold tuned inside its training part)" if d["threshold"] is not None else ""
        out.print(f"{d['folds']}-fold cross-validated macro F1{nested}: [bold]{d['f1_macro_cv']:.3f}[/] [95% CI {ci[0]:.3f}–{ci[1]:.3f}] on {d['trained_on']} labelled items "
                  f"(chance {d['f1_chance']:.3f}; C {d['C']})")  # fmt: skip
        if d["f1_macro_cv_at_half"] is not None:
            out.print(
                f"  at probability 0.5 instead: {d['f1_macro_cv_at_half']:.3f}; fold thresholds {', '.join(f'{t:.3f}' for t in d['fold_thresholds'])}"
            )
        for label, c in d["per_class"].items():
            out.print(f"  {escape(label)}: {c['items']} items, F1 {c['f1']:.3f}, average precision {c['average_precision']:.3f}; "
                      f"best F1 on the pooled predictions (optimistic) {c['best_f1']:.3f} at threshold {c['threshold']:.3f} (precision {c['precision_at_threshold']:.3f}, recall {c['recall_at_threshold']:.3f})")  # fmt: skip
        if d["threshold"] is not None:
            out.print(
                f"Tagged as {escape(d['positive'])} at probability ≥ {d['threshold']:.3f} (the cross-validated best F1); curves in --json"
            )
    if d["calibration"]:
        c = d["calibration"]
        out.print(
            f"Calibrated on {c['labelled']} labelled items: temperature {c['temperature']} (NLL {c['nll']:.3f}, was {c['nll_at_100']:.3f} at 100)"
        )
    out.print(
        f"Tagged {d['tagged']} items as [bold]{escape(d['name'])}[/]: "
        + ", ".join(f"{escape(k)} {v}" for k, v in sorted(d["counts"].items(), key=lambda kv: -kv[1]))
    )
    for w in d["warnings"]:
        stderr().print(f"[yellow]Warning:[/] {escape(w)}")
    out.print(
        f'Filter with: vitrina search {escape(collection)} "..." --where "{escape(d["name"])}={escape(d["labels"][0])}"'
    )


@click.command(context_settings=CONTEXT)
@click.argument("collection")
@click.option("--split", type=click.Choice(["all", "train", "held_out"]), default="all", show_default=True)
@click.option("--held-out-percent", default=20, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--skip-file-names",
    is_flag=True,
    help="Leave out items whose only title is their file name (folder collections): such captions measure file naming.",
)
def captions(collection: str, split: str, held_out_percent: int, skip_file_names: bool) -> None:
    """Print caption pairs built from COLLECTION's metadata as JSONL (id, caption, split, group),
    the LoC paper's recipe. The split is by group (series, manifest or catalogue item, title
    without its sheet numbers), stable across runs: near-duplicates never straddle it."""
    from .. import evaluate as ev
    from ..collection import open_collection

    with errors():
        rows = ev.captions(
            open_collection(collection), held_out_percent=held_out_percent, file_names=not skip_file_names
        )
    warning = ev.file_name_warning(rows)
    if warning:
        stderr().print(f"[yellow]Warning:[/] {escape(warning)}")
    if not rows:
        stderr().print(
            "No captions: no item has a catalogue title or caption"
            + (" (file-name titles left out)." if skip_file_names else ".")
        )
    for row in rows:
        if split == "all" or row["split"] == split:
            click.echo(json.dumps(row, ensure_ascii=False))


@click.command(context_settings=CONTEXT)
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
@click.option(
    "--val-percent",
    default=10,
    show_default=True,
    type=click.IntRange(0, 90),
    help="Share of the training pairs (by caption group) held back for validation; 0: none (the lowest training loss is kept).",
)
@click.option(
    "--min-val-images",
    default=50,
    show_default=True,
    type=click.IntRange(2),
    help="Refuse a validation slice smaller than this (its figures say little).",
)
@click.option(
    "--allow-small-validation",
    is_flag=True,
    help="Train even when the validation slice is below --min-val-images (with a warning).",
)
@click.option("--device", help="cpu, cuda, mps (default: cuda if present).")
@click.option(
    "--restart",
    is_flag=True,
    help="Start a new run in OUT, discarding its checkpoints (a resume must use the same settings).",
)
@click.option("--json", "as_json", is_flag=True)
def finetune(collection: str, pairs: Path, out: Path, model: str | None, epochs: int, batch_size: int, lr: float, warmup: float, freeze: str,
             patience: int, val_candidates: int, val_percent: int, min_val_images: int, allow_small_validation: bool, device: str | None, restart: bool,
             as_json: bool) -> None:  # fmt: skip
    """Fine-tune COLLECTION's CLIP / SigLIP model on caption pairs (contrastive loss), validated by
    retrieval on held-back pairs each epoch (the best MRR is kept), with early stopping and
    resumable checkpoints; a resume with other settings is refused.

    \b
    vitrina captions maps > pairs.jsonl
    vitrina finetune maps --pairs pairs.jsonl --epochs 8 --batch-size 32 --lr 1e-5 --out ./ft
    vitrina index maps --model hf:./ft --space ft && vitrina eval maps --pairs pairs.jsonl"""
    from ..collection import open_collection
    from ..finetune import FinetuneConfig, read_pairs_with_split
    from ..finetune import finetune as run

    err = stderr()
    with errors():
        coll = open_collection(collection)
        config = FinetuneConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            freeze=freeze,
            patience=patience,
            val_candidates=val_candidates,
            val_percent=val_percent,
            min_val_images=min_val_images,
            allow_small_validation=allow_small_validation,
        )
        with progress_bars(err, as_json) as (_, on_step):
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
        echo_json(d, ensure_ascii=True)
        return
    resumed = f" (resumed after epoch {d['resumed_from']})" if d["resumed_from"] else ""
    err.print(
        f"Fine-tuned {escape(d['base'])} on {d['train_pairs']} pairs ({d['val_pairs']} validation, {d['held_out_excluded']} held out){resumed}"
    )
    for h in d["history"]:
        err.print(f"  epoch {h['epoch']}: train loss {h['train_loss']:.4f}"
                  + (f", validation recall@1 {h['val_recall@1']:.1%}, recall@10 {h['val_recall@10']:.1%}, MRR {h['val_mrr']:.3f}" if "val_mrr" in h else ""))  # fmt: skip
    if d.get("val_chance"):
        c = d["val_chance"]
        err.print(
            f"  (chance on the validation slice: recall@1 {c['val_recall@1']:.1%}, recall@10 {c['val_recall@10']:.1%}, MRR {c['val_mrr']:.3f})"
        )
    for w in d.get("warnings", []):
        err.print(f"[yellow]Warning:[/] {escape(w)}")
    how = (
        f"validation MRR among {d['val_candidates']} images"
        if d["selected_by"] == "val_mrr"
        else "training loss (no validation pairs)"
    )
    err.print(
        f"Best epoch {d['best_epoch']} (by {how}) saved to {escape(d['out'])}"
        + (" (stopped early)" if d["stopped_early"] else "")
    )
    err.print(f"Next: vitrina index {escape(collection)} --model hf:{escape(d['out'])} --space finetuned")


@click.command(context_settings=CONTEXT)
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
    from ..collection import open_collection
    from ..duplicates import find_duplicates

    if as_json and as_csv:
        raise click.UsageError("Choose one of --json and --csv.")
    err = stderr()
    with errors():
        coll = open_collection(collection, index="exact" if exact else "auto")
        with rows_progress(err, quiet or as_json or as_csv, "neighbours") as progress:
            result = find_duplicates(coll, space=space, threshold=threshold, k=k, tag=not no_tag, progress=progress)
    if as_json:
        echo_json(result.to_dict())
        return
    if as_csv:
        click.echo(result.to_csv(), nl=False)
        return
    out = stdout()
    for g in result.groups:
        out.print(f"[bold]{escape(g.id)}[/] ({len(g.members)} items, weakest pair {g.min_score:.3f})")
        for m in g.members:
            match, score = g.best[m]
            out.print(f"  {escape(m)}  {score:.3f} ~ {escape(match)}")
    err.print(
        f"{len(result.groups)} groups, {sum(len(g.members) for g in result.groups)} items, of {result.items} scanned "
        f"in {result.seconds:.1f} s ({result.index} index, threshold {threshold}, k {k})."
    )


@click.command("map", context_settings=CONTEXT)
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
    from ..collection import open_collection
    from ..layout import build_map, map_path

    with errors():
        coll = open_collection(collection)
        stamp = build_map(coll, space, method=method)
    if as_json:
        echo_json(stamp, ensure_ascii=True)
        return
    stderr().print(
        f"Mapped {stamp['points']} items of space {stamp['space']!r} by {stamp['method']} in {stamp['seconds']:.1f} s → {map_path(coll, stamp['space'])}"
    )


COMMANDS = (classify, duplicates, map_cmd, captions, finetune)
