"""The search options are declared once (vitrina.options); every interface answers to it.

``drift()`` compares the declaration with each interface as it really is: the CLI's ``search``
command, ``Collection.search``, ``Query``, the service's ``SearchParams``, and the HTTP GET and
POST parameters in the OpenAPI schema. An option added to one of them and not the others (or
declared and not implemented) is reported."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.test_http import Handler, Hostile, hostile, server  # noqa: F401  (fixtures of test_service's)
from tests.test_service import coll_name  # noqa: F401  (a small indexed collection)
from vitrina import options
from vitrina.errors import QueryError
from vitrina.options import CLI, GET, POST, PYTHON, QUERY
from vitrina.query import Query

CLI_ONLY = {
    "collection",
    "batch_file",
    "as_json",
    "as_csv",
    "exact",
    "index_target",
    "no_daemon",
}  # how to print, not what to find


def _empty_app(tmp_path: Path) -> Any:
    from vitrina import open_collection
    from vitrina.service import create_app

    open_collection(tmp_path / "empty", create=True).close()
    return create_app(str(tmp_path / "empty"))


def _search_command() -> Any:
    from vitrina.cli import cli

    return cli.commands["search"]


def drift(openapi: dict[str, Any]) -> list[str]:
    """Every disagreement between the declaration and the interfaces."""
    problems: list[str] = []

    def compare(where: str, declared: dict[str, Any], actual: dict[str, Any]) -> None:
        for name in sorted(declared.keys() - actual.keys()):
            problems.append(f"{where}: {name} is declared but missing")
        for name in sorted(actual.keys() - declared.keys()):
            problems.append(f"{where}: {name} is not declared in vitrina.options")
        for name in sorted(declared.keys() & actual.keys()):
            if declared[name] is not None and declared[name] != actual[name]:
                problems.append(f"{where}: {name} is {actual[name]!r}, declared {declared[name]!r}")

    # Collection.search: its keywords and their defaults.
    from vitrina.collection import Collection

    signature = inspect.signature(Collection.search).parameters
    compare("Collection.search", {o.name: o.default_for(PYTHON) for o in options.for_interface(PYTHON)},
            {n: p.default for n, p in signature.items() if n != "self"})  # fmt: skip

    # Query: its fields (text and image terms both fill ``terms``) and their defaults.
    fields = {f.name: f.default for f in dataclasses.fields(Query)}
    declared_fields: dict[str, Any] = {}
    for o in options.for_interface(QUERY):
        declared_fields[o.query_field] = None if o.multiple else o.default_for(QUERY)
    compare("Query", declared_fields, fields)

    # The CLI's search command: its parameters, defaults, bounds and deprecated spellings.
    command = _search_command()
    params = {p.name: p for p in command.params if p.name not in CLI_ONLY and not p.name.startswith("_deprecated_")}
    compare("vitrina search", {o.cli_dest: None for o in options.for_interface(CLI)}, dict.fromkeys(params))
    for o in options.for_interface(CLI):
        p = params.get(o.cli_dest)
        if p is None or not o.cli_flags:
            continue
        if o.type is not bool and not o.multiple and not o.optional and p.default != o.default_for(CLI):
            problems.append(f"vitrina search: {o.cli_dest} defaults to {p.default!r}, declared {o.default_for(CLI)!r}")
        lo, hi = o.bounds_for(CLI)
        if (getattr(p.type, "min", None), getattr(p.type, "max", None)) != (lo, hi) and (lo, hi) != (None, None):
            problems.append(f"vitrina search: {o.cli_dest} bounds {p.type!r}, declared {(lo, hi)}")
        flags = {f for q in command.params for f in getattr(q, "opts", [])}
        for old in (d for d in o.deprecated if d.startswith("-")):
            if old not in flags:
                problems.append(f"vitrina search: the deprecated {old} is gone")

    # The service's SearchParams: every option of both HTTP routes, with the GET defaults.
    from vitrina.service.core import SearchParams

    both = [o for o in options.OPTIONS if {GET, POST} <= o.interfaces]
    compare("SearchParams", {o.http_name: None for o in both},
            {f.name: f.default for f in dataclasses.fields(SearchParams)})  # fmt: skip

    # The HTTP routes, as OpenAPI describes them: GET query parameters, POST form fields.
    route = openapi["paths"]["/api/search"]
    get = {p["name"]: p for p in route["get"]["parameters"]}
    ref = route["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    post = openapi["components"]["schemas"][ref]["properties"]
    for interface, actual in ((GET, get), (POST, post)):
        declared = {}
        for o in options.for_interface(interface):
            declared[o.http_name] = None
            declared.update(dict.fromkeys(d for d in o.deprecated if not d.startswith("-")))
        compare(f"{interface.upper()} /api/search", declared, dict.fromkeys(actual))
        for o in options.for_interface(interface):
            schema = actual.get(o.http_name, {}).get("schema", actual.get(o.http_name, {}))
            text = str(schema)
            lo, hi = o.bounds_for(interface)
            if lo is not None and f"'minimum': {lo}" not in text:
                problems.append(f"{interface.upper()} /api/search: {o.http_name} has no minimum {lo}")
            if hi is not None and f"'maximum': {hi}" not in text:
                problems.append(f"{interface.upper()} /api/search: {o.http_name} has no maximum {hi}")
            for old in (d for d in o.deprecated if not d.startswith("-")):
                if old in actual and not (actual[old].get("deprecated") or "Deprecated" in str(actual[old])):
                    problems.append(f"{interface.upper()} /api/search: {old} is not marked deprecated")
    return problems


def test_every_interface_answers_to_the_declaration(tmp_path: Path) -> None:
    assert drift(_empty_app(tmp_path).openapi()) == []


def test_an_option_added_in_one_place_only_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    openapi = _empty_app(tmp_path).openapi()
    fake = options.Option("sharpness", float, None, "A new option declared and implemented nowhere.", optional=True)
    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS, fake))
    found = drift(openapi)
    for where in (
        "Collection.search",
        "Query",
        "vitrina search",
        "SearchParams",
        "GET /api/search",
        "POST /api/search",
    ):
        assert f"{where}: sharpness is declared but missing" in found, found
    monkeypatch.undo()
    openapi["paths"]["/api/search"]["get"]["parameters"].append({"name": "sharpness", "in": "query"})
    assert drift(openapi) == ["GET /api/search: sharpness is not declared in vitrina.options"]


def test_query_checks_the_declared_bounds() -> None:
    with pytest.raises(QueryError, match="alpha must be between 0 .text only. and 1 .image only."):
        Query.build("ship", alpha=1.5)
    with pytest.raises(QueryError, match="keyword_weight must be between 0"):
        Query.build("ship", keyword_weight=-0.1)
    with pytest.raises(QueryError, match="Unknown fusion 'max'"):
        Query.build("ship", fusion="max")
    with pytest.raises(QueryError, match="limit must be at least 1"):
        Query.build("ship", limit=0)
    with pytest.raises(QueryError, match="offset must be at least 0"):
        Query.build("ship", offset=-1)
    assert Query.build("ship", alpha=1.0, keyword_weight=0.0, fusion="rrf").alpha == 1.0


def test_item_and_vector_terms_in_query_build() -> None:
    import numpy as np

    q = Query.build("ship", item=["-1:a/b"], vectors=[("upload", np.ones(4))])
    assert [(t.kind, t.value, t.weight) for t in q.terms] == [
        ("text", "ship", 1.0),
        ("item", "a/b", -1.0),
        ("vector", "upload", 1.0),
    ]
    with pytest.raises(QueryError, match="Unknown term kind"):
        Query(terms=(Query.build("x").terms[0].__class__("x", 1.0, "sound"),))


def test_cli_text_weight_still_works_and_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitrina import open_collection
    from vitrina.cli import cli
    from vitrina.collection import Collection
    from vitrina.query import Hits

    open_collection(tmp_path / "c", create=True).close()
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(Collection, "search", lambda self, *a, **kw: seen.append(kw) or Hits())
    new = CliRunner().invoke(cli, ["search", str(tmp_path / "c"), "whale", "--keyword-weight", "0.3"])
    old = CliRunner().invoke(cli, ["search", str(tmp_path / "c"), "whale", "--text-weight", "0.3"])
    assert new.exit_code == 0 and old.exit_code == 0, old.output
    assert seen[0]["keyword_weight"] == seen[1]["keyword_weight"] == 0.3
    assert "deprecated" not in new.output and "--text-weight is deprecated; use --keyword-weight" in old.output
    both = CliRunner().invoke(
        cli, ["search", str(tmp_path / "c"), "w", "--text-weight", "0.9", "--keyword-weight", "0.2"]
    )
    assert both.exit_code == 0 and seen[2]["keyword_weight"] == 0.2  # the new spelling wins
    bad = CliRunner().invoke(cli, ["search", str(tmp_path / "c"), "w", "--text-weight", "2"])
    assert bad.exit_code == 2  # the same bounds as --keyword-weight
    assert "--text-weight" not in CliRunner().invoke(cli, ["search", "-h"]).output  # hidden


def test_http_text_weight_still_works_and_is_marked_deprecated(coll_name: str) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from vitrina.service import create_app

    with TestClient(create_app(coll_name)) as client:
        base = [("q", "map"), ("keywords", "Dated")]
        new = client.get("/api/search", params=[*base, ("keyword_weight", "0.7")])
        old = client.get("/api/search", params=[*base, ("text_weight", "0.7")])
        assert new.status_code == old.status_code == 200, old.text
        assert [h["id"] for h in new.json()["hits"]] == [h["id"] for h in old.json()["hits"]]
        assert [h["score"] for h in new.json()["hits"]] != [
            h["score"] for h in client.get("/api/search", params=base).json()["hits"]
        ]  # the weight was used
        assert "deprecation" not in new.headers and old.headers["deprecation"] == "true"
        assert "text_weight is deprecated" in old.headers["warning"]
        posted = client.post("/api/search", data={"q": "map", "keywords": "Dated", "text_weight": "0.7"})
        assert posted.status_code == 200 and posted.headers["deprecation"] == "true"
        assert [h["id"] for h in posted.json()["hits"]] == [h["id"] for h in new.json()["hits"]]
        assert client.get("/api/search", params=[*base, ("text_weight", "1.5")]).status_code == 422
        schema = client.get("/openapi.json").json()
        get = {p["name"]: p for p in schema["paths"]["/api/search"]["get"]["parameters"]}
        assert get["text_weight"]["deprecated"] is True and not get["keyword_weight"].get("deprecated")
        # The web page reads the old name from shared addresses and writes the new one.
        page = client.get("/", params=[("q", "map"), ("kw", "Dated"), ("text_weight", "0.7")])
        assert page.status_code == 200 and "text_weight" not in page.text


def test_http_item_terms_are_resolved_by_the_library(coll_name: str) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from vitrina.service import create_app

    with TestClient(create_app(coll_name), raise_server_exceptions=False) as client:
        missing = client.get("/api/search", params=[("q", "map"), ("item", "no/such")])
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "item_not_found"
        like = client.get("/api/search", params=[("item", "dated/1")])
        assert like.status_code == 200 and "dated/1" not in [h["id"] for h in like.json()["hits"]]
