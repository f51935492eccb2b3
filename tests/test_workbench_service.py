"""The workbench's HTTP routes (issue 29): every write needs the token and a JSON body; names
and text are bounded; the loop runs end to end over the API. Pages embedded with the offline
``mini`` model."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.test_workbench import blank_and_printed
from vitrina import open_collection
from vitrina.service import create_app

Q = "Is this a blank page?"
TOKEN = {"Authorization": "Bearer s3cret"}
pytestmark = pytest.mark.slow  # the mini model loads for each test


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "pages"
    kinds = blank_and_printed(folder, 24, 48, seed=2, white=235)
    coll = open_collection("wb", create=True)
    coll.index(str(folder), model="mini")
    with TestClient(create_app("wb", token="s3cret"), raise_server_exceptions=False) as client:
        yield client, kinds


def _error(r, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_every_write_needs_the_token_and_a_json_body(served) -> None:  # type: ignore[no-untyped-def]
    client, kinds = served
    some = sorted(kinds)[:2]
    writes = [("/api/sets/picked/items", {"ids": some}), ("/api/sets/picked/remove", {"ids": some}),
              ("/api/labels", {"question": Q, "ids": some, "answer": "yes"}), ("/api/train", {"question": Q}),
              ("/api/corrections", {"tag": "t", "id": some[0], "value": "x"})]  # fmt: skip
    for url, body in writes:
        _error(client.post(url, json=body), 401, "unauthorized")
        _error(client.post(url, json=body, headers={"X-Vitrina-Token": "wrong"}), 403, "forbidden")
        # A cross-site form post (urlencoded, or text/plain) is refused even with the token.
        _error(client.post(url, data={"ids": some[0]}, headers=TOKEN), 415, "unsupported_media_type")
        _error(
            client.post(url, content=b'{"ids": []}', headers={**TOKEN, "content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        )
    for url in ("/api/labels?question=x", "/api/review?question=x"):
        _error(client.get(url), 401, "unauthorized")
    with TestClient(create_app("wb"), raise_server_exceptions=False) as read_only:
        _error(
            read_only.post("/api/labels", json={"question": Q, "ids": some, "answer": "yes"}, headers=TOKEN),
            403,
            "writes_disabled",
        )
    assert client.get("/api/sets").json() == []  # nothing was written


def test_untrusted_text_is_bounded(served) -> None:  # type: ignore[no-untyped-def]
    client, kinds = served
    some = sorted(kinds)[0]
    _error(client.post("/api/sets/<b>x/items", json={"ids": [some]}, headers=TOKEN), 400, "invalid_query")
    _error(client.post(f"/api/sets/{'x' * 81}/items", json={"ids": [some]}, headers=TOKEN), 400, "invalid_query")
    _error(
        client.post("/api/labels", json={"question": "q" * 201, "ids": [some], "answer": "yes"}, headers=TOKEN),
        422,
        "invalid_parameter",
    )
    _error(
        client.post("/api/labels", json={"question": Q, "ids": [some], "answer": "maybe"}, headers=TOKEN),
        422,
        "invalid_parameter",
    )
    _error(
        client.post("/api/labels", json={"question": "a\u0000b", "ids": [some], "answer": "yes"}, headers=TOKEN),
        400,
        "invalid_query",
    )
    _error(
        client.post(
            "/api/labels", json={"question": Q, "ids": [some], "answer": "yes", "who": "w" * 65}, headers=TOKEN
        ),
        422,
        "invalid_parameter",
    )
    _error(client.get("/api/sets/none-such"), 400, "invalid_query")


def test_the_loop_over_the_api(served) -> None:  # type: ignore[no-untyped-def]
    client, kinds = served
    ids = sorted(kinds)
    for i in ids[:8]:
        r = client.post(
            "/api/labels", json={"question": Q, "ids": [i], "answer": kinds[i], "who": "ana"}, headers=TOKEN
        )
        assert r.status_code == 200, r.text
    trained = client.post("/api/train", json={"question": Q}, headers=TOKEN)
    assert trained.status_code == 200, trained.text
    assert trained.json()["tag"] == "is_this_a_blank_page" and trained.json()["trained_on"] == 8
    queue = client.get("/api/review", params={"question": Q, "limit": 5}, headers=TOKEN).json()
    assert len(queue) == 5 and not {q["id"] for q in queue} & set(ids[:8])
    state = client.get("/api/labels", params={"question": Q}, headers=TOKEN).json()
    assert state["counts"]["yes"] + state["counts"]["no"] == 8 and len(state["curve"]) == 1
    added = client.post(
        "/api/sets/blank pages/items",
        json={"ids": [i for i in ids if kinds[i] == "yes"][:4], "query": {"text": "empty"}},
        headers=TOKEN,
    )
    assert added.status_code == 200 and added.json()["items"] == 4, added.text
    hits = client.get("/api/search", params={"q": "page", "where": "set=blank pages", "limit": 20}).json()["hits"]
    assert len(hits) == 4
    assert [s["name"] for s in client.get("/api/sets").json()] == ["blank pages"]
    exported = client.get("/api/sets/blank pages/export", params={"format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert 'filename="blank_pages.csv.csv"' in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 4 and all(r["model"] for r in rows)
    similar = client.get("/api/sets/blank pages/similar", params={"limit": 3})
    assert similar.status_code == 200 and len(similar.json()) == 3
    fixed = client.post(
        "/api/corrections", json={"tag": "is_this_a_blank_page", "id": ids[20], "value": "yes"}, headers=TOKEN
    )
    assert fixed.status_code == 200, fixed.text
    gone = client.post("/api/sets/blank pages/remove", json={}, headers=TOKEN)
    assert gone.status_code == 200 and gone.json()["deleted"] and client.get("/api/sets").json() == []
