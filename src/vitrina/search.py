"""Search: queries become vectors, the space's search index ranks them, matches become ``Hit``s.

``Searcher`` gets what it needs from its owner (``Collection``) as collaborators, so this module
never imports the collection: the store (items, hidden flags, the keyword index), the space by
name, the index chooser (``index_for``: exact, approximate or a Qdrant copy), the embedder of a
space and the query-image loader. Keyword-only queries go to BM25; fused ones rank both ways and
fuse (``vitrina.index.keyword``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .embedding import Embedder, embed_images
from .errors import ImageError, QueryError
from .filters import Filter
from .images import hold_decoded, load_image
from .query import Hits, ItemNotFound, Query, combine
from .records import Hit, Region
from .region_search import collapsing
from .regions import parse_detail

if TYPE_CHECKING:
    from .index import SearchIndex
    from .store import Space, Store

__all__ = ["ImageLimits", "Searcher", "query_image_vector"]


@dataclass(frozen=True)
class ImageLimits:
    """Limits on a query image (a file, URL or upload): the same on every path into a search."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int | None = None  # None: the decoder's own caps (images.MAX_PIXELS)
    allow_private: bool | None = None  # URLs of private/loopback hosts; None: $VITRINA_ALLOW_PRIVATE_URLS
    timeout: float = 10.0  # seconds for a whole URL download


def query_image_vector(image: str | bytes, embedder: Embedder, limits: ImageLimits) -> np.ndarray:
    """Embed a query image — a file path, an http(s) URL or the bytes of an upload — within
    ``limits`` (bytes, pixels, private addresses, download time)."""
    source: str | bytes
    if isinstance(image, bytes):
        if len(image) > limits.max_bytes:
            raise ImageError("too_large", f"The image is {len(image)} bytes; at most {limits.max_bytes} are accepted.")
        source = image
    elif image.startswith(("http://", "https://")):
        from .http import fetch_bytes

        source = fetch_bytes(
            image, max_bytes=limits.max_bytes, timeout=limits.timeout, allow_private=limits.allow_private
        )
    else:
        source = os.path.expanduser(image)
    # Decoded exactly as the indexer decodes, so a file and its indexed copy score 1.0; the
    # decoded image counts against the process's decode budget until it is embedded.
    with hold_decoded():
        decoded = load_image(source, min_side=embedder.min_side, max_pixels=limits.max_pixels)
        return embed_images(embedder, [decoded])[0]


