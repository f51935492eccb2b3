"""The curator's workbench: named sets of items, labels (yes / no / skip to a question), probes
trained on the labels in the loop, a review queue, "similar to this set", and exports.

    wb = coll.workbench
    wb.add("sea monsters", ["a", "b"], query={"text": "sea monster"})
    coll.search("whale", where=["set=sea monsters"])          # a set is a filter like a tag
    wb.label("is this a blank page?", "a", "yes")
    report = wb.train("is this a blank page?")                # tag is_this_a_blank_page = yes / no
    wb.review("is this a blank page?", limit=20)              # the items the probe is least sure of
    wb.export("sea monsters", "csv")

What people say is stored apart from what machines say (store/curation.py, schema 9): labels
never touch tags; a correction of a tag (and every yes / no label of a trained question) wins over
the classifier's value in filters and survives its re-runs. Names and text are checked in
``names``; the loop is in ``loop``, the exports in ``export``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import QueryError
from . import export as _export
from . import loop
from .names import (
    check_answer,
    check_ids,
    check_note,
    check_question,
    check_set_name,
    check_who,
    default_who,
    tag_for,
)

if TYPE_CHECKING:
    from ..collection import Collection
    from ..collection_view import CollectionView
    from ..query import Hits

__all__ = ["Workbench", "tag_for"]

MAX_SHOWN = 10_000  # members listed by ``show``
MAX_EXAMPLES = 100_000  # set items averaged into a "similar to this set" query


class Workbench:
    """Sets, labels and the train-review loop of one collection (``coll.workbench``). Reads work
    on any opened collection; writes need a ``Collection`` (they take its writer lock)."""

    def __init__(self, coll: CollectionView):
        self.coll = coll

    def _writable(self) -> Collection:
        from ..collection import Collection

        if not isinstance(self.coll, Collection):
            raise QueryError(
                f"Collection {self.coll.name!r} is open for reading only; open it with open_collection to write."
            )
        return self.coll

    # -- sets ---------------------------------------------------------------------------------

    def sets(self) -> list[dict[str, Any]]:
        """Every set: name, items, the query that made it, who and when."""
        return self.coll.curation().sets()

    def show(self, name: str, limit: int | None = MAX_SHOWN) -> dict[str, Any]:
        name = check_set_name(name)
        found = self.coll.curation().get_set(name)
        if found is None:
            raise QueryError(
                f"No set {name!r} in collection {self.coll.name!r}; `vitrina sets {self.coll.name} list` lists them."
            )
        return {**found, "members": self.coll.curation().set_members(name, limit)}

    def add(self, name: str, ids: list[str] | tuple[str, ...] = (), *, where: list[str] | tuple[str, ...] = (),
            scores: dict[str, float] | None = None, query: dict[str, Any] | None = None, note: str | None = None,
            who: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Add items to set ``name`` (made when new): ``ids``, and the items passing ``where``
        filters. ``query`` records what made it (a search's text and filters); ``scores`` the
        search scores. Unknown ids are refused, naming one."""
        name, who = check_set_name(name), check_who(who or default_who())
        chosen = check_ids(list(ids))
        if where:
            chosen = list(dict.fromkeys([*chosen, *self.coll.ids_where(list(where))]))
            query = {**(query or {}), "where": list(where)}
        check_ids(chosen)
        known = self.coll.fingerprints(chosen)
        missing = [i for i in chosen if i not in known]
        if missing:
            raise QueryError(
                f"{len(missing)} ids are not items of {self.coll.name!r} (e.g. {missing[0][:80]!r}); nothing was added."
            )
        members = [(i, (scores or {}).get(i)) for i in chosen]
        with self._writable().curating() as curation:
            added = curation.add_to_set(name, members, who, query, check_note(note) if note is not None else None)
        return {"set": name, "added": added, "items": self.coll.curation().get_set(name)["items"]}  # type: ignore[index]

    def remove(self, name: str, ids: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
        """Take ``ids`` out of the set, or (``ids`` None) delete the whole set."""
        name = check_set_name(name)
        self.show(name, 1)
        with self._writable().curating() as curation:
            removed = curation.remove_from_set(name, None if ids is None else check_ids(list(ids)))
        return {"set": name, "removed": removed, "deleted": ids is None}

    def rename(self, name: str, new_name: str) -> dict[str, Any]:
        """Give set ``name`` a new name (``--where set=NEW`` finds its items from then on)."""
        name, new_name = check_set_name(name), check_set_name(new_name)
        self.show(name, 1)
        if new_name == name:
            return {"set": name, "renamed_from": name, "items": 0}  # nothing to do (the page's box starts filled)
        if self.coll.curation().get_set(new_name) is not None:
            raise QueryError(f"There is already a set {new_name!r}; delete it or choose another name.")
        with self._writable().curating() as curation:
            moved = curation.rename_set(name, new_name)
        return {"set": new_name, "renamed_from": name, "items": moved}

    def to_collection(self, name: str, target: str | os.PathLike[str], *, who: str | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
        """Export set ``name`` as a new collection at ``target`` (a path, or a name under the home
        folder) that reuses the vectors: searchable there at once with the same model. A target
        that exists and is not empty is refused (see ``as_collection``)."""
        from .as_collection import to_collection

        members = [m["id"] for m in self.show(name, None)["members"]]
        return to_collection(self.coll, check_set_name(name), members, target, who=check_who(who or default_who()),
                             progress=progress)  # fmt: skip

    # -- labels and corrections ---------------------------------------------------------------

    def label(self, question: str, ids: str | list[str], answer: str, *, who: str | None = None) -> dict[str, Any]:
        """Answer ``question`` for items: yes, no or skip (y / n / s); a later answer replaces one."""
        question, answer, who = check_question(question), check_answer(answer), check_who(who or default_who())
        chosen = check_ids([ids] if isinstance(ids, str) else list(ids))
        known = self.coll.fingerprints(chosen)
        missing = [i for i in chosen if i not in known]
        if missing:
            raise QueryError(f"No item {missing[0][:80]!r} in collection {self.coll.name!r}; nothing was labelled.")
        with self._writable().curating() as curation:
            curation.label(question, [(i, answer) for i in chosen], who)
        return {"question": question, "answer": answer, "labelled": len(chosen), **self.counts(question)}

    def unlabel(self, question: str, ids: list[str]) -> int:
        question = check_question(question)
        with self._writable().curating() as curation:
            return curation.unlabel(question, check_ids(list(ids)))

    def labels(self, question: str) -> list[dict[str, Any]]:
        return self.coll.curation().labels(check_question(question))

    def counts(self, question: str) -> dict[str, int]:
        labels = self.labels(question)
        return {a: sum(lab["answer"] == a for lab in labels) for a in ("yes", "no", "skip")}

    def questions(self) -> list[dict[str, Any]]:
        """Every question labelled so far, with its counts and its tag."""
        return [{**q, "tag": tag_for(q["question"])} for q in self.coll.curation().questions()]

    def correct(self, tag: str, item_id: str, value: str | None, *, who: str | None = None) -> dict[str, Any]:
        """A person's value of machine tag ``tag`` on an item (None: back to the machine's). It wins
        in filters and survives re-runs of the classifier."""
        from ..classify import probe_path

        coll = self._writable()
        probe_path(coll, tag)  # the tag-name rule of classifiers
        (item_id,) = check_ids([item_id])
        if value is not None:
            value = check_note(value)[:200] or None
        if item_id not in coll:
            raise QueryError(f"No item {item_id[:80]!r} in collection {coll.name!r}.")
        with coll.curating() as curation:
            curation.correct(tag, [(item_id, value)], check_who(who or default_who()))
        return {"id": item_id, "tag": tag, "value": value}

    def corrections(self, tag: str | None = None, *, item_id: str | None = None) -> list[dict[str, Any]]:
        """People's corrections of machine tags (of ``tag``; of one item: ``item_id``)."""
        if item_id is not None:
            return [c for c in self.coll.curation().corrections_of(item_id) if tag is None or c["name"] == tag]
        return self.coll.curation().corrections(tag)

    def duplicates(self, item_id: str) -> dict[str, Any]:
        """The item's duplicate group as shown: a person's verdicts over the machine's grouping."""
        from .review import duplicate_review

        (item_id,) = check_ids([item_id])
        return duplicate_review(self._writable(), item_id)

    def review_duplicates(self, item_id: str, verdict: str, ids: list[str] | None = None, *,
                          who: str | None = None) -> dict[str, Any]:  # fmt: skip
        """``same``: the item and ``ids`` (default: its group's members) are duplicates;
        ``different``: ``ids`` (default: the item) are in no group; ``machine``: the machine's
        grouping again. Kept like tag corrections; survives a re-run of ``vitrina duplicates``."""
        from .review import review_duplicates

        (item_id,) = check_ids([item_id])
        chosen = None if ids is None else check_ids(list(ids))
        return review_duplicates(self._writable(), item_id, verdict, chosen, check_who(who or default_who()))

    def fix_word(self, item_id: str, n: int, text: str | None, *, who: str | None = None) -> dict[str, Any]:
        """Word ``n`` (reading order) read from the item's image says ``text`` (None: back to what
        the OCR read). Shown and searched instead of the reading; survives a new OCR run."""
        (item_id,) = check_ids([item_id])
        if text is not None:
            text = check_note(text)[:200] or None
        if not isinstance(n, int) or n < 0:
            raise QueryError(f"Word number {n!r}: give the word's place in reading order (0, 1, ...).")
        with self._writable().curating() as curation:
            out = curation.fix_word(item_id, n, text, check_who(who or default_who()))
        if out is None:
            raise QueryError(f"Item {item_id[:80]!r} has no word {n} read from its image (`vitrina ocr` reads them).")
        return out

    def words(self, item_id: str, limit: int = 2000) -> dict[str, Any]:
        """The words read from the item's image in reading order (``n``, text, box) and people's
        corrections of them (box, what the OCR read, the text, who)."""
        found = self.coll.matched_words(item_id)
        words = (found or {}).get("words", [])[:limit]
        from ..store.word_fixes import MATCH, overlap

        fixes = self.coll.curation().word_fixes(item_id)
        shown = []
        for n, w in enumerate(words):
            fix = next((f for f in fixes if overlap(tuple(f["box"]), tuple(w["box"])) >= MATCH), None)
            shown.append(
                {"n": n, **w, "corrected": fix is not None, **({"was": fix["was"], "who": fix["who"]} if fix else {})}
            )
        return {"id": item_id, "words": shown, "fixes": fixes,
                "width": (found or {}).get("width"), "height": (found or {}).get("height")}  # fmt: skip

    # -- the loop -----------------------------------------------------------------------------

    def train(
        self, question: str, *, tag: str | None = None, space: str | None = None, seed: int = 0
    ) -> dict[str, Any]:
        """Train the question's probe on its yes / no labels, tag every item, write the labels over
        the machine's output; returns the classify report with the learning curve so far."""
        question = check_question(question)
        return loop.train(
            self._writable(), question, tag or tag_for(question), self.labels(question), space=space, seed=seed
        )

    def review(self, question: str, *, tag: str | None = None, limit: int = 20, order: str = "mixed", seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
        """The unlabelled items to label next (``order`` mixed: the probe's least sure, a quarter
        drawn at random; uncertain, random, yes, no: see ``loop.review_queue``)."""
        question = check_question(question)
        labelled = {lab["id"] for lab in self.labels(question)}
        return loop.review_queue(
            self._writable(), tag or tag_for(question), labelled, limit=limit, order=order, seed=seed
        )

    def curve(self, question: str, *, tag: str | None = None) -> list[dict[str, Any]]:
        """F1 (cross-validated, with its 95% interval) at each training, as labels grew."""
        return loop.curve(self._writable(), tag or tag_for(check_question(question)))

    # -- similar to a set ---------------------------------------------------------------------

    def similar(self, name: str, *, negative: str | None = None, limit: int = 20, where: list[str] | tuple[str, ...] = (),
                space: str | None = None, negative_weight: float = 1.0) -> Hits:  # fmt: skip
        """Items like the set's (the mean of their vectors), unlike the ``negative`` set's, that
        are in neither set."""
        from ..filters import parse_filters
        from ..query import Query, Term

        coll = self._writable()
        index = coll.index_for(space)
        terms, exclude = [], []
        for set_name, weight in ((name, 1.0), (negative, -abs(negative_weight))):
            if set_name is None:
                continue
            found = index.vectors([m["id"] for m in self.show(set_name, MAX_EXAMPLES)["members"]])  # only theirs
            if not found:
                raise QueryError(f"Set {set_name!r} has no items with a vector in this space; index them first.")
            mean = np.stack([np.asarray(v, np.float32) for v in found.values()]).mean(0)
            terms.append(Term(f"set:{set_name}", weight, "vector", mean / max(float(np.linalg.norm(mean)), 1e-12)))
            exclude.append(f"set!={set_name}")
        query = Query(terms=tuple(terms), filters=parse_filters([*where, *exclude]), limit=limit)
        return coll.run([query], space=space)[0]

    # -- export -------------------------------------------------------------------------------

    def bundle(self, name: str, space: str | None = None) -> dict[str, Any]:
        """The set, its model and its items with labels and workbench tags: what exports write."""
        found = self.show(name, None)
        members = found.pop("members")
        ids = [m["id"] for m in members]
        items = self.coll.tagged_items(ids)
        labels: dict[str, dict[str, str]] = {}
        for q in self.coll.curation().questions():
            for lab in self.coll.curation().labels(q["question"]):
                if lab["id"] in items:
                    labels.setdefault(lab["id"], {})[q["question"]] = lab["answer"]
        fixes: dict[str, dict[str, str]] = {}
        for c in self.coll.curation().corrections():
            fixes.setdefault(c["id"], {})[c["name"]] = c["value"]
        try:
            model: dict[str, Any] = json.loads(self.coll.fingerprint(space).to_json())
        except Exception:  # noqa: BLE001 — a set of a collection not embedded yet still exports
            model = {}
        rows = []
        for m in members:
            item = items.get(m["id"])
            if item is None:
                continue  # removed from the collection since: its membership is kept, not exported
            tags = {
                k: {**v, **({"corrected": fixes[m["id"]][k]} if k in fixes.get(m["id"], {}) else {})}
                for k, v in item.tags.items()
            }
            rows.append({"id": m["id"], "set_score": m["score"], "title": _export.title_of(item.metadata, m["id"]), "image": item.image,
                         "labels": labels.get(m["id"], {}), "tags": tags, "metadata": item.metadata})  # fmt: skip
        return {"collection": self.coll.name, "set": found, "model": model, "items": rows}

    def export(self, name: str, fmt: str = "json", *, base: str = "", space: str | None = None) -> str:
        """The set as ``fmt``: csv, json, iiif-collection, iiif-manifest or pairs (JSON lines for
        ``vitrina finetune``). ``base``: the URL the IIIF documents' ids start with."""
        if fmt not in _export.FORMATS:
            raise QueryError(f"Unknown export format {fmt!r}; use one of {', '.join(_export.FORMATS)}.")
        bundle = self.bundle(name, space)
        base = (base or f"vitrina:{self.coll.name}").rstrip("/")
        if fmt == "csv":
            return _export.to_csv(bundle)
        if fmt == "pairs":
            return "".join(line + "\n" for line in _export.caption_pairs(bundle))
        if fmt == "iiif-collection":
            doc = _export.iiif_collection(bundle, base)
        elif fmt == "iiif-manifest":
            doc = _export.iiif_manifest(bundle, base)
        else:
            doc = _export.to_json(bundle)
        return json.dumps(doc, ensure_ascii=False, indent=2)
