"""The workbench page in a real headless Chromium against a real server on loopback (issue 29):
unlock with the token, label 20 items by keyboard, train, review and correct, keep items in a set
(from the grid and from the search results), export, correct a tag on the item page, and find it
all again on re-opening. Pages embedded with the offline ``mini`` model; screenshots in
test-artifacts/ (workbench-*.png)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vitrina import Item, open_collection

from .test_web import ARTIFACTS, browser  # noqa: F401 — the browser fixture

pytestmark = pytest.mark.slow  # a real browser and the mini model
TOKEN = "s3cret"
Q = "Is this a blank page?"
HOSTILE = '<img src=x id=pwned onerror="document.title=1">'


def _page(blank: bool, seed: int) -> Image.Image:
    """A scanned page: cream paper with noise; printed ones have lines of text and a picture."""
    rng = np.random.default_rng(seed)
    paper = np.array([238, 230, 212]) + rng.integers(-8, 8, (160, 120, 3))
    image = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    if not blank:
        draw = ImageDraw.Draw(image)
        top = 14
        if seed % 3 == 0:
            draw.rectangle((18, 14, 102, 70), fill=(90, 70, 50))
            top = 80
        for y in range(top, 146, 8):
            draw.rectangle((14, y, 14 + int(rng.integers(60, 92)), y + 3), fill=(40, 34, 30))
    return image


def _serve(name: str, token: str | None) -> Iterator[str]:
    from .test_web import _serve as serve_web

    yield from serve_web(name) if token is None else serve_web(name, token=token)


@pytest.fixture
def pages(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "pages"
    folder.mkdir()
    truth = {}
    for n in range(30):
        blank = n % 2 == 1
        _page(blank, n).save(folder / f"p{n:02d}.png")
        truth[f"p{n:02d}.png"] = "yes" if blank else "no"
    coll = open_collection("book", create=True)
    coll.index(str(folder), model="mini")
    coll.add_items([Item(id="zz-hostile", image=str(folder / "p00.png"), fingerprint="1", source="extra",
                         metadata={"title": HOSTILE})])  # fmt: skip
    coll.index()
    truth["zz-hostile"] = "no"
    return truth


@pytest.fixture
def server(pages: dict[str, str]) -> Iterator[str]:
    yield from _serve("book", TOKEN)


def _answers(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#wb-grid .card')].map(c => [c.dataset.id, c.querySelector('.answer').textContent]))"
    )


def test_label_train_review_keep_and_export_in_a_browser(server: str, pages: dict[str, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    # Locked: a clear notice, the token form, no answer buttons on the cards.
    page.goto(server + "/")
    page.click("header a.nav-workbench")
    page.wait_for_selector("#wb-grid .card")
    assert page.is_visible("#token-form") and "read-only" in page.inner_text("#read-note")
    assert page.locator("#wb-grid .ans").count() == 0
    page.screenshot(path=str(ARTIFACTS / "workbench-locked.png"))

    # A wrong token is refused and not kept; the right one unlocks, and never enters the address.
    page.fill("#token", "wrong")
    page.press("#token", "Enter")
    page.wait_for_function("document.getElementById('token-msg').textContent.includes('not the server')")
    assert page.evaluate("sessionStorage.getItem('vitrina.token')") is None
    errors.clear()  # the browser reports the refused request (403) on the console
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("#token-ok:not([hidden])")
    assert TOKEN not in page.url

    # Ask the question, then label 20 items from the grid with the keyboard only.
    page.fill("#question", Q)
    page.press("#question", "Enter")
    page.wait_for_selector("#wb[data-loaded] #wb-grid .card .ans")
    page.focus("#wb-grid .card")
    order = page.eval_on_selector_all("#wb-grid .card", "els => els.map(e => e.dataset.id)")
    for item_id in order[:20]:
        assert page.evaluate("document.activeElement.dataset.id") == item_id
        page.keyboard.press("y" if pages[item_id] == "yes" else "n")
    try:
        page.wait_for_function("/10 yes 10 no/.test(document.querySelector('#counts').textContent)", timeout=10000)
    except Exception:
        raise AssertionError((page.inner_text("#counts"), page.inner_text("#grid-status"), errors)) from None
    # Arrows move the focus (back one); S skips.
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("s")
    page.wait_for_function("document.querySelector('#counts').textContent.includes('1 skipped')")
    shown = _answers(page)
    assert [shown[i] for i in order[:19]] == ["Yes" if pages[i] == "yes" else "No" for i in order[:19]]
    assert shown[order[19]] == "Skipped"
    page.screenshot(path=str(ARTIFACTS / "workbench-labelled.png"))

    # Train (T): F1 with its interval and the learning curve; the review queue comes up.
    page.keyboard.press("t")
    page.wait_for_selector("#f1:not([hidden])")
    assert "95% interval" in page.inner_text("#f1-ci") and "19 labels" in page.inner_text("#f1-note")
    f1 = float(page.inner_text("#f1-value"))
    assert 0 <= f1 <= 1
    page.wait_for_function("document.getElementById('src-review').getAttribute('aria-pressed') === 'true'")
    page.wait_for_selector("#wb-grid .card .guess")
    queue = page.eval_on_selector_all("#wb-grid .card", "els => els.map(e => e.dataset.id)")
    assert queue and not set(queue) & set(order[:19])  # only items without an answer
    assert page.locator("#curve .dot").count() == 1

    # Review: answer (correct) the first; the probe retrains by itself (a second point on the curve).
    page.focus("#wb-grid .card")
    first = queue[0]
    page.keyboard.press("y" if pages[first] == "yes" else "n")
    page.wait_for_function("document.querySelectorAll('#curve .dot').length === 2")
    assert "20 labels" in page.inner_text("#f1-note")

    # Keep items in a set: name it, press A on a card.
    page.fill("#set-name", "blank pages")
    page.focus("#wb-grid .card")
    page.keyboard.press("a")
    page.wait_for_function("document.getElementById('set-msg').textContent.includes('Added')")
    page.wait_for_selector("#sets-list .set[data-name='blank pages']")
    assert "1 item" in page.inner_text("#sets-list .set")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "workbench-review.png"))
    page.screenshot(path=str(ARTIFACTS / "workbench-trained.png"), full_page=True)

    # The search results, unlocked: tick two hits and add them to the set.
    page.goto(server + "/?q=page")
    page.wait_for_selector("#pick-bar .pick, #results .hit .pick")
    assert page.input_value("#pick-set") == "blank pages"
    hits = page.eval_on_selector_all("#results .hit", "els => els.map(e => e.dataset.id)")
    page.check("#results .hit:nth-child(1) .pick")
    page.check("#results .hit:nth-child(2) .pick")
    page.click("#pick-add")
    page.wait_for_function("document.querySelector('.pick-status').textContent.includes('added')")
    page.screenshot(path=str(ARTIFACTS / "workbench-results-picks.png"))

    # Re-open the workbench: the question, answers, curve and sets are all still there.
    page.goto(server + "/workbench")
    page.wait_for_selector("#f1:not([hidden])")
    assert page.input_value("#question") == Q and "question=" in page.url
    assert "1 skipped" in page.inner_text("#counts")
    assert page.locator("#curve .dot").count() == 2
    members = {first, *hits[:2]}
    assert f"{len(members)} item" in page.inner_text("#sets-list .set[data-name='blank pages']")

    # Show the set in the grid, then similar items; export it as CSV (with the query and model).
    page.click("#sets-list .set[data-name='blank pages'] .show-set")
    page.wait_for_function("document.getElementById('source-name').textContent.includes('set')")
    assert set(page.eval_on_selector_all("#wb-grid .card", "els => els.map(e => e.dataset.id)")) == members
    page.click("#sets-list .set[data-name='blank pages'] .similar-set")
    page.wait_for_function("document.getElementById('source-name').textContent.includes('similar')")
    similar = page.eval_on_selector_all("#wb-grid .card", "els => els.map(e => e.dataset.id)")
    assert similar and not set(similar) & members
    with page.expect_download() as download:
        page.click("#sets-list .set[data-name='blank pages'] a.export:text('CSV')")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert {r["id"] for r in rows} == members and all(r["model"] for r in rows)
    with page.expect_download() as download:
        page.click("#sets-list .set[data-name='blank pages'] a.export:text('IIIF Manifest')")
    assert json.loads(Path(download.value.path()).read_text())["type"] == "Manifest"

    # A hostile title is shown as text, never run.
    page.click("#src-browse")
    page.click("#next")
    page.wait_for_selector("#wb-grid .card[data-id='zz-hostile']")
    assert page.inner_text("#wb-grid .card[data-id='zz-hostile'] .title") == HOSTILE
    assert page.locator("#pwned").count() == 0

    # The item page: the probe's tag with the person's answer over it; correct another by the form.
    page.goto(server + "/item?id=" + first)
    tag = page.locator("#item-tags .tag[data-tag='is_this_a_blank_page']")
    assert "set by web" in tag.inner_text()
    other = next(i for i in pages if i not in order[:20] and i != first and i != "zz-hostile")
    page.goto(server + "/item?id=" + other)
    tag = page.locator("#item-tags .tag[data-tag='is_this_a_blank_page']")
    assert "% · by probe:is_this_a_blank_page" in tag.inner_text()  # the machine's value, its score and classifier
    tag.locator("input").fill(pages[other])
    tag.locator("button[type=submit]").click()
    page.wait_for_selector("#item-tags .tag.corrected[data-tag='is_this_a_blank_page']")
    assert page.inner_text("#item-tags .tag.corrected .tag-value") == pages[other]
    page.screenshot(path=str(ARTIFACTS / "workbench-item-tags.png"), full_page=True)

    # A new tab asks for the token again (sessionStorage is per tab), and shows the sets read-only.
    fresh = browser.new_context(bypass_csp=True).new_page()
    fresh.goto(server + "/workbench")
    fresh.wait_for_selector("#token-form:not([hidden])")
    assert fresh.locator("#sets-list .set").count() == 1 and fresh.locator("#wb-grid .ans").count() == 0

    # Review a duplicate group on the item page: zz-hostile is p00's image again.
    from vitrina.duplicates import find_duplicates

    find_duplicates(open_collection("book"), threshold=0.999)
    page.goto(server + "/item?id=p00.png")
    page.wait_for_selector("#duplicates .confirm-dup:visible")
    assert page.eval_on_selector_all("#duplicates li", "els => els.map(e => e.dataset.id)") == ["zz-hostile"]
    page.click("#duplicates .confirm-dup")
    page.wait_for_selector("#duplicates li.confirmed[data-id='zz-hostile']")
    assert page.locator("#item-tags .tag[data-tag='duplicate_of']").count() == 0  # bookkeeping, shown above
    assert "confirmed by web" in page.inner_text("#duplicates") and "keeps it" in page.inner_text("#duplicates")
    page.screenshot(path=str(ARTIFACTS / "workbench-duplicates-confirmed.png"), full_page=True)
    page.click("#duplicates li[data-id='zz-hostile'] .not-dup")
    page.wait_for_selector("#duplicates .removed-item")
    assert page.locator("#duplicates li").count() == 0 and "Not the same image" in page.inner_text("#duplicates")
    assert page.locator("#pwned").count() == 0
    page.screenshot(path=str(ARTIFACTS / "workbench-duplicates-not.png"), full_page=True)
    assert page.evaluate("fetch('/api/duplicates?id=p00.png').then(r => r.json())")["duplicates"] == []
    find_duplicates(open_collection("book"), threshold=0.999)  # a re-run: the person's verdict stands
    page.reload()
    page.wait_for_selector("#duplicates .removed-item")
    assert page.locator("#duplicates li").count() == 0

    # Correct a word read from the image: shown as corrected, found by keyword search.
    from vitrina.ocr import Word
    from vitrina.store import Store

    store = Store(open_collection("book").path, writer=True)
    store.save_words(store.rids_of(["p00.png"])["p00.png"], "f", "e@1", [Word("Kapitel", 14, 80, 50, 8, 0.9, "e"),
                     Word("Trondhjern", 14, 96, 70, 8, 0.55, "e")], (120, 160))  # fmt: skip
    store.close()
    page.goto(server + "/item?id=p00.png")
    page.click("#item-words .word[data-n='1']")
    page.fill("#word-text", "Trondhjem")
    page.screenshot(path=str(ARTIFACTS / "workbench-word-fix.png"), full_page=True)
    page.press("#word-text", "Enter")
    page.wait_for_selector("#item-words .word.corrected")
    assert page.inner_text("#item-words .word.corrected") == "Trondhjem"
    assert "read as “Trondhjern”" in page.get_attribute("#item-words .word.corrected", "title")
    found = page.evaluate("fetch('/api/search?keywords=trondhjem').then(r => r.json())")
    assert [h["id"] for h in found["hits"]] == ["p00.png"]

    # Sets on the workbench: take one item out, rename, save as a collection, delete (asked first).
    page.goto(server + "/workbench")
    one = "#sets-list .set[data-name='blank pages']"
    page.click(one + " .show-set")
    page.wait_for_selector("#wb-grid .card .remove")
    gone = page.get_attribute("#wb-grid .card:first-child", "data-id")
    page.click("#wb-grid .card:first-child .remove")
    page.wait_for_function("document.getElementById('set-msg').textContent.includes('out of')")
    left = members - {gone}
    assert f"{len(left)} item" in page.inner_text(one)
    page.wait_for_function(f"document.querySelectorAll('#wb-grid .card').length === {len(left)}")
    page.click(one + " .rename-set")
    page.fill(one + " .set-ask input", "blank leaves")
    page.press(one + " .set-ask input", "Enter")
    page.wait_for_selector("#sets-list .set[data-name='blank leaves']")
    page.wait_for_function("document.getElementById('source-name').textContent.includes('blank leaves')")
    assert page.input_value("#set-name") == "blank leaves"  # the current set follows its new name
    one = "#sets-list .set[data-name='blank leaves']"
    page.click(one + " .as-collection")
    page.fill(one + " .set-ask input", "blank-leaves")
    page.click(one + " .set-ask button:text('Save')")
    page.wait_for_function("document.getElementById('set-msg').textContent.includes('searchable now')")
    assert sorted(open_collection("blank-leaves").ids_where(["set=blank leaves"])) == sorted(left)
    page.click(one + " .delete-set")
    page.wait_for_selector(one + " .set-ask.danger:visible")
    assert "Delete the set “blank leaves”" in page.inner_text(one + " .set-ask")
    page.screenshot(path=str(ARTIFACTS / "workbench-set-delete.png"), full_page=True)
    page.click(one + " .set-ask .cancel")  # asked, not done: cancel keeps it
    assert page.locator(one).count() == 1 and page.locator(one + " .set-ask").is_hidden()
    page.click(one + " .delete-set")
    page.click(one + " .confirm-delete")
    page.wait_for_function("document.getElementById('set-msg').textContent.includes('Deleted')")
    assert (
        page.locator("#sets-list .set").count() == 0 and open_collection("book").ids_where(["set=blank leaves"]) == []
    )
    page.screenshot(path=str(ARTIFACTS / "workbench-set-deleted.png"))
    assert errors == [], errors


@pytest.fixture
def read_only_server(pages: dict[str, str]) -> Iterator[str]:
    yield from _serve("book", None)


def test_the_workbench_under_its_content_security_policy_and_read_only(read_only_server: str, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """No token on the server: a read-only notice, no write controls; the policy is enforced."""
    url = read_only_server
    page = browser.new_page()  # no CSP bypass
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    response = page.goto(url + "/workbench")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#wb-grid .card")
    assert "read-only" in page.inner_text("#read-only")
    assert page.locator("#token-form").count() == 0 and page.locator("#wb-grid .ans").count() == 0
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(url + "/workbench")
    phone.wait_for_selector("#wb-grid .card")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    phone.screenshot(path=str(ARTIFACTS / "workbench-phone.png"))
    phone.close()
    page.goto(url + "/item?id=p01.png")
    assert page.locator("#item-tags").count() == 1
    assert problems == []
    page.close()


ALICE = "alice-token-0123456789"


@pytest.fixture
def named_server(pages: dict[str, str]) -> Iterator[str]:
    from vitrina.service.identity import parse_tokens

    from .test_web import _serve as serve_web

    yield from serve_web("book", token=TOKEN, named_tokens=parse_tokens(f"alice:{ALICE}"))


def test_a_named_token_says_who_is_signed_in(named_server: str, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """With `serve --tokens`, the page says whose name what one writes is signed with; the single
    token says no name; locking forgets it."""
    page = browser.new_page(viewport={"width": 1280, "height": 700})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(named_server + "/workbench")
    page.wait_for_selector("#wb-grid .card")
    page.fill("#token", ALICE)
    page.press("#token", "Enter")
    page.wait_for_selector("#token-ok:not([hidden])")
    assert page.inner_text("#token-ok").startswith("● Unlocked for this tab as alice: you can label")
    page.screenshot(path=str(ARTIFACTS / "workbench-named.png"))
    page.reload()  # the tab remembers the token and the name
    page.wait_for_selector("#token-ok:not([hidden])")
    assert "as alice" in page.inner_text("#token-ok")
    page.click("#token-forget")
    assert page.is_visible("#token-form") and page.inner_text("#token-who") == ""
    page.fill("#token", TOKEN)  # the single token: no name
    page.press("#token", "Enter")
    page.wait_for_selector("#token-ok:not([hidden])")
    assert "Unlocked for this tab: you can label" in page.inner_text("#token-ok")
    assert problems == []
    page.close()
