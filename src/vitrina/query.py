"""Queries: what the user asked for, turned into one vector and a set of allowed rows.

A query is a list of weighted terms, each a text or an image (a file, a URL or an indexed
item), plus filters. Its vector is the normalised weighted sum of the terms' unit vectors; a
negative weight pushes matching images down (as in rclip and Marqo).

``alpha`` blends text and image the way the Library of Congress maps paper does: the text terms
and the image terms are each summed and normalised, then mixed as (1 - alpha) * text +
alpha * image and normalised again, so alpha = 0 is text only and alpha = 1 image only. The
paper's code used a scale s in [-1, 1] with image weight (1 - s) / 2 and text weight (1 + s) / 2:
that is alpha = (1 - s) / 2.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import options
from .errors import QueryError
from .filters import MAX_FILTERS, Filter, parse_filters
from .options import MAX_TERMS
from .records import Hit

__all__ = ["Filter", "Hits", "ItemNotFound", "MAX_FILTERS", "MAX_TERMS", "Query", "Term", "combine", "parse_term"]

TERM_KINDS = ("text", "image", "item", "vector")


class ItemNotFound(QueryError):
    """An ``item`` term names no item with a vector in the space searched."""

    def __init__(self, item_id: str, collection: str, moved_to: str | None = None):
        hint = f": its file was moved or renamed, and it is now {moved_to!r}" if moved_to else ""
        super().__init__(f"No item {item_id!r} in collection {collection!r}{hint}.")
        self.item_id = item_id
        self.moved_to = moved_to


@dataclass(frozen=True)
class Term:
    """One part of a query: ``kind`` is 'text', 'image' (a path, URL or item id), 'item' (the
    id of an indexed item only: its stored vector, ``ItemNotFound`` if it has none) or 'vector'
    (a ready-made embedding in ``data``, e.g. of an uploaded image; ``value`` is its label).
    Image and item terms naming an indexed item leave it out of the hits (see ``include_self``)."""

    value: str
    weight: float = 1.0
    kind: str = "text"
    data: Any = field(default=None, compare=False, hash=False, repr=False)


_WEIGHTED = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(.+)$", re.S)


def parse_term(text: str, kind: str = "text") -> Term:
    """'ship' -> +1 ship; '2:ship' -> 2 x ship; '-0.5:colour' -> -0.5 x colour; '-colour' -> -1 x colour."""
    match = _WEIGHTED.match(text)
    if match:
        return Term(match.group(2), float(match.group(1)), kind)
    if kind == "text" and text.startswith("-") and len(text) > 1:
        return Term(text[1:], -1.0, kind)
    if kind == "text" and text.startswith("+") and len(text) > 1:
        return Term(text[1:], 1.0, kind)
    return Term(text, 1.0, kind)


@dataclass(frozen=True)
class Query:
    """One search; its fields and their bounds are declared in ``vitrina.options``."""

    terms: tuple[Term, ...] = ()
    alpha: float | None = None
    filters: tuple[Filter, ...] = ()
    min_score: float | None = None
    limit: int = 10
    offset: int = 0
    include_self: bool = False  # when querying by an indexed item, keep it in the hits
    keywords: str = ""  # words ranked by BM25 over the item text (index/keyword.py)
    keyword_weight: float | None = None  # the keyword side's share in a fusion (not alpha); see ``mode``
    fusion: str = "weighted"  # or "rrf"; measured: docs/keyword-search.md
    include_hidden: bool = False  # items hidden by `vitrina prune --hide` answer too

    def __post_init__(self) -> None:
        if not self.terms and not self.keywords.strip():
            raise QueryError("An empty query: give some text, --image, --keywords, or a mix.")
        for declared in options.for_interface(options.QUERY):  # bounds and choices: one source of truth
            problem = None if declared.multiple else declared.check(getattr(self, declared.query_field))
            if problem:
                raise QueryError(problem)
        if self.mode == "fused" and not self.keyword_text:
            raise QueryError("A keyword weight needs words: give --keywords, or text terms to reuse as keywords.")
        if len(self.keywords) > 2000:
            raise QueryError(f"The keywords are {len(self.keywords)} characters long; at most 2000 are allowed.")
        if len(self.terms) > MAX_TERMS:
            raise QueryError(f"{len(self.terms)} terms in one query; at most {MAX_TERMS} are allowed.")
        if len(self.filters) > MAX_FILTERS:
            raise QueryError(f"{len(self.filters)} filters in one query; at most {MAX_FILTERS} are allowed.")
        for term in self.terms:
            if term.kind not in TERM_KINDS:
                raise QueryError(f"Unknown term kind {term.kind!r}; use one of {', '.join(TERM_KINDS)}.")
            if not term.value.strip():
                raise QueryError("A query term is empty.")
            if not np.isfinite(term.weight):
                raise QueryError(f"Term {term.value!r} has weight {term.weight}; weights must be finite numbers.")

    DEFAULT_KEYWORD_WEIGHT = 0.4  # measured: docs/keyword-search.md, "Words and pictures"

    @property
    def mode(self) -> str:
        """'clip' (vectors only), 'keyword' (BM25 only) or 'fused'."""
        if not self.terms:
            return "keyword"
        if self.keyword_weight == 0.0 or (not self.keywords.strip() and not self.keyword_weight):
            return "clip"
        return "fused"

    @property
    def keyword_text(self) -> str:
        """The words of the keyword side: ``keywords``, else (a fusion asked for with a weight
        only) the positive text terms."""
        return self.keywords.strip() or " ".join(t.value for t in self.terms if t.kind == "text" and t.weight > 0)

    @property
    def weight(self) -> float:
        return self.DEFAULT_KEYWORD_WEIGHT if self.keyword_weight is None else self.keyword_weight

    @classmethod
    def build(
        cls,
        text: Sequence[str] | str = (),
        image: Sequence[str] | str = (),
        *,
        item: Sequence[str] | str = (),
        vectors: Sequence[tuple[str, Any]] = (),
        where: Sequence[str | Filter] = (),
        **kwargs: Any,
    ) -> Query:
        """A query from its parts: ``text`` and ``image`` terms ("2:ship", "-1:a.jpg"), ``item``
        ids of indexed items ("-1:ID" = less like this), ready-made ``vectors`` as (label,
        vector) pairs (an uploaded image's embedding), ``where`` filters; the rest are fields."""

        def listed(value: Sequence[str] | str) -> list[str]:
            return [value] if isinstance(value, str) else list(value)

        terms = (
            *(parse_term(t, "text") for t in listed(text)),
            *(parse_term(i, "item") for i in listed(item)),
            *(parse_term(i, "image") for i in listed(image)),
            *(Term(label, 1.0, "vector", vector) for label, vector in vectors),
        )
        return cls(terms=terms, filters=parse_filters(where), **kwargs)


def combine(vectors: np.ndarray, terms: Sequence[Term], alpha: float | None) -> np.ndarray:
    """The query vector: weighted sums as described in the module docstring."""
    weights = np.asarray([t.weight for t in terms], np.float32)[:, None]
    kinds = ["text" if t.kind == "text" else "image" for t in terms]
    if alpha is None or len(set(kinds)) == 1:
        out = (weights * vectors).sum(0)
    else:
        parts = []
        for kind, mix in (("text", 1.0 - alpha), ("image", alpha)):
            mask = np.asarray([k == kind for k in kinds])
            part = (weights[mask] * vectors[mask]).sum(0)
            part_norm = float(np.linalg.norm(part))
            parts.append(mix * part / part_norm if part_norm > 1e-9 else part * 0)
        out = parts[0] + parts[1]
    norm = float(np.linalg.norm(out))
    if norm < 1e-6:
        raise QueryError("The query's terms cancel out (their weighted sum is zero); change a weight.")
    return (out / norm).astype(np.float32)


class Hits(list[Hit]):
    """Search results: a list of ``Hit`` that shows as an image grid in Jupyter."""

    def __init__(self, hits: Sequence[Hit] = (), *, total_considered: int = 0, query: Query | None = None,
                 keyword_capped: bool = False):  # fmt: skip
        super().__init__(hits)
        self.total_considered = total_considered
        self.query = query
        self.keyword_capped = keyword_capped  # the keyword ranking was over a bounded set of matches

    def to_list(self) -> list[dict[str, Any]]:
        return [h.to_dict() for h in self]

    def _repr_html_(self) -> str:
        cells = []
        for hit in self:
            title = hit.metadata.get("title") or hit.id
            cells.append(
                '<figure style="margin:4px;width:160px;display:inline-block;vertical-align:top">'
                f'<img src="{html.escape(_thumbnail_src(hit.image), quote=True)}" loading="lazy" '
                'style="max-width:160px;max-height:160px;display:block;margin:auto">'
                f'<figcaption style="font:12px sans-serif;overflow-wrap:anywhere">{hit.rank}. {html.escape(str(title))}'
                f"<br><b>{hit.score:.3f}</b></figcaption></figure>"
            )
        return '<div style="display:flex;flex-wrap:wrap">' + "".join(cells) + "</div>"


_THUMBS: dict[str, str] = {}  # image reference -> inline thumbnail, for notebooks


def _thumbnail_src(image: str) -> str:
    """A URL is shown as is; a local file becomes a small inline JPEG."""
    if image.startswith(("http://", "https://", "data:")):
        return image
    if image not in _THUMBS:
        from .images import load_image

        try:
            im = load_image(image, min_side=160)
            im.thumbnail((160, 160))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
            _THUMBS[image] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        except Exception:
            _THUMBS[image] = ""
    return _THUMBS[image]