class Searcher:
    """Runs queries against one collection's store through its owner's collaborators."""

    def __init__(
        self,
        store: Store,
        *,
        name: str,
        space: Callable[[str | None], Space],
        index_for: Callable[[str], SearchIndex],
        embedder_for: Callable[[Space], Embedder],
        image_vector: Callable[[str, Space], np.ndarray],
    ):
        self.store = store
        self.name = name
        self._space = space
        self._index_for = index_for
        self._embedder_for = embedder_for
        self._image_vector = image_vector

    def run(self, queries: Sequence[Query], *, space: str | None = None) -> list[Hits]:
        """Run several queries; those with the same filters and paging share one pass over the vectors."""
        if not queries:
            return []
        results: list[Hits | None] = [None] * len(queries)
        with_vectors = [n for n, q in enumerate(queries) if q.mode != "keyword"]
        for n, q in enumerate(queries):
            if q.mode == "keyword":
                results[n] = self._keyword_only(q)
        if with_vectors:
            sp = self._space(space)
            built = [self.query_vector(queries[n], sp) for n in with_vectors]
            ranked = self.rank(
                sp, np.stack([b[0] for b in built]), [queries[n] for n in with_vectors], [b[1] for b in built]
            )
            for n, hits in zip(with_vectors, ranked):
                results[n] = hits
        return [r for r in results if r is not None]

    def search_vectors(
        self,
        vectors: np.ndarray,
        *,
        where: Sequence[str | Filter] = (),
        min_score: float | None = None,
        limit: int = 10,
        offset: int = 0,
        space: str | None = None,
    ) -> list[Hits]:
        """Search with ready-made query vectors, shape (n, dim) or (dim,): one ``Hits`` per row."""
        sp = self._space(space)
        matrix = np.atleast_2d(np.asarray(vectors, np.float32))
        if (
            matrix.shape[1] != sp.fingerprint.dim
            or not np.isfinite(matrix).all()
            or not np.linalg.norm(matrix, axis=1).all()
        ):
            raise QueryError(
                f"Query vectors must be finite, non-zero and have {sp.fingerprint.dim} dimensions (space {sp.name!r}); got shape {matrix.shape}."
            )
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        query = Query.build("<vector>", where=where, min_score=min_score, limit=limit, offset=offset)
        return self.rank(sp, matrix, [query] * len(matrix), [set() for _ in matrix])

    # -- ranking ------------------------------------------------------------------------------

    def visible(self, q: Query) -> tuple[Filter, ...]:
        """The query's filters, plus one leaving out hidden items (unless it asks for them)."""
        if q.include_hidden or not self.store.hidden_count():
            return q.filters
        return (*q.filters, Filter(self.store.HIDDEN, "!=", "true"))

    def _keyword_only(self, q: Query) -> Hits:
        from .index.keyword import KeywordIndex

        kw = KeywordIndex(self.store)
        m = kw.search(q.keyword_text, filters=self.visible(q), limit=q.limit, offset=q.offset, min_score=q.min_score)
        return self._hits(m, q, kw.snippets(q.keyword_text, m.ids), kw.word_boxes(q.keyword_text, m.ids))

    def _hits(self, m: Any, q: Query, snippets: dict[str, list[tuple[str, bool]]], boxes: dict[str, list[dict[str, Any]]] | None = None,
              regions: Mapping[str, Region] | None = None, items: Mapping[str, Any] | None = None) -> Hits:  # fmt: skip
        """The page ``m`` as hits; an item's ``region`` (from ``regions``, else ``m``'s own where it
        came from a ``RegionIndex``) is its best region where a region gave its CLIP score."""
        items, boxes = self.store.get_items(m.ids) if items is None else items, boxes or {}
        regions = getattr(m, "regions", {}) if regions is None else regions
        hits = [Hit(id=i, score=s, image=items[i].image, metadata=items[i].metadata, rank=q.offset + k, snippet=tuple(snippets.get(i, ())),
                    words=tuple(boxes.get(i, ())), region=regions.get(i))
                for k, (i, s) in enumerate(zip(m.ids, m.scores), start=1) if i in items]  # fmt: skip
        return Hits(hits, total_considered=m.considered, query=q, keyword_capped=getattr(m, "keyword_capped", False))

    def rank(self, sp: Space, qmat: np.ndarray, queries: Sequence[Query], excluded: Sequence[set[str]]) -> list[Hits]:
        """Hits of each query vector (a row of ``qmat``), leaving out its ``excluded`` ids."""
        # Several rows per item where the space has regions: collapsed to items (region_search.py).
        index = collapsing(self._index_for(sp.name), self.store, sp.name)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for n, q in enumerate(queries):  # one pass over the vectors per distinct filter and page
            fused = q.mode == "fused"
            groups.setdefault((self.visible(q), q.limit, q.offset, q.min_score, fused), []).append(n)
        results: list[Hits | None] = [None] * len(queries)
        for (filters, limit, offset, min_score, fused), members in groups.items():
            if fused:  # the CLIP side's top DEPTH, through whichever index serves the space
                for n, fused_hits in self._fused(sp, index, qmat, queries, excluded, members, filters):
                    results[n] = fused_hits
                continue
            found = index.search(
                qmat[members],
                filters=filters,
                exclude=[excluded[n] for n in members],
                limit=limit,
                offset=offset,
                min_score=min_score,
            )
            items = self.store.get_items(sorted({i for m in found for i in m.ids}))
            for n, m in zip(members, found):
                results[n] = self._hits(m, queries[n], {}, items=items)
        return [r for r in results if r is not None]

    def _fused(self, sp: Space, index: SearchIndex, qmat: np.ndarray, queries: Sequence[Query], excluded: Sequence[set[str]], members: list[int],
               filters: tuple[Filter, ...]) -> list[tuple[int, Hits]]:  # fmt: skip
        """CLIP and keyword rankings of the same allowed items (passing the filters, with a vector
        in the space, not excluded), fused, then paged (see ``vitrina.index.keyword``)."""
        from .index.keyword import DEPTH, KeywordIndex, fused_page

        kw = KeywordIndex(self.store)
        clip = index.search(qmat[members], filters=filters, exclude=[excluded[n] for n in members], limit=DEPTH)
        # Only items with a vector in the space take part (usually all: then no list is built).
        with_vector = None if sp.live == self.store.item_count() else self.store.vector_rids(sp.name)[1]
        out = []
        for n, c in zip(members, clip):
            q = queries[n]
            words = kw.ranking(q.keyword_text, filters=filters, exclude=excluded[n], depth=DEPTH, only_rids=with_vector)
            m = fused_page(c, words, q.weight, q.fusion, limit=q.limit, offset=q.offset, min_score=q.min_score)
            m.keyword_capped = words.keyword_capped
            # The CLIP side's best regions (RegionIndex, for its DEPTH items): the page's hits carry theirs.
            hits = self._hits(
                m,
                q,
                kw.snippets(q.keyword_text, m.ids),
                kw.word_boxes(q.keyword_text, m.ids),
                getattr(c, "regions", {}),
            )
            out.append((n, hits))
        return out

    # -- query vectors ------------------------------------------------------------------------

    def query_vector(self, query: Query, sp: Space) -> tuple[np.ndarray, set[str]]:
        """The query's vector in space ``sp``, and the ids of indexed items it names (left out of
        its hits unless ``include_self``)."""
        excluded: set[str] = set()
        # Item terms first, in one look-up: a missing item is refused before the model runs.
        ids = [t.value for t in query.terms if t.kind == "item"]
        stored = self._index_for(sp.name).vectors(ids) if ids else {}
        for value in ids:  # ITEM#xywh=x,y,w,h: a detail of an item, cut from its image
            detail = parse_detail(value)
            if value not in stored and detail is not None and self.store.get_items([detail[0]]):
                stored[value] = self._image_term(value, sp)[0]
        missing = next((i for i in ids if i not in stored), None)
        if missing is not None:
            raise ItemNotFound(missing, self.name, self.store.moves().moved_to([missing]).get(missing))
        vectors = []
        for term in query.terms:
            if term.kind == "text":
                vectors.append(self._embedder_for(sp).embed_texts([term.value])[0])
            elif term.kind == "vector":
                vec = np.asarray(term.data, np.float32)
                if vec.shape != (sp.fingerprint.dim,):
                    raise QueryError(
                        f"Vector term {term.value!r} has shape {vec.shape}; space {sp.name!r} needs ({sp.fingerprint.dim},)."
                    )
                vectors.append(vec)
            else:
                vec, item_id = (
                    (stored[term.value], term.value) if term.kind == "item" else self._image_term(term.value, sp)
                )
                vectors.append(vec)
                if item_id is not None and not query.include_self:
                    excluded.add(item_id)
        return combine(np.stack(vectors), query.terms, query.alpha), excluded

    def _image_term(self, value: str, sp: Space) -> tuple[np.ndarray, str | None]:
        """An image term: an http(s) URL, a file, or the id of an indexed item (its stored vector
        is reused, and the item itself is left out of the hits)."""
        # A file on disk, then an indexed item (ids are often URLs: IIIF canvases), then a detail
        # of one (ITEM#xywh=x,y,w,h: its image cut to that box), then a URL to fetch.
        if os.path.isfile(os.path.expanduser(value)):
            return self._image_vector(value, sp), None
        stored = self._index_for(sp.name).vectors([value])
        if value in stored:
            return stored[value], value
        detail = parse_detail(value)
        if detail is not None and detail[0] in (found := self.store.get_items([detail[0]])):
            from .region_indexer import detail_pixels

            embedder = self._embedder_for(sp)
            pixels = detail_pixels(found[detail[0]].image, detail[1], embedder)
            return embedder.embed_pixels(pixels[None])[0], None
        if value.startswith(("http://", "https://")):
            return self._image_vector(value, sp), None
        moved = self.store.moves().moved_to([value]).get(value)
        if moved is not None:
            raise ItemNotFound(value, self.name, moved)
        raise QueryError(
            f"Image {value!r} is not a file, an http(s) URL, or the id of an item in collection {self.name!r}."
        )
