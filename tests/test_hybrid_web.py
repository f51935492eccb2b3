"""Keyword search on the page and in the API: snippets with matched words marked, OCR text kept
inert (a real Chromium against a real server on loopback, as in test_web.py)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_web import _serve, browser, hit_ids, new_page  # noqa: F401  (browser: a fixture)
from vitrina import Item, open_collection

pytestmark = pytest.mark.slow  # a real browser (chromium) drives the page

HOSTILE = 'Kart over kysten <img src=x onerror="window.pwned=1"> med hval ved Ålesund <script>window.pwned=2</script> &amp; fyr'


@pytest.fixture
def words_server(scans: Path, tiny_clip: str) -> Iterator[str]:
    coll = open_collection("words", create=True)
    coll.index(str(scans), model=tiny_clip)
    page = coll.item("manuscript-page.jpg")
    coll.add_items(
        [
            Item(
                id=page.id,
                image=page.image,
                fingerprint=page.fingerprint,
                source=page.source,
                metadata={"title": "Side 12"},
                context=HOSTILE,
            )
        ]
    )
    yield from _serve("words")


def test_keywords_on_the_page_show_marked_snippets_and_never_markup(words_server: str, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page = new_page(browser, viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(words_server + "/")
    page.fill("#kw", "hval alesund")
    page.press("#kw", "Enter")
    page.wait_for_function("document.querySelectorAll('#results .hit').length > 0")
    assert hit_ids(page) == ["manuscript-page.jpg"] and "kw=hval+alesund" in page.url
    snippet = '#results .hit[data-id="manuscript-page.jpg"] .snippet'
    assert page.eval_on_selector_all(snippet + " mark", "els => els.map(e => e.textContent)") == ["hval", "Ålesund"]
    assert page.eval_on_selector_all(snippet + " img, " + snippet + " script", "els => els.length") == 0
    assert "<script>" in page.inner_text(snippet) and page.evaluate("window.pwned") is None
    # Words and a description together: the fused ranking still puts the named page first.
    page.fill("#q", "old map")
    page.press("#q", "Enter")
    page.wait_for_function(
        "location.search.includes('q=old+map') && document.querySelectorAll('#results .hit').length > 1"
    )
    assert hit_ids(page)[0] == "manuscript-page.jpg"
    # The address is shareable: rendered by the server with the same snippet.
    other = new_page(browser)
    other.goto(page.url)
    assert (
        other.eval_on_selector_all(snippet + " mark", "els => els.length") == 2
        and other.evaluate("window.pwned") is None
    )
    assert errors == []

    with urllib.request.urlopen(words_server + "/api/search?keywords=hval&limit=3") as r:
        data = json.load(r)
    assert [h["id"] for h in data["hits"]] == ["manuscript-page.jpg"]
    assert {"text": "hval", "match": True} in data["hits"][0]["snippet"]
