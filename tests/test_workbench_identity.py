"""Named write tokens (issue 29): the server, not the client, says who wrote; the single token
keeps working; and the new workbench routes (rename, a set as a collection, duplicate verdicts)
over real HTTP handling. Pages embedded with the offline ``mini`` model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vitrina import open_collection
from vitrina.duplicates import find_duplicates
from vitrina.errors import ConfigError
from vitrina.service import create_app
from vitrina.service.identity import parse_tokens

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


def test_named_tokens_are_parsed_and_checked(tmp_path: Path) -> None:
    assert parse_tokens(f"alice:{ALICE}, bob:{BOB}") == {ALICE: "alice", BOB: "bob"}
    (tmp_path / "tokens").write_text(f"# people\nalice:{ALICE}\n\nbob:{BOB}  # the intern\n", encoding="utf-8")
    assert parse_tokens(f"@{tmp_path / 'tokens'}") == {ALICE: "alice", BOB: "bob"}
    assert parse_tokens(None) == {} and parse_tokens("  ") == {}
    for bad, message in ((f"alice{ALICE}", "no ':'"), ("alice:short", "at least 16"), (f"a:{ALICE},b:{ALICE}", "same token"),
                         (f"\x07x:{ALICE}", "control"), ("@/nonexistent/tokens", "Cannot read")):  # fmt: skip
        with pytest.raises((ConfigError, Exception), match=message):
            parse_tokens(bad)


@pytest.mark.slow  # the mini model loads
def test_who_comes_from_a_named_token_and_the_new_routes(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for n in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3)).astype(np.uint8)).save(folder / f"p{n}.png")
    (folder / "copy.png").write_bytes((folder / "p0.png").read_bytes())
    coll = open_collection(tmp_path / "wb", create=True)
    coll.index(str(folder), model="mini")
    find_duplicates(coll, threshold=0.999)
    app = create_app(tmp_path / "wb", token="shared-s3cret", named_tokens=parse_tokens(f"alice:{ALICE},bob:{BOB}"))
    with TestClient(app, raise_server_exceptions=False) as client:

        def post(path: str, body: dict, token: str) -> dict:  # type: ignore[type-arg]
            r = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        post("/api/sets/mine/items", {"ids": ["p1.png"], "who": "mallory"}, ALICE)
        assert client.get("/api/sets/mine").json()["members"][0]["added_by"] == "alice"  # not what the body said
        post("/api/sets/theirs/items", {"ids": ["p2.png"], "who": "carol"}, "shared-s3cret")
        assert client.get("/api/sets/theirs").json()["created_by"] == "carol"  # the single token: as before
        r = client.post(
            "/api/sets/x/items", json={"ids": ["p1.png"]}, headers={"Authorization": "Bearer alice-token-wrong0000"}
        )
        assert r.status_code == 403
        # Rename, then export as a collection beside the served one (a name, never a path).
        assert post("/api/sets/mine/rename", {"to": "kept"}, BOB)["set"] == "kept"
        assert [s["name"] for s in client.get("/api/sets").json()] == ["kept", "theirs"]
        out = post("/api/sets/kept/collection", {"collection": "kept-coll"}, BOB)
        assert out["items"] == 1 and (tmp_path / "kept-coll").is_dir()
        assert open_collection(tmp_path / "kept-coll").ids_where(["set=kept"]) == ["p1.png"]
        r = client.post(
            "/api/sets/kept/collection", json={"collection": "../escape"}, headers={"Authorization": f"Bearer {BOB}"}
        )
        assert r.status_code == 422
        r = client.post(
            "/api/sets/kept/collection", json={"collection": "kept-coll"}, headers={"Authorization": f"Bearer {BOB}"}
        )
        assert r.status_code == 400 and "not empty" in r.json()["error"]["message"]
        # Duplicate verdicts: read open, written with a token, recorded as the token's person.
        shown = client.get("/api/duplicates/review", params={"id": "p0.png"}).json()
        assert [m["id"] for m in shown["members"]] == ["copy.png"]
        post("/api/duplicates/review", {"id": "p0.png", "verdict": "different", "ids": ["copy.png"]}, BOB)
        shown = client.get("/api/duplicates/review", params={"id": "p0.png"}).json()
        assert shown["members"] == [] and shown["removed"] == [{"id": "copy.png", "who": "bob"}]
        assert client.get("/api/duplicates", params={"id": "p0.png"}).json()["duplicates"] == []
        assert client.post("/api/duplicates/review", json={"id": "p0.png", "verdict": "same"}).status_code == 401
