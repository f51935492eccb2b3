"""Property-based requests generated from the OpenAPI schema: no input makes the server fail (5xx),
and every error keeps the documented envelope."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from vitrina import open_collection
from vitrina.service import create_app

pytestmark = pytest.mark.slow  # schemathesis generates requests against every route


@pytest.fixture
def api_schema(scans: Path, tiny_clip: str):  # type: ignore[no-untyped-def]
    open_collection("schema", create=True).index(str(scans), model=tiny_clip)
    app = create_app("schema")
    app.state.service.start()  # load the model (the ASGI transport does not run the lifespan)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_input_makes_the_server_fail(api_schema) -> None:  # type: ignore[no-untyped-def]
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/api/index",):
            continue  # starts background work; covered by test_service.py

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: {response.text[:300]}"
            )
            if response.status_code >= 400 and "application/json" in str(response.headers.get("content-type")):
                body = response.json()
                assert set(body) == {"error"} and {"code", "message", "request_id"} <= set(body["error"])

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 9, checked
