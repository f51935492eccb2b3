"""The offline demo: real public-domain images shipped in the package, indexed with `mini`.

- openclipart/: 215 held-out drawings from Debian's openclipart-png (public domain), downscaled,
  with their captions (captions.jsonl); the mini model never trained on them.
- heritage/: two scanned pages (a 19th-century natural-history book, a manuscript) from the
  kraken 5.3.0 test data (Apache-2.0).
"""

from __future__ import annotations

from pathlib import Path

IMAGES = Path(__file__).parent
# Each query is a list of terms, as on the command line: weights and negatives included.
EXAMPLE_QUERIES = [["a map"], ["a car"], ["a telephone"], ["flag"], ["fruit"], ["a house", "-0.5:a tree"]]
