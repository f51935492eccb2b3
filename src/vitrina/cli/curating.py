"""The curator's workbench on the command line: ``vitrina sets``, ``vitrina label``,
``vitrina correct``, ``vitrina review-duplicates`` and ``vitrina fix-word`` (vitrina.workbench;
docs/workbench.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ._common import CONTEXT, echo_json, errors, escape, rows_progress, stderr, stdout

__all__ = ["COMMANDS"]

SET_ACTIONS = ("list", "show", "add", "remove", "delete", "similar", "export", "rename")


def _who(who: str | None) -> str | None:
    return who or os.environ.get("VITRINA_WHO") or None


def _ids(ids: tuple[str, ...], ids_file: Path | None) -> list[str]:
    out = list(ids)
    if ids_file is not None:
        out += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


@click.command(context_settings=CONTEXT)
@click.argument("collection")
@click.argument("action", type=click.Choice(SET_ACTIONS), default="list")
@click.argument("name", required=False)
@click.option("--ids", "ids", multiple=True, help="add / remove: an item id (repeatable).")
@click.option(
    "--ids-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="add / remove: a file of ids, one a line.",
)
@click.option("--where", multiple=True, help="add: the items passing these filters (e.g. 'kind=map', 'set=other set').")
@click.option("--query", "query_text", help="add: the search that found them, recorded with the set.")
@click.option("--note", help="add: a note kept with the set.")
@click.option("--who", help="Who does it (default: $VITRINA_WHO or the login name).")
@click.option("--negative", help="similar: a set of examples to move away from.")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="similar: hits; show: members."
)
@click.option("--format", "fmt", default="json", show_default=True,
              type=click.Choice(["csv", "json", "iiif-collection", "iiif-manifest", "pairs"]), help="export: what to write.")  # fmt: skip
@click.option("--base", default="", help="export, IIIF: the URL the documents' ids start with.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="export: write here (default: stdout).")
@click.option(
    "--as-collection",
    "as_collection",
    help="export: write a new collection here (a path or a name) that reuses the vectors.",
)
@click.option("--to", "new_name", help="rename: the set's new name.")
@click.option("--json", "as_json", is_flag=True)
def sets(collection: str, action: str, name: str | None, ids: tuple[str, ...], ids_file: Path | None, where: tuple[str, ...], query_text: str | None,
         note: str | None, who: str | None, negative: str | None, limit: int, fmt: str, base: str, out: Path | None,
         as_collection: str | None, new_name: str | None, as_json: bool) -> None:  # fmt: skip
    """Named sets of items: keep search results, filter on them, find more like them, export them.

    \b
    vitrina sets maps add "sea monsters" --ids a.jpg --ids b.jpg --query "sea monster"
    vitrina sets maps add "blank pages" --where "page_kind=blank"
    vitrina search maps "whale" --where "set=sea monsters"
    vitrina sets maps similar "sea monsters" --negative "blank pages"
    vitrina sets maps export "sea monsters" --format csv --out sea-monsters.csv
    vitrina sets maps export "sea monsters" --as-collection ./sea-monsters   # searchable at once
    vitrina sets maps rename "sea monsters" --to "sea creatures"
    vitrina sets maps                      # list them
    """
    from ..collection import open_collection

    if action != "list" and not name:
        raise click.UsageError(f"`vitrina sets COLLECTION {action}` needs the set's NAME.")
    with errors():
        coll = open_collection(collection)
        wb = coll.workbench
        result: Any
        if action == "list":
            result = wb.sets()
        elif action == "show":
            result = wb.show(str(name), limit)
        elif action == "add":
            chosen = _ids(ids, ids_file)
            if not chosen and not where:
                raise click.UsageError("add needs --ids, --ids-file or --where.")
            query = {"text": query_text} if query_text else None
            result = wb.add(str(name), chosen, where=list(where), query=query, note=note, who=_who(who))
        elif action == "remove":
            chosen = _ids(ids, ids_file)
            if not chosen:
                raise click.UsageError("remove needs --ids or --ids-file (delete removes the whole set).")
            result = wb.remove(str(name), chosen)
        elif action == "delete":
            result = wb.remove(str(name))
        elif action == "rename":
            if not new_name:
                raise click.UsageError("rename needs --to NEW_NAME.")
            result = wb.rename(str(name), new_name)
        elif action == "export" and as_collection:
            with rows_progress(stderr(), as_json, "Copying vectors") as progress:
                result = wb.to_collection(str(name), as_collection, who=_who(who), progress=progress)
        elif action == "similar":
            hits = wb.similar(str(name), negative=negative, limit=limit, where=list(where))
            result = hits.to_list()
        else:
            text = wb.export(str(name), fmt, base=base)
            if out is None:
                click.echo(text, nl=False)
            else:
                out.write_text(text, encoding="utf-8")
                stderr().print(f"Wrote set {escape(str(name))!s} as {fmt} to {escape(str(out))}")
            return
    if as_json:
        echo_json(result)
        return
    _print_sets(action, result)


def _print_sets(action: str, result: Any) -> None:
    console = stdout()
    if action == "export":  # --as-collection
        spaces = ", ".join(f"{escape(k)}: {v}" for k, v in result["vectors"].items())
        console.print(f"Set [bold]{escape(result['set'])}[/]: {result['items']} items to {escape(result['collection'])} "
                      f"(vectors copied, {spaces}); search it at once: vitrina search {escape(result['collection'])} ...")  # fmt: skip
        return
    if action == "rename":
        console.print(
            f"Set [bold]{escape(result['renamed_from'])}[/] is now [bold]{escape(result['set'])}[/] ({result['items']} items)."
        )
        return
    if action == "list":
        if not result:
            console.print("No sets yet: vitrina sets COLLECTION add NAME --ids ID ... (or --where FILTER)")
        for s in result:
            made = f" — {escape(s['query'].get('text', ''))}" if s["query"].get("text") else ""
            console.print(f"[bold]{escape(s['name'])}[/]  {s['items']} items, by {escape(s['created_by'])}{made}")
    elif action == "show":
        console.print(
            f"[bold]{escape(result['name'])}[/]: {result['items']} items, by {escape(result['created_by'])}; query {escape(str(result['query']))}"
        )
        for m in result["members"]:
            console.print(f"  {escape(m['id'])}" + (f"  {m['score']:.3f}" if m["score"] is not None else ""))
    elif action == "similar":
        for n, h in enumerate(result, 1):
            console.print(f"{n:>3}. {h['score']:.3f}  {escape(h['id'])}")
    elif action == "add":
        console.print(
            f'Added {result["added"]} items to [bold]{escape(result["set"])}[/] (now {result["items"]}); filter with --where "set={escape(result["set"])}"'
        )
    else:
        console.print(
            f"{'Deleted' if result['deleted'] else 'Removed ' + str(result['removed']) + ' items from'} set [bold]{escape(result['set'])}[/]"
        )


@click.command(context_settings=CONTEXT)
@click.argument("collection")
@click.argument("question")
@click.argument("item", required=False)
@click.argument("answer", required=False, type=click.Choice(["yes", "no", "skip", "y", "n", "s"], case_sensitive=False))
@click.option("--who", help="Who answers (default: $VITRINA_WHO or the login name).")
@click.option("--list", "list_", is_flag=True, help="List the question's labels.")
@click.option("--train", is_flag=True, help="Train the question's probe on its labels and tag every item.")
@click.option("--review", type=click.IntRange(1, 500), help="Show this many unlabelled items to label next.")
@click.option("--order", default="mixed", show_default=True, type=click.Choice(["mixed", "uncertain", "random", "yes", "no"]),
              help="--review: mixed (the probe's least sure, a quarter at random), uncertain (least sure only), random, "
                   "yes or no (likeliest first).")  # fmt: skip
@click.option("--tag", help="The tag (and probe) name (default: from the question, e.g. is_this_a_blank_page).")
@click.option("--json", "as_json", is_flag=True)
def label(collection: str, question: str, item: str | None, answer: str | None, who: str | None, list_: bool, train: bool, review: int | None,
          order: str, tag: str | None, as_json: bool) -> None:  # fmt: skip
    """Answer QUESTION about an ITEM (yes, no or skip), train a probe on the answers, review.

    \b
    vitrina label maps "is this a blank page?" p0001.jpg yes
    vitrina label maps "is this a blank page?" --train      # F1 with its interval; tag is_this_a_blank_page
    vitrina label maps "is this a blank page?" --review 20  # least sure first, a quarter at random
    vitrina search maps "harbour" --where "is_this_a_blank_page=no"
    """
    from ..collection import open_collection

    if (item is None) != (answer is None):
        raise click.UsageError("Give both ITEM and ANSWER (yes, no or skip), or neither.")
    if item is None and not (list_ or train or review):
        list_ = True
    with errors():
        coll = open_collection(collection)
        wb = coll.workbench
        result: dict[str, Any] = {}
        if item is not None:
            result["labelled"] = wb.label(question, item, str(answer), who=_who(who))
        if train:
            result["trained"] = wb.train(question, tag=tag)
        if review:
            result["review"] = wb.review(question, tag=tag, limit=review, order=order)
        if list_:
            result["labels"] = wb.labels(question)
    if as_json:
        echo_json(result)
        return
    console = stdout()
    if "labelled" in result:
        r = result["labelled"]
        console.print(f"{escape(item or '')}: {r['answer']}  (yes {r['yes']}, no {r['no']}, skip {r['skip']})")
    if "trained" in result:
        t = result["trained"]
        ci = t["f1_macro_cv_ci95"]
        console.print(f"Probe [bold]{escape(t['tag'])}[/] on {t['trained_on']} labels: cross-validated F1 [bold]{t['f1_macro_cv']:.3f}[/] "
                      f"[95% CI {ci[0]:.3f}–{ci[1]:.3f}]; tagged {t['tagged']} items: " + ", ".join(f"{k} {v}" for k, v in t["counts"].items()))  # fmt: skip
        for p in t["curve"][-5:]:
            console.print(f"  {p['labels']:>4} labels  F1 {p['f1']:.3f}  [{p['ci95'][0]:.3f}–{p['ci95'][1]:.3f}]")
        if t["curve"][-1].get("random_labels"):
            last = t["curve"][-1]
            console.print(f"  F1 on the {last['random_labels']} labels the review drew at random (a fair sample): {last['f1_random']:.3f}; "
                          "the F1 above runs low, as the review asks about the hardest items")  # fmt: skip
    for q in result.get("review", []):
        console.print(f"  {escape(q['id'])}  P(yes) {q['p_yes']:.3f}  machine says {q['machine']}"
                      + ("  (random pick)" if q.get("pick") == "random" else ""))  # fmt: skip
    for lab in result.get("labels", []):
        console.print(f"  {escape(lab['id'])}  {lab['answer']}  by {escape(lab['who'])}")


@click.command(context_settings=CONTEXT)
@click.argument("collection")
@click.argument("tag")
@click.argument("item")
@click.argument("value", required=False)
@click.option("--clear", is_flag=True, help="Take the correction back: the machine's value shows again.")
@click.option("--who", help="Who corrects (default: $VITRINA_WHO or the login name).")
@click.option("--json", "as_json", is_flag=True)
def correct(
    collection: str, tag: str, item: str, value: str | None, clear: bool, who: str | None, as_json: bool
) -> None:
    """Correct a classifier's TAG on ITEM to VALUE: it wins in filters and survives re-runs.

    \b
    vitrina correct maps page_kind p0001.jpg blank
    vitrina correct maps page_kind p0001.jpg --clear
    """
    from ..collection import open_collection

    if (value is None) != clear:
        raise click.UsageError("Give a VALUE, or --clear to take the correction back.")
    with errors():
        result = open_collection(collection).workbench.correct(tag, item, value, who=_who(who))
    if as_json:
        echo_json(result)
    else:
        stdout().print(
            f"{escape(item)}: {escape(tag)} = {escape(str(value)) if value else '(the machine value again)'}"
        )


@click.command("review-duplicates", context_settings=CONTEXT)
@click.argument("collection")
@click.argument("item")
@click.argument("verdict", required=False, type=click.Choice(["same", "different", "machine"]))
@click.option(
    "--ids",
    "ids",
    multiple=True,
    help="The members the verdict is about (default: same: the whole group; different / machine: ITEM).",
)
@click.option("--who", help="Who says so (default: $VITRINA_WHO or the login name).")
@click.option("--json", "as_json", is_flag=True)
def review_duplicates(collection: str, item: str, verdict: str | None, ids: tuple[str, ...], who: str | None, as_json: bool) -> None:  # fmt: skip
    """Confirm or correct ITEM's duplicate group from `vitrina duplicates`; people's verdicts win
    over the machine's grouping and survive its re-runs. Without VERDICT: show the group.

    \b
    vitrina review-duplicates maps p0001.jpg                      # the group, with verdicts
    vitrina review-duplicates maps p0001.jpg same                 # these are duplicates
    vitrina review-duplicates maps p0001.jpg different --ids p0002.jpg   # p0002 is not
    vitrina review-duplicates maps p0001.jpg machine --ids p0002.jpg     # the machine's again
    """
    from ..collection import open_collection

    with errors():
        wb = open_collection(collection).workbench
        if verdict is not None:
            wb.review_duplicates(item, verdict, list(ids) or None, who=_who(who))
        result = wb.duplicates(item)
    if as_json:
        echo_json(result)
        return
    console = stdout()
    mark = f" (confirmed by {escape(result['who'])})" if result["corrected"] and result["group"] else ""
    console.print(f"[bold]{escape(item)}[/]: group {escape(str(result['group'] or '(none)'))}{mark}")
    for m in result["members"]:
        console.print(
            f"  {escape(m['id'])}  {m['score']:.3f}" + (f"  confirmed by {escape(m['who'])}" if m["confirmed"] else "")
        )
    for r in result["removed"]:
        console.print(f"  not a duplicate: {escape(r['id'])} (by {escape(r['who'])})")


@click.command("fix-word", context_settings=CONTEXT)
@click.argument("collection")
@click.argument("item")
@click.argument("n", required=False, type=click.IntRange(0, None))
@click.argument("text", required=False)
@click.option("--clear", is_flag=True, help="Back to what the OCR read.")
@click.option("--who", help="Who corrects (default: $VITRINA_WHO or the login name).")
@click.option("--json", "as_json", is_flag=True)
def fix_word(collection: str, item: str, n: int | None, text: str | None, clear: bool, who: str | None, as_json: bool) -> None:  # fmt: skip
    """Correct word N (reading order, from 0) read from ITEM's image to TEXT: shown and searched
    instead, and kept through a new `vitrina ocr`. Without N: list the words with their numbers.

    \b
    vitrina fix-word maps p0001.jpg                 # the words, numbered
    vitrina fix-word maps p0001.jpg 12 Trondhjem
    vitrina fix-word maps p0001.jpg 12 --clear
    """
    from ..collection import open_collection

    if n is not None and (text is None) != clear:
        raise click.UsageError("Give the TEXT, or --clear for what the OCR read.")
    with errors():
        wb = open_collection(collection).workbench
        result: Any = wb.fix_word(item, n, text, who=_who(who)) if n is not None else wb.words(item)
    if as_json:
        echo_json(result)
    elif n is not None:
        stdout().print(
            f"{escape(item)} word {n}: {escape(result['text'])}"
            + (f"  (read as {escape(result['was'])})" if result["corrected"] else "")
        )
    else:
        for w in result["words"]:
            stdout().print(f"{w['n']:>5}  {escape(w['text'])}")


COMMANDS = (sets, label, correct, review_duplicates, fix_word)
