"""The web page in a real headless Chromium against a real server on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vitrina import open_collection

pytestmark = pytest.mark.slow  # a real browser (chromium) drives the page

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _serve(collection: str | Path, **options: Any) -> Iterator[str]:
    """A real server on a free loopback port for ``create_app(collection, **options)``."""
    import uvicorn

    from vitrina.service import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(collection, **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def live_server(scans: Path, tiny_clip: str) -> Iterator[str]:
    open_collection("web", create=True).index(str(scans), model=tiny_clip)
    yield from _serve("web")


@pytest.fixture
def odd_server(scans: Path, tiny_clip: str) -> Iterator[str]:
    """Also items with hostile titles: 18,000 characters, and a right-to-left override."""
    from vitrina import Item

    coll = open_collection("odd", create=True)
    coll.index(str(scans), model=tiny_clip)
    image = str(scans / "manuscript-page.jpg")
    titles = {"long": "harbour " * 2250, "spoof": "abc\u202egnp.exe"}
    coll.add_items(
        [Item(id=i, image=image, fingerprint="1", source="extra", metadata={"title": t}) for i, t in titles.items()]
    )
    coll.index()
    yield from _serve("odd")


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: scripts/test.sh installs Debian's chromium package")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def new_page(browser, **options):  # type: ignore[no-untyped-def]
    """A page whose tests may poll with wait_for_function (page-world eval, which the CSP forbids)."""
    return browser.new_context(bypass_csp=True, **options).new_page()


def hit_ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all("#results .hit", "els => els.map(e => e.dataset.id)")


def test_search_upload_slider_and_refine_in_a_browser(live_server: str, browser, scans: Path) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(browser, viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server + "/")
    assert "Type what you are looking for" in page.inner_text("#results")

    # Type a query: results appear without a page load, and the address holds the query.
    page.fill("#q", "old map")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelectorAll('#results .hit').length > 0")
    text_hits = hit_ids(page)
    assert len(text_hits) == 14 and "q=old+map" in page.url

    # Upload an image: it becomes part of the query.
    page.set_input_files("#image-file", str(scans / "book-page-poulpes.jpg"))
    page.wait_for_function("location.search.includes('upload=')")
    page.wait_for_function(
        f"JSON.stringify([...document.querySelectorAll('#results .hit')].map(e => e.dataset.id)) !== {text_hits!r}".replace(
            "'", '"'
        )
    )
    mixed = hit_ids(page)

    # Move the slider all the way to "image only" with the keyboard: the uploaded page comes first.
    page.focus("#alpha")
    page.keyboard.press("End")
    page.wait_for_function("location.search.includes('alpha=1')")
    page.wait_for_function(
        "document.querySelector('#results .hit') && document.querySelector('#results .hit').dataset.id === 'book-page-poulpes.jpg'"
    )
    assert page.inner_text("#results .hit .score").startswith(("1.000", "0.999"))
    assert hit_ids(page) != mixed
    page.screenshot(path=str(ARTIFACTS / "web-image-query.png"))

    # "More like this" on the second result refines the query; that item leaves the results.
    second = hit_ids(page)[1]
    before = hit_ids(page)
    page.click("#results .hit:nth-child(2) a.more")
    page.wait_for_function("location.search.includes('like=')")
    page.wait_for_function(f"!document.querySelector('#results .hit[data-id=\"{second}\"]')")
    after = hit_ids(page)
    assert after != before and second not in after
    assert "Refined: 1" in page.inner_text("#results")

    # The address is shareable: a fresh page with it shows the same results, server-rendered.
    other = new_page(browser)
    other.goto(page.url)
    assert hit_ids(other) == after
    # Open an item; its page links back to the results.
    other.click("#results .hit:first-child a.thumb")
    other.wait_for_selector("article.item")
    assert other.inner_text("article.item h1")
    other.screenshot(path=str(ARTIFACTS / "web-item.png"))

    # Phone-sized screen: two columns, nothing overflowing sideways.
    phone = new_page(browser, viewport={"width": 390, "height": 844})
    phone.goto(live_server + "/?q=old+map")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    phone.screenshot(path=str(ARTIFACTS / "web-phone.png"))
    assert errors == []


def test_the_page_works_under_its_content_security_policy(live_server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()  # the policy enforced (no bypass): only the site's own scripts and styles
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    response = page.goto(live_server + "/")
    policy = response.headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy
        and "frame-ancestors 'none'" in policy
        and response.headers["x-frame-options"] == "DENY"
    )
    page.fill("#q", "old map")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit")
    assert "q=old+map" in page.url and problems == []
    docs = browser.new_page()
    docs.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    docs.goto(live_server + "/docs")
    docs.wait_for_selector(".swagger-ui .opblock", timeout=15000)  # rendered from the package's assets, offline
    assert problems == []


def test_back_restores_every_field_from_the_address(live_server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    page.goto(live_server + "/?q=old+map&from=1700&to=1900&min_score=-0.5&where=title~map&alpha=0.3")
    page.evaluate(
        "() => { for (const id of ['from', 'to', 'min_score', 'where']) document.getElementById(id).value = ''; document.getElementById('q').value = 'ship'; }"
    )
    page.press("#q", "Enter")
    page.wait_for_function("location.search.includes('q=ship')")
    page.go_back()
    page.wait_for_function("location.search.includes('q=old')")
    fields = {i: page.input_value(f"#{i}") for i in ("q", "from", "to", "min_score", "where", "alpha")}
    assert fields == {
        "q": "old map",
        "from": "1700",
        "to": "1900",
        "min_score": "-0.5",
        "where": "title~map",
        "alpha": "0.3",
    }
    page.go_forward()
    page.wait_for_function("location.search.includes('q=ship')")
    assert [page.input_value(f"#{i}") for i in ("from", "to", "min_score", "where")] == ["", "", "", ""]


def test_keyboard_focus_on_the_file_input_is_visible(live_server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    page.goto(live_server + "/")
    page.focus("#drop")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "image-file"
    assert page.eval_on_selector(".file-label", "e => getComputedStyle(e).outlineStyle") != "none"


def test_hostile_titles_are_isolated_and_clamped(odd_server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser, viewport={"width": 1200, "height": 900})
    page.goto(odd_server + "/?q=harbour&where=source%3Dextra")
    assert sorted(hit_ids(page)) == ["long", "spoof"]
    assert page.eval_on_selector('.hit[data-id="long"]', "e => e.getBoundingClientRect().height") < 500
    assert page.eval_on_selector('.hit[data-id="spoof"] .title', "e => e.tagName") == "BDI"
    page.goto(odd_server + "/item?id=long")
    assert page.eval_on_selector("h1", "e => e.getBoundingClientRect().height") < 400
