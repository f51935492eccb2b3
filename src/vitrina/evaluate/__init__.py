"""Measure retrieval quality on your own collection.

- ``eval_pairs``: text→image with caption pairs (a caption per item): recall@k and MRR.
- ``eval_exact_image``: perturbed copies of indexed images (crop, rescale, JPEG, rotate,
  grayscale) as queries: top-1 / top-10 of the original (the Norwegian library's protocol).
- ``eval_queries``: a curator's queries with relevant item ids (optionally graded):
  nDCG@k and precision@k.

Reports come as a dict (JSON), Markdown and an SVG chart. Metric functions are plain numpy and
tested on hand-computed cases (tests/test_evaluate.py).

Modules: ``metrics`` (numbers), ``data`` (pairs, splits, judged queries, captions, provenance),
``retrieval`` (text→image and judged queries), ``exact_image`` (perturbed copies), ``report``
(Markdown, contact sheet, SVG). Running them over a collection's spaces from options, as
``vitrina eval`` does, is ``vitrina.eval_run``.
"""

from __future__ import annotations

from .data import (
    SPLITS,
    captions,
    file_name_warning,
    file_sha256,
    provenance,
    read_pair_rows,
    read_pairs,
    read_queries,
    select_split,
)
from .exact_image import PERTURBATIONS, baseline_seed, eval_exact_image, paired_exact_image, random_weights_embedder
from .metrics import (
    KS,
    bootstrap_ci,
    chance,
    chance_shared,
    image_signature,
    mrr,
    ndcg_at_k,
    paired_test,
    precision_at_k,
    queries_needed,
    rank_intervals,
    rank_of,
    recall_at_k,
    signature_distance,
    small_sample_warning,
    wilson,
)
from .report import KINDS, contact_sheet, markdown, svg_chart
from .retrieval import (
    SAME_PICTURE,
    TOP,
    breakdown,
    candidates_digest_of,
    common_candidates,
    eval_pairs,
    eval_queries,
    paired_comparisons,
    per_item,
    shared_captions,
    space_matrix,
    training_overlap,
)

__all__ = [
    "KINDS",
    "KS",
    "PERTURBATIONS",
    "SAME_PICTURE",
    "SPLITS",
    "TOP",
    "baseline_seed",
    "bootstrap_ci",
    "candidates_digest_of",
    "common_candidates",
    "breakdown",
    "captions",
    "file_name_warning",
    "chance",
    "chance_shared",
    "shared_captions",
    "contact_sheet",
    "eval_exact_image",
    "eval_pairs",
    "eval_queries",
    "file_sha256",
    "image_signature",
    "markdown",
    "mrr",
    "ndcg_at_k",
    "paired_comparisons",
    "paired_exact_image",
    "paired_test",
    "per_item",
    "precision_at_k",
    "provenance",
    "queries_needed",
    "rank_intervals",
    "random_weights_embedder",
    "rank_of",
    "read_pair_rows",
    "read_pairs",
    "read_queries",
    "recall_at_k",
    "select_split",
    "signature_distance",
    "small_sample_warning",
    "space_matrix",
    "svg_chart",
    "training_overlap",
    "wilson",
]
